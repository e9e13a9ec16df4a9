//! The Redis client's own ceiling: the feed page's two round trips (the same
//! ZRANGE and MGET query-api sends) from `connections` tasks sharing one
//! multiplexed connection, without HTTP. It separates what the client library
//! costs from what our service adds on top.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// Feed pages/s of the bare client.
pub async fn pages_per_s(conn: MultiplexedConnection, connections: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (mut conn, done, stop) = (conn.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<(String, f64)> = match redis::cmd("ZRANGE")
                        .arg("sparkle:feed:global")
                        .arg("+inf")
                        .arg("-inf")
                        .arg("BYSCORE")
                        .arg("REV")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(21)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await
                    {
                        Ok(ids) => ids,
                        Err(_) => return,
                    };
                    let keys: Vec<String> = ids
                        .iter()
                        .take(20)
                        .map(|(id, _)| format!("sparkle:post:{{{id}}}"))
                        .collect();
                    let views: redis::RedisResult<Vec<Option<Vec<u8>>>> =
                        redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
                    if views.is_err() {
                        return;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let pages = done.load(Ordering::Relaxed) as f64;
    for t in tasks {
        let _ = t.await;
    }
    pages / elapsed
}
