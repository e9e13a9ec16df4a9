//! The whole write→stream→view path: real Postgres and Redis, the three real binaries.

mod consistency;
mod crash;
mod paging;
mod poison;
mod rebuild;
mod redis_loss;
mod replicas;
mod tracing;
mod views;

use std::collections::HashSet;

use community_testkit::Stack;

/// Asserts the global feed holds exactly `expected` ids, each once.
pub async fn assert_feed_exactly(stack: &Stack, expected: &HashSet<String>) {
    let items = stack.all_items("/feed", 100).await;
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates in the feed");
    assert_eq!(&unique, expected);
}

/// Waits until the global feed holds `n` items.
pub async fn until_feed_len(stack: &Stack, n: usize) {
    community_testkit::eventually(
        &format!("{n} posts in the feed"),
        std::time::Duration::from_secs(30),
        || async { (stack.all_items("/feed", 100).await.len() == n).then_some(()) },
    )
    .await
}

/// Waits until the consumer group has nothing pending: every delivered entry
/// acked. A batch's ack rides with the projector's next read, so it can come
/// a moment after the views and dead letters a test has just seen.
pub async fn until_nothing_pending(conn: &redis::aio::MultiplexedConnection, within_secs: u64) {
    community_testkit::eventually(
        "nothing left pending",
        std::time::Duration::from_secs(within_secs),
        || {
            let mut conn = conn.clone();
            async move {
                let p: (usize, Option<String>, Option<String>, redis::Value) =
                    redis::cmd("XPENDING")
                        .arg(community_shared::keys::STREAM)
                        .arg(community_shared::keys::CONSUMER_GROUP)
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                (p.0 == 0).then_some(())
            }
        },
    )
    .await
}
