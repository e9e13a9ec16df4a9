//! Reads of the Redis read model: feed pages, single views, like states and
//! read-your-writes checks. Two round trips per page at most: the feed range,
//! then one pipeline with the views (MGET) and the reader's likes (HMGET).

use std::time::{Duration, Instant};

use community_shared::consistency::ConsistencyToken;
use community_shared::keys;
use community_shared::redis_span;
use community_shared::views::{decode_stored, decode_stored_bytes, write_personalised};
use redis::aio::ConnectionManager;
use tracing::Instrument;
use uuid::Uuid;

use crate::cursor;

/// A page of a feed, rendered as JSON.
pub struct Page {
    pub json: Vec<u8>,
    pub items: usize,
}

/// The JSON part of a stored view; `None` for a malformed value or a tombstone.
fn stored_json(raw: &[u8]) -> Option<&[u8]> {
    decode_stored_bytes(raw)
        .map(|(_, json)| json)
        .filter(|j| !j.is_empty())
}

/// The readiness/consistency outcome of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Consistent,
    Stale,
}

/// Runs a pipeline of a views command, plus the reader's likes command when
/// `with_likes` (anonymous readers send one command and get `L::default()`).
async fn views_and_likes<V, L>(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
    with_likes: bool,
    views_op: &str,
    likes_op: &str,
) -> redis::RedisResult<(V, L)>
where
    V: redis::FromRedisValue,
    L: redis::FromRedisValue + Default,
{
    if with_likes {
        let op = format!("PIPELINE {views_op} {likes_op}");
        pipe.query_async(conn).instrument(redis_span!(op)).await
    } else {
        let (views,): (V,) = pipe
            .query_async(conn)
            .instrument(redis_span!(views_op))
            .await?;
        Ok((views, L::default()))
    }
}

#[derive(Clone)]
pub struct ReadModel {
    conn: ConnectionManager,
}

fn liked(raw: Option<&str>) -> bool {
    raw.and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|v| v > 0)
}

impl ReadModel {
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn }
    }

    /// One page of `feed_key`, newest first, strictly below `before` (a cursor score).
    pub async fn page(
        &self,
        feed_key: &str,
        limit: usize,
        before: Option<i64>,
        reader: Option<Uuid>,
    ) -> redis::RedisResult<Page> {
        let mut conn = self.conn.clone();
        let max = before.map_or_else(|| "+inf".to_string(), |s| format!("({s}"));
        // One more than asked, to know whether another page exists.
        let ids: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(feed_key)
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .instrument(redis_span!("ZRANGE"))
            .await?;
        let has_more = ids.len() > limit;
        let ids = &ids[..ids.len().min(limit)];
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"items\":[");
        let mut items = 0;
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            let view_keys: Vec<String> =
                ids.iter().map(|(id, _)| keys::post_view_str(id)).collect();
            pipe.cmd("MGET").arg(&view_keys);
            if let Some(user) = reader {
                pipe.cmd("HMGET")
                    .arg(keys::user_likes(user))
                    .arg(ids.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());
            }
            // Views stay bytes: they were written as JSON by the projector and
            // go out as they are, without a UTF-8 pass or a copy into a String.
            let (views, likes): (Vec<Option<Vec<u8>>>, Vec<Option<String>>) =
                views_and_likes(&mut conn, &pipe, reader.is_some(), "MGET", "HMGET").await?;
            out.reserve(
                views
                    .iter()
                    .map(|v| v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
                    + 64,
            );
            for (i, raw) in views.iter().enumerate() {
                // A missing view or a tombstone: the post is gone; skip the stale feed entry.
                let Some(json) = raw.as_deref().and_then(stored_json) else {
                    continue;
                };
                if items > 0 {
                    out.push(b',');
                }
                write_personalised(
                    json,
                    liked(likes.get(i).and_then(|v| v.as_deref())),
                    &mut out,
                );
                items += 1;
            }
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        match ids.last() {
            Some((_, score)) if has_more => {
                out.push(b'"');
                out.extend_from_slice(cursor::encode(*score as i64).as_bytes());
                out.push(b'"');
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        Ok(Page { json: out, items })
    }

    /// One post view, or `None` when absent or deleted.
    pub async fn post(
        &self,
        post: Uuid,
        reader: Option<Uuid>,
    ) -> redis::RedisResult<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        let id = post.to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(keys::post_view(post));
        if let Some(user) = reader {
            pipe.cmd("HGET").arg(keys::user_likes(user)).arg(&id);
        }
        let (raw, like): (Option<Vec<u8>>, Option<String>) =
            views_and_likes(&mut conn, &pipe, reader.is_some(), "GET", "HGET").await?;
        let Some(json) = raw.as_deref().and_then(stored_json) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(json.len() + 8);
        write_personalised(json, liked(like.as_deref()), &mut out);
        Ok(Some(out))
    }

    /// Whether the read model already holds the write a token names.
    pub async fn holds(&self, token: &ConsistencyToken) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        Ok(match token {
            ConsistencyToken::Post { post_id, version } => {
                let raw: Option<String> = redis::cmd("GET")
                    .arg(keys::post_view(*post_id))
                    .query_async(&mut conn)
                    .await?;
                raw.as_deref()
                    .and_then(decode_stored)
                    .is_some_and(|(v, _)| v.post >= *version)
            }
            ConsistencyToken::PostDeleted { post_id, version } => {
                let raw: Option<String> = redis::cmd("GET")
                    .arg(keys::post_view(*post_id))
                    .query_async(&mut conn)
                    .await?;
                match raw.as_deref().and_then(decode_stored) {
                    None => true,
                    Some((v, _)) => v.post >= *version,
                }
            }
            ConsistencyToken::Profile { user_id, version } => {
                let raw: Option<i64> = redis::cmd("GET")
                    .arg(keys::profile_version(*user_id))
                    .query_async(&mut conn)
                    .await?;
                raw.is_some_and(|v| v >= *version)
            }
        })
    }

    /// Waits, polling with a short backoff, until the read model holds `token` or `bound` passes.
    pub async fn wait_for(
        &self,
        token: &ConsistencyToken,
        bound: Duration,
    ) -> redis::RedisResult<Freshness> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(1);
        let outcome = loop {
            if self.holds(token).await? {
                break Freshness::Consistent;
            }
            let left = bound.saturating_sub(started.elapsed());
            if left.is_zero() {
                break Freshness::Stale;
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        };
        let label = match outcome {
            Freshness::Consistent => "consistent",
            Freshness::Stale => "stale",
        };
        metrics::counter!("query_consistency_waits_total", "outcome" => label).increment(1);
        metrics::histogram!("query_consistency_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }
}
