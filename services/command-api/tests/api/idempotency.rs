use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{App, assert_problem, error_fields};

#[tokio::test]
async fn the_same_key_and_body_replays_the_first_response() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let send = |key: &str, body: serde_json::Value, who: Uuid| {
        app.as_user(app.sys.http.post(app.url("/posts")), who)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = send("k-1", json!({"content": "once"}), user).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let loc = first.headers()["location"].clone();
    let tok = first.headers()["x-consistency-token"].clone();
    let first: serde_json::Value = first.json().await.unwrap();

    let again = send("k-1", json!({"content": "once"}), user).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["location"], loc);
    assert_eq!(again.headers()["x-consistency-token"], tok);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again, first);

    let p = assert_problem(
        send("k-1", json!({"content": "different"}), user)
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&p), ["Idempotency-Key"]);

    // Keys are per user.
    let other = send("k-1", json!({"content": "once"}), Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);

    let long = "k".repeat(256);
    let p = assert_problem(
        send(&long, json!({"content": "x"}), user).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&p), ["Idempotency-Key"]);

    let pool = app.sys.pg.pool().await;
    let (posts, events): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM outbox)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((posts, events), (2, 2));
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_post() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let reqs: Vec<_> = (0..12)
        .map(|_| {
            app.as_user(app.sys.http.post(app.url("/posts")), user)
                .header("Idempotency-Key", "retry-storm")
                .json(&json!({"content": "only once"}))
                .send()
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for res in community_testkit::join_all(reqs).await {
        let res = res.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: serde_json::Value = res.json().await.unwrap();
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let pool = app.sys.pg.pool().await;
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(posts, 1);
}
