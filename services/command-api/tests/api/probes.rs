use std::time::Duration;

use community_testkit::{System, eventually};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{App, assert_problem};

#[tokio::test]
async fn unmigrated_schema_is_unready_until_migrate_runs() {
    let sys = System::start().await;
    let api = sys.command_api_with(&[]).await;
    let live = sys.http.get(api.admin_url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let body: serde_json::Value = eventually(
        "a failing schema check",
        Duration::from_secs(10),
        || async {
            let res = sys.http.get(api.admin_url("/readyz")).send().await.ok()?;
            let body: serde_json::Value = res.json().await.ok()?;
            (body["checks"]["schema"]["status"] == "fail").then_some(body)
        },
    )
    .await;
    assert_eq!(body["status"], "unready");
    assert!(
        body["checks"]["schema"]["error"]
            .as_str()
            .unwrap()
            .contains("migrate")
    );
    let res = sys.http.get(api.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert!(sys.migrate().await.0.success());
    api.wait_ready().await;
}

#[tokio::test]
async fn metrics_use_route_templates_and_report_the_outbox() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let post = app.create_post(user, "measured").await;
    let id = post["id"].as_str().unwrap();
    app.like(user, id, true).await;
    let text = eventually(
        "the backlog gauge and the published counter",
        Duration::from_secs(15),
        || async {
            let t = app.api.metrics().await;
            (t.contains("outbox_backlog_events") && t.contains("outbox_published_events_total"))
                .then_some(t)
        },
    )
    .await;
    assert!(
        text.contains(
            r#"http_requests_total{method="POST",route="/api/v1/community/posts",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/v1/community/posts/{post_id}/like""#),
        "{text}"
    );
    assert!(!text.contains(id), "raw ids must never become labels");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn postgres_outage_gives_fast_503s_and_unready_then_recovers() {
    let mut app = App::start().await;
    let user = Uuid::new_v4();
    app.create_post(user, "before").await;
    app.sys.pg.stop().await;

    let started = std::time::Instant::now();
    let res = app
        .as_user(app.sys.http.post(app.url("/posts")), user)
        .json(&json!({"content": "during"}))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    eventually("readiness to turn 503", Duration::from_secs(20), || async {
        let res = app
            .sys
            .http
            .get(app.api.admin_url("/readyz"))
            .send()
            .await
            .ok()?;
        (res.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;

    app.sys.pg.restart().await;
    app.api.wait_ready().await;
    app.create_post(user, "after").await;
}

#[tokio::test]
async fn sigterm_turns_unready_drains_and_exits_zero() {
    let sys = System::start().await;
    assert!(sys.migrate().await.0.success());
    let mut api = sys.command_api_with(&[("SHUTDOWN_DELAY_MS", "1500")]).await;
    api.wait_ready().await;
    api.sigterm();
    // Readiness turns 503 at once, while requests are still served during the delay.
    eventually("readiness to turn 503", Duration::from_secs(5), || async {
        let res = sys.http.get(api.admin_url("/readyz")).send().await.ok()?;
        (res.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let res = sys
        .http
        .post(api.http_url("/api/v1/community/posts"))
        .bearer_auth(community_testkit::token(Uuid::new_v4()))
        .json(&json!({"content": "last one in"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let status = api.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", api.log());
}

#[tokio::test]
async fn openapi_document_describes_every_command() {
    let app = App::start().await;
    let res = app
        .sys
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/community/profile", "put"),
        ("/api/v1/community/posts", "post"),
        ("/api/v1/community/posts/{post_id}", "delete"),
        ("/api/v1/community/posts/{post_id}/like", "post"),
        ("/api/v1/community/posts/{post_id}/like", "delete"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} missing");
        for status in ["400", "401", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
    }
}
