use std::time::Duration;

use community_testkit::{System, eventually, token};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn logs_are_json_lines_and_never_carry_secrets() {
    let sys = System::start().await;
    assert!(sys.migrate().await.0.success());
    // Passwords in both URLs (Postgres trusts the test user, so its password is
    // ignored; Redis is unreachable, so the relay logs errors about it).
    let db_url = sys.pg.url().replace("postgres@", "postgres:pg-s3cret@");
    let api = sys
        .command_api_with(&[
            ("DATABASE_URL", &db_url),
            ("REDIS_URL", "redis://:redis-s3cret@127.0.0.1:1/"),
            ("RUST_LOG", "debug"),
        ])
        .await;
    api.wait_ready().await;
    let user = Uuid::new_v4();
    let tok = token(user);
    let res = sys
        .http
        .post(api.http_url("/api/v1/community/posts"))
        .bearer_auth(&tok)
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let bad = sys
        .http
        .post(api.http_url("/api/v1/community/posts"))
        .bearer_auth(format!("{tok}x"))
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    // Wait until the relay has complained about Redis at least once.
    let lines = eventually(
        "a relay warning about Redis",
        Duration::from_secs(15),
        || async {
            let lines = api.log_lines();
            lines
                .iter()
                .any(|l| l.contains("Redis unavailable"))
                .then_some(lines)
        },
    )
    .await;
    // With the access log on, requests get a server span even with export
    // off, so their log lines carry a trace id.
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("request completed"))
        .collect();
    assert_eq!(
        access.len(),
        2,
        "one access log line per request: {lines:?}"
    );
    for line in access {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["trace_id"].as_str().is_some_and(|t| t.len() == 32),
            "{line}"
        );
    }
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
        for secret in ["pg-s3cret", "redis-s3cret", &tok[tok.len() - 20..]] {
            assert!(
                !line.contains(secret),
                "a secret leaked into the logs: {line}"
            );
        }
    }
}
