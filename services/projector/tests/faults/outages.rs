use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use community_testkit::load::{self, Mix};
use community_testkit::{Stack, eventually};
use reqwest::StatusCode;
use uuid::Uuid;

async fn ready(stack: &Stack, url: String) -> StatusCode {
    stack
        .sys
        .http
        .get(url)
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

#[tokio::test]
async fn postgres_outage_fails_writes_fast_keeps_reads_and_recovers() {
    let mut stack = Stack::start().await;
    let user = Uuid::new_v4();
    let before = stack.post(user, "before").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    stack
        .until_post(&before, "projected", |v| v.is_some())
        .await;

    stack.sys.pg.stop().await;
    let started = std::time::Instant::now();
    let res = stack
        .sys
        .http
        .post(stack.cmd_url("/posts"))
        .bearer_auth(community_testkit::token(user))
        .json(&serde_json::json!({"content": "during"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // command-api and projector report unready; query-api keeps serving the feed.
    let (cmd_ready, proj_ready) = (
        stack.command.admin_url("/readyz"),
        stack.projector.as_ref().unwrap().admin_url("/readyz"),
    );
    eventually(
        "command-api and projector unready",
        Duration::from_secs(20),
        || async {
            (ready(&stack, cmd_ready.clone()).await == StatusCode::SERVICE_UNAVAILABLE
                && ready(&stack, proj_ready.clone()).await == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        ready(&stack, stack.query.admin_url("/readyz")).await,
        StatusCode::OK
    );
    let (status, page) = stack.get("/feed", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["id"], before.as_str());

    // Postgres returns: writes succeed without a restart and the projector catches up.
    stack.sys.pg.restart().await;
    stack.command.wait_ready().await;
    stack.projector.as_ref().unwrap().wait_ready().await;
    let after = stack.post(user, "after").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    stack
        .until_post(&after, "projected after the outage", |v| v.is_some())
        .await;
    stack.converged().await;
}

#[tokio::test]
async fn rebuild_on_a_live_system_under_load_leaves_the_read_model_matching_postgres() {
    let stack = Stack::start().await;
    let targets = Arc::new(RwLock::new(stack.targets()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load::run(
        stack.sys.http.clone(),
        targets,
        Mix::default(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..2 {
        let (status, err) = stack.sys.run("projector", &["rebuild"]).await;
        assert!(status.success(), "{err}");
    }
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert_eq!(report.server_errors(), 0, "{report:?}");
    assert_eq!(report.transport_errors, 0, "{report:?}");
    stack.converged().await;
}
