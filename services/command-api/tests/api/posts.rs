use community_testkit::{Claims, TEST_SECRET, metric_sum, token_with};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{App, BASE, assert_problem, error_fields};

#[tokio::test]
async fn create_post_returns_the_post_location_and_token_and_writes_the_outbox() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let res = app
        .as_user(app.sys.http.post(app.url("/posts")), user)
        .json(&json!({ "content": "  hello world  " }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(res.headers().contains_key("x-consistency-token"));
    let post: serde_json::Value = res.json().await.unwrap();
    assert_eq!(post["content"], "hello world");
    assert_eq!(post["like_count"], 0);
    assert_eq!(post["liked_by_me"], false);
    assert_eq!(post["author"]["id"], user.to_string());
    let id = post["id"].as_str().unwrap();
    assert_eq!(location, format!("{BASE}/feed/posts/{id}"));
    assert!(post["created_at"].as_str().unwrap().ends_with('Z'));

    let pool = app.sys.pg.pool().await;
    let (kind, agg): (String, Uuid) = sqlx::query_as("SELECT event_type, aggregate_id FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "post_created");
    assert_eq!(agg.to_string(), id);
}

#[tokio::test]
async fn a_user_is_provisioned_from_the_token() {
    let app = App::start().await;
    let (ann, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut claims = Claims::for_user(ann);
    claims.preferred_username = Some("Ann_B".into());
    let res = app
        .sys
        .http
        .post(app.url("/posts"))
        .bearer_auth(token_with(&claims, TEST_SECRET))
        .json(&json!({ "content": "first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let post: serde_json::Value = res.json().await.unwrap();
    assert_eq!(post["author"]["username"], "ann_b");

    // The same preferred name for someone else is taken: they get a generated one.
    let mut claims = Claims::for_user(other);
    claims.preferred_username = Some("ann_b".into());
    let res = app
        .sys
        .http
        .post(app.url("/posts"))
        .bearer_auth(token_with(&claims, TEST_SECRET))
        .json(&json!({ "content": "second" }))
        .send()
        .await
        .unwrap();
    let post: serde_json::Value = res.json().await.unwrap();
    let name = post["author"]["username"].as_str().unwrap();
    assert!(name.starts_with("user_"), "{name}");
}

#[tokio::test]
async fn content_rules_are_enforced() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    for (body, field) in [
        (json!({ "content": "" }), "content"),
        (json!({ "content": " \n\t " }), "content"),
        (json!({ "content": "é".repeat(5001) }), "content"),
        (json!({}), "content"),
    ] {
        let res = app
            .as_user(app.sys.http.post(app.url("/posts")), user)
            .json(&body)
            .send()
            .await
            .unwrap();
        let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&p), vec![field.to_string()]);
    }
    // 5000 multi-byte characters are fine.
    app.create_post(user, &"é".repeat(5000)).await;
}

#[tokio::test]
async fn malformed_requests_get_4xx_problems() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let post = |body: &'static str, ct: &'static str| {
        app.as_user(app.sys.http.post(app.url("/posts")), user)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_problem(
        post("{not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        post(r#"{"content": 5}"#, "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        post(r#"["content"]"#, "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        post(r#"{"content":"x","extra":1}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        post(r#"{"content":"x"}"#, "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    let big = format!(r#"{{"content":"{}"}}"#, "a".repeat(70 * 1024));
    let res = app
        .as_user(app.sys.http.post(app.url("/posts")), user)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;

    let res = app
        .as_user(app.sys.http.delete(app.url("/posts/not-a-uuid")), user)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let res = app.sys.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = app
        .as_user(app.sys.http.get(app.url("/posts")), user)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn only_the_author_deletes_and_deleting_twice_is_404() {
    let app = App::start().await;
    let (author, other) = (Uuid::new_v4(), Uuid::new_v4());
    let post = app.create_post(author, "mine").await;
    let url = app.url(&format!("/posts/{}", post["id"].as_str().unwrap()));

    let res = app
        .as_user(app.sys.http.delete(&url), other)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::FORBIDDEN).await;

    let res = app
        .as_user(app.sys.http.delete(&url), author)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.headers().contains_key("x-consistency-token"));

    let res = app
        .as_user(app.sys.http.delete(&url), author)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let missing = app.url(&format!("/posts/{}", Uuid::new_v4()));
    let res = app
        .as_user(app.sys.http.delete(&missing), author)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::NOT_FOUND).await;

    let pool = app.sys.pg.pool().await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kinds, ["post_created", "post_deleted"]);
}

/// Posts written at the same moment share statements (write batching), yet
/// each request gets its own post, view and token, and each post exactly one
/// event; authors without a profile in the same burst are provisioned.
#[tokio::test]
async fn concurrent_posts_are_batched_and_each_gets_its_own_post_and_event() {
    let app = App::start().await;
    let known: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    for u in &known {
        app.create_post(*u, "first post").await;
    }
    let before = batch_metric(&app).await;

    let mut burst = tokio::task::JoinSet::new();
    for i in 0..200 {
        // Every fifth request comes from a user without a profile yet.
        let user = if i % 5 == 0 {
            Uuid::new_v4()
        } else {
            known[i % known.len()]
        };
        let req = app
            .as_user(app.sys.http.post(app.url("/posts")), user)
            .json(&json!({ "content": format!("burst post {i}") }));
        burst.spawn(async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let token = res.headers().get("x-consistency-token").cloned();
            let body: serde_json::Value = res.json().await.unwrap();
            (i, user, status, token, body)
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(done) = burst.join_next().await {
        let (i, user, status, token, body) = done.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(token.is_some(), "request {i} has no consistency token");
        assert_eq!(body["content"], format!("burst post {i}"));
        assert_eq!(body["author"]["id"], user.to_string());
        assert!(ids.insert(body["id"].as_str().unwrap().to_string()));
    }

    let pool = app.sys.pg.pool().await;
    let posts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM posts WHERE content LIKE 'burst post %'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(posts, 200);
    // One post_created event per post, for that post.
    let (events, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT o.aggregate_id) FROM outbox o
           JOIN posts p ON p.id = o.aggregate_id
          WHERE o.event_type = 'post_created' AND p.content LIKE 'burst post %'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((events, distinct), (200, 200));

    // The 160 posts of known authors went through the batch writer (so did the
    // 40 first tries of new authors, which it declined): fewer statements than posts.
    let after = batch_metric(&app).await;
    let (statements, batched) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(batched, 200.0, "every burst request tried the batch writer");
    assert!(
        statements < batched,
        "{statements} statements for {batched} posts: nothing was batched"
    );
}

/// `command_post_batch_size` as (count of statements, sum of posts).
async fn batch_metric(app: &App) -> (f64, f64) {
    let text = app.api.metrics().await;
    let read = |name: &str| metric_sum(&text, name).unwrap_or(0.0);
    (
        read("command_post_batch_size_count "),
        read("command_post_batch_size_sum "),
    )
}
