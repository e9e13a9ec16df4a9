//! Periodic upkeep of the stream: lag metrics and safe trimming.
//!
//! The stream is trimmed up to the oldest entry the group still needs (the
//! oldest pending one, or the last delivered one), never beyond, so no
//! unprocessed entry is ever dropped. Lag comes from `XINFO GROUPS` (Redis 7).

use community_shared::keys;
use redis::aio::ConnectionManager;
use redis::streams::StreamInfoGroupsReply;

/// Orders stream ids (`ms-seq`) numerically.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The id below which every entry is acked by every group: min(oldest pending, last delivered).
pub fn safe_trim_point(last_delivered: &[&str], oldest_pending: &[&str]) -> Option<String> {
    last_delivered
        .iter()
        .chain(oldest_pending.iter())
        .filter_map(|id| parse_id(id).map(|p| (p, *id)))
        .min_by_key(|(p, _)| *p)
        .filter(|(p, _)| *p != (0, 0))
        .map(|(_, id)| id.to_string())
}

pub async fn run(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let info: StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys::STREAM)
        .query_async(conn)
        .await?;
    let mut delivered = Vec::new();
    let mut pending_heads = Vec::new();
    for g in &info.groups {
        if g.name == keys::CONSUMER_GROUP {
            if let Some(lag) = g.lag {
                metrics::gauge!("projector_consumer_group_lag_events").set(lag as f64);
            }
            metrics::gauge!("projector_consumer_group_pending_events").set(g.pending as f64);
        }
        delivered.push(g.last_delivered_id.clone());
        // XPENDING summary: [count, smallest id, greatest id, consumers].
        let summary: (usize, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
            .arg(keys::STREAM)
            .arg(&g.name)
            .query_async(conn)
            .await?;
        if let Some(oldest) = summary.1 {
            pending_heads.push(oldest);
        }
    }
    let d: Vec<&str> = delivered.iter().map(String::as_str).collect();
    let p: Vec<&str> = pending_heads.iter().map(String::as_str).collect();
    if let Some(min_id) = safe_trim_point(&d, &p) {
        // Approximate trimming (~) only ever keeps more than asked.
        let trimmed: u64 = redis::cmd("XTRIM")
            .arg(keys::STREAM)
            .arg("MINID")
            .arg("~")
            .arg(&min_id)
            .query_async(conn)
            .await?;
        if trimmed > 0 {
            tracing::debug!(trimmed, %min_id, "stream trimmed");
        }
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(keys::STREAM)
        .query_async(conn)
        .await?;
    metrics::gauge!("projector_stream_length_entries").set(len as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_below_what_is_still_needed() {
        assert_eq!(safe_trim_point(&["5-0"], &["3-1"]), Some("3-1".into()));
        assert_eq!(safe_trim_point(&["5-0"], &[]), Some("5-0".into()));
        assert_eq!(
            safe_trim_point(&["10-0", "9-5"], &["12-0"]),
            Some("9-5".into())
        );
        // A group that has delivered nothing yet keeps everything.
        assert_eq!(safe_trim_point(&["0-0"], &[]), None);
        assert_eq!(safe_trim_point(&[], &[]), None);
        assert_eq!(
            safe_trim_point(&["100-0"], &["99-0", "bogus"]),
            Some("99-0".into())
        );
    }
}
