//! Rebuilding the whole read model from Postgres (`projector rebuild`, or by
//! itself when the read model is missing).
//!
//! Overwrites in place, in keyset-paged batches, through the same
//! version-checked writes as the consumer: the feed stays served while it
//! runs, a concurrent consumer is never undone, and a newer state written
//! meanwhile is never replaced by the rebuild's older snapshot.

use std::collections::BTreeMap;
use std::time::Instant;

use community_shared::keys;
use redis::aio::ConnectionManager;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::consumer::ProjectError;
use crate::model::{self, Writer};

/// Held (with a TTL) by the replica that rebuilds, so replicas do not all rebuild at once.
pub const LOCK_KEY: &str = "sparkle:meta:rebuild-lock";

pub async fn run(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    writer: &Writer,
    batch_size: i64,
) -> Result<(), ProjectError> {
    let started = Instant::now();
    writer.load_scripts(redis).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(pool)
        .await?;
    metrics::gauge!("projector_rebuild_in_progress").set(1.0);
    metrics::gauge!("projector_rebuild_progress_ratio").set(0.0);
    tracing::info!(total, "rebuild: started");

    // Posts (live → view + feeds, deleted → tombstone), oldest first.
    let sql = format!(
        "SELECT {} FROM posts p JOIN users u ON u.id = p.author_id
          WHERE p.seq > $1 ORDER BY p.seq LIMIT $2",
        model::POST_COLUMNS
    );
    let read_page = |after: i64| {
        let sql = sql.clone();
        async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(batch_size)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(model::post_from_row)
                .collect::<Result<Vec<_>, _>>()
        }
    };
    // Reading page N+1 from Postgres overlaps writing page N to Redis.
    let mut done = 0i64;
    let mut next = read_page(0).await?;
    while let Some(last) = next.last() {
        let after = last.seq;
        let posts = std::mem::take(&mut next);
        let mut batch = writer.batch();
        writer.posts(&mut batch, &posts);
        let (written, fetched) = tokio::join!(writer.run(redis, batch), read_page(after));
        written?;
        next = fetched?;
        done += posts.len() as i64;
        metrics::counter!("projector_rebuild_posts_total").increment(posts.len() as u64);
        if total > 0 {
            metrics::gauge!("projector_rebuild_progress_ratio").set(done as f64 / total as f64);
        }
    }

    // Likes, grouped per user (one hash per user).
    let mut after: (Uuid, Uuid) = (Uuid::nil(), Uuid::nil());
    loop {
        let rows = sqlx::query(
            "SELECT pl.user_id, pl.post_id, p.version
               FROM post_likes pl JOIN posts p ON p.id = pl.post_id
              WHERE (pl.user_id, pl.post_id) > ($1, $2)
              ORDER BY pl.user_id, pl.post_id LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(batch_size * 5)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut likes: BTreeMap<Uuid, Vec<(Uuid, bool, i64)>> = BTreeMap::new();
        for r in &rows {
            let (user, post, version): (Uuid, Uuid, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            likes.entry(user).or_default().push((post, true, version));
            after = (user, post);
        }
        let mut batch = writer.batch();
        writer.likes(&mut batch, &likes);
        writer.run(redis, batch).await?;
    }

    // Profile versions, so read-your-writes tokens of renames are satisfied.
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT id, version FROM users WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(batch_size)
                .fetch_all(pool)
                .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        let mut batch = writer.batch();
        for (user, version) in &rows {
            writer.profile_version(&mut batch, *user, *version);
        }
        writer.run(redis, batch).await?;
    }

    let mut batch = writer.batch();
    let mut marker = redis::cmd("SET");
    marker
        .arg(keys::READ_MODEL_MARKER)
        .arg(chrono::Utc::now().to_rfc3339());
    writer.then(&mut batch, marker);
    writer.run(redis, batch).await?;

    let secs = started.elapsed().as_secs_f64();
    metrics::gauge!("projector_rebuild_in_progress").set(0.0);
    metrics::gauge!("projector_rebuild_progress_ratio").set(1.0);
    tracing::info!(
        posts = done,
        seconds = secs,
        posts_per_second = if secs > 0.0 { done as f64 / secs } else { 0.0 },
        "rebuild: done"
    );
    Ok(())
}
