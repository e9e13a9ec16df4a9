use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use community_testkit::load::{self, Mix};
use community_testkit::{Stack, eventually, metric_sum};

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A steady mixed load for `SOAK_SECS` (20 s in the regular suite; the soak
/// command runs 300): zero 5xx, flat memory after warm-up, lag back to zero,
/// and a read model equal to Postgres at the end.
#[tokio::test]
async fn soak_steady_mixed_load() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let stack = Stack::start().await;
    let pids: Vec<(&str, u32)> = vec![
        ("command-api", stack.command.pid().unwrap()),
        ("query-api", stack.query.pid().unwrap()),
        (
            "projector",
            stack.projector.as_ref().and_then(|p| p.pid()).unwrap(),
        ),
    ];
    let samples: Arc<Mutex<Vec<Vec<u64>>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, pids) = (samples.clone(), stop.clone(), pids.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let row = pids
                    .iter()
                    .map(|(_, pid)| rss_kib(*pid).unwrap_or(0))
                    .collect();
                samples.lock().unwrap().push(row);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mix = Mix {
        workers: 6,
        users: 50,
        pace: Some(Duration::from_millis(10)),
    };
    let targets = Arc::new(RwLock::new(stack.targets()));
    let report = load::run_for(
        stack.sys.http.clone(),
        targets,
        mix,
        Duration::from_secs(secs),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();

    eprintln!(
        "soak {secs}s: {} ops, {:.0}/s, statuses {:?}",
        report.ops,
        report.ops as f64 / secs as f64,
        report.by_status
    );
    assert_eq!(report.server_errors(), 0, "{report:?}");
    assert_eq!(report.transport_errors, 0, "{report:?}");

    // Memory: after a warm-up quarter, RSS stays flat (bounded growth).
    let samples = samples.lock().unwrap().clone();
    let warm = samples.len() / 4;
    for (i, (name, _)) in pids.iter().enumerate() {
        let at_warm = samples[warm..].iter().map(|r| r[i]).next().unwrap_or(0);
        let peak = samples[warm..].iter().map(|r| r[i]).max().unwrap_or(0);
        let last = samples.last().map(|r| r[i]).unwrap_or(0);
        eprintln!(
            "{name}: RSS after warm-up {} MiB, peak {} MiB, end {} MiB",
            at_warm / 1024,
            peak / 1024,
            last / 1024
        );
        assert!(
            peak <= at_warm + at_warm / 2 + 16 * 1024,
            "{name} memory grew: {at_warm} KiB → {peak} KiB"
        );
    }

    // The consumer group catches up (lag and pending back to zero)...
    let projector = stack.projector.as_ref().unwrap();
    eventually("lag back to zero", Duration::from_secs(30), || async {
        let text = projector.metrics().await;
        (metric_sum(&text, "projector_consumer_group_lag_events ") == Some(0.0)
            && metric_sum(&text, "projector_consumer_group_pending_events ") == Some(0.0))
        .then_some(())
    })
    .await;
    // ...and the read model equals Postgres.
    stack.converged().await;
}
