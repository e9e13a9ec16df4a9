use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use community_testkit::load::{self, Mix};
use community_testkit::{Service, Stack};

#[derive(Clone, Copy, Debug)]
enum Victim {
    CommandApi,
    QueryApi,
    Projector,
}

/// Mixed writes (posts, likes, unlikes, deletes, renames) and reads; kill -9 one
/// process at a random moment, start a new one, and compare everything.
async fn crash(victim: Victim) {
    let mut stack = Stack::start().await;
    let targets = Arc::new(RwLock::new(stack.targets()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load::run(
        stack.sys.http.clone(),
        targets.clone(),
        Mix::default(),
        stop.clone(),
    ));

    // A random moment 300–1300 ms into the load.
    let delay = 300 + (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let kill = |svc: &mut Service| svc.kill9();
    match victim {
        Victim::CommandApi => {
            kill(&mut stack.command);
            stack.command = stack.sys.command_api_with(&[]).await;
            stack.command.wait_ready().await;
        }
        Victim::QueryApi => {
            kill(&mut stack.query);
            stack.query = stack.sys.query_api().await;
        }
        Victim::Projector => {
            if let Some(p) = stack.projector.as_mut() {
                kill(p);
            }
            stack.projector = Some(stack.sys.projector("p-after-crash", &[]).await);
        }
    }
    *targets.write().unwrap_or_else(|p| p.into_inner()) = stack.targets();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();

    assert!(
        report.ops > 50,
        "{victim:?}: the load did too little: {report:?}"
    );
    assert_eq!(
        report.server_errors(),
        0,
        "{victim:?}: 5xx under load: {report:?}"
    );
    stack.converged().await;
}

#[tokio::test]
async fn kill_9_of_command_api_under_mixed_load_loses_nothing() {
    crash(Victim::CommandApi).await;
}

#[tokio::test]
async fn kill_9_of_query_api_under_mixed_load_loses_nothing() {
    crash(Victim::QueryApi).await;
}

#[tokio::test]
async fn kill_9_of_the_projector_under_mixed_load_loses_nothing() {
    crash(Victim::Projector).await;
}
