use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use community_testkit::load::{self, Mix};
use community_testkit::{Service, Stack, eventually};
use reqwest::StatusCode;

/// SIGTERM under load, as in a rolling update behind a Service: readiness turns
/// 503 first; the "load balancer" (the load's target list) moves to the new
/// replica once it sees that; in-flight requests complete; no client sees an
/// error; the process exits 0 well within a 30 s grace period.
async fn drain(stack: &mut Stack, which: &str) {
    let targets = Arc::new(RwLock::new(stack.targets()));
    let replacement = stack
        .sys
        .service(which, &[("SHUTDOWN_DELAY_MS", "1000")], true)
        .await;
    replacement.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load::run(
        stack.sys.http.clone(),
        targets.clone(),
        Mix::default(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let svc: &mut Service = if which == "command-api" {
        &mut stack.command
    } else {
        &mut stack.query
    };
    let readyz = svc.admin_url("/readyz");
    let sent = Instant::now();
    svc.sigterm();
    eventually("readiness to turn 503", Duration::from_secs(2), || async {
        let r = stack.sys.http.get(&readyz).send().await.ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    {
        let mut t = targets.write().unwrap_or_else(|p| p.into_inner());
        let url = replacement.http_url("");
        if which == "command-api" {
            t.command = url
        } else {
            t.query = url
        }
    }
    let svc: &mut Service = if which == "command-api" {
        &mut stack.command
    } else {
        &mut stack.query
    };
    let status = svc.wait_exit(Duration::from_secs(30)).await;
    let took = sent.elapsed();
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(status.code(), Some(0), "{which} exit status");
    assert!(
        took < Duration::from_secs(10),
        "{which} took {took:?} to stop"
    );
    assert_eq!(report.server_errors(), 0, "{which}: {report:?}");
    assert_eq!(
        report.transport_errors, 0,
        "{which}: a client saw an error: {report:?}"
    );
    if which == "command-api" {
        stack.command = replacement
    } else {
        stack.query = replacement
    }
}

#[tokio::test]
async fn sigterm_under_load_drains_without_resets() {
    let sys_env = |_: &str| vec![("SHUTDOWN_DELAY_MS".to_string(), "1000".to_string())];
    let mut stack = Stack::start_with(sys_env).await;
    drain(&mut stack, "query-api").await;
    drain(&mut stack, "command-api").await;
}
