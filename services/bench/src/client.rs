//! The Redis clients' own ceilings: the feed page's two round trips (the
//! commands query-api sends) from `connections` tasks sharing one
//! connection, without HTTP. They separate what a client library costs from
//! what the service adds on top: redis-rs (which the other services use) and
//! query-api's read model on its lean client.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use community_shared::keys;
use query_api::read_model::{Backend, PageOf, ReadModel};
use redis::aio::MultiplexedConnection;

/// Pages/s of `page` (true when a page came back) run by `connections` tasks for `secs`.
async fn pages_per_s<F, Fut>(connections: usize, secs: u64, page: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (page, done, stop) = (page.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && page().await {
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

type Views = Vec<Option<Vec<u8>>>;

/// redis-rs alone: query-api's two round trips (the range of ids, then the
/// views with the last one's score) on one multiplexed connection.
pub async fn redis_rs(conn: MultiplexedConnection, connections: usize, secs: u64) -> f64 {
    pages_per_s(connections, secs, move || {
        let mut conn = conn.clone();
        async move {
            let ids: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGE")
                .arg(keys::GLOBAL_FEED)
                .arg("+inf")
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(21)
                .query_async(&mut conn)
                .await;
            let Ok(mut ids) = ids else { return false };
            ids.truncate(20);
            let Some(last) = ids.last() else { return false };
            let keys: Vec<String> = ids.iter().map(|id| keys::post_view_str(id)).collect();
            let page: redis::RedisResult<(Views, Option<f64>)> = redis::pipe()
                .cmd("MGET")
                .arg(&keys)
                .cmd("ZSCORE")
                .arg(keys::GLOBAL_FEED)
                .arg(last)
                .query_async(&mut conn)
                .await;
            page.is_ok()
        }
    })
    .await
}

/// query-api's read model (lean client, page assembly included), without HTTP.
pub async fn read_model(redis_url: &str, connections: usize, secs: u64) -> f64 {
    let backend = Backend::connect(redis_url, "REDIS_URL").unwrap_or_else(|e| panic!("{e}"));
    let model = ReadModel::new(backend);
    pages_per_s(connections, secs, move || {
        let model = model.clone();
        async move {
            let of = PageOf {
                feed: keys::GLOBAL_FEED,
                limit: 20,
                before: None,
                reader: None,
            };
            model.page(of).await.is_ok()
        }
    })
    .await
}
