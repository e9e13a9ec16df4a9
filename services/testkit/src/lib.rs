//! Test harness: real Postgres and Redis servers, the real service binaries.
//!
//! Each test gets throwaway servers on free loopback ports in a temp dir,
//! removed when the handles drop. Postgres is initialised once per machine
//! into a cached template (initdb is the slow part) and copied per test;
//! when running as root it runs as the `postgres` user, as Postgres insists.
//! Services are the binaries cargo built, started with an environment like
//! the one the Helm chart gives them.
#![forbid(unsafe_code)]

pub mod compare;
pub mod load;
pub mod otlp;
mod pg;
mod process;
mod redis_server;
mod services;
mod stack;
mod token;

pub use pg::Postgres;
pub use process::{binary, free_port};
pub use redis_server::Redis;
pub use services::{Service, System};
pub use stack::{BASE, Stack, Written};
pub use token::{Claims, TEST_SECRET, token, token_with};

/// The sum of the samples in Prometheus `text` whose line starts with `prefix`
/// (a metric name, optionally with the start of its labels); `None` if none.
pub fn metric_sum(text: &str, prefix: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Polls `f` every few milliseconds until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = std::time::Duration::from_millis(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(100));
    }
}

/// Runs futures concurrently on the current task and returns their outputs in order.
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, fut) in out.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
