use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{App, assert_problem};

async fn like_count(app: &App, post: &str) -> i64 {
    let pool = app.sys.pg.pool().await;
    sqlx::query_scalar("SELECT like_count FROM posts WHERE id = $1::uuid")
        .bind(post)
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn likes_are_idempotent_and_only_changes_emit_events() {
    let app = App::start().await;
    let (author, fan) = (Uuid::new_v4(), Uuid::new_v4());
    let post = app.create_post(author, "like me").await;
    let id = post["id"].as_str().unwrap();

    let res = app.like(fan, id, true).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-consistency-token"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"post_id": id, "liked": true}));
    assert_eq!(app.like(fan, id, true).await.status(), StatusCode::OK);
    assert_eq!(like_count(&app, id).await, 1);

    let res = app.like(fan, id, false).await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["liked"], false);
    // Unliking what is not liked is a no-op 200.
    assert_eq!(app.like(fan, id, false).await.status(), StatusCode::OK);
    assert_eq!(
        app.like(Uuid::new_v4(), id, false).await.status(),
        StatusCode::OK
    );
    assert_eq!(like_count(&app, id).await, 0);

    let pool = app.sys.pg.pool().await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kinds, ["post_created", "post_liked", "post_unliked"]);
}

#[tokio::test]
async fn liking_a_missing_or_deleted_post_is_404() {
    let app = App::start().await;
    let author = Uuid::new_v4();
    assert_problem(
        app.like(author, &Uuid::new_v4().to_string(), true).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.like(author, "nope", true).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let post = app.create_post(author, "soon gone").await;
    let id = post["id"].as_str().unwrap();
    let res = app
        .as_user(
            app.sys.http.delete(app.url(&format!("/posts/{id}"))),
            author,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.like(author, id, true).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_burst_of_concurrent_likes_counts_exactly() {
    let app = App::start().await;
    let post = app.create_post(Uuid::new_v4(), "popular").await;
    let id = post["id"].as_str().unwrap().to_string();
    let fans: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    // Every fan likes twice, all at once: 80 requests, 40 likes.
    let requests = fans
        .iter()
        .chain(fans.iter())
        .map(|fan| app.like(*fan, &id, true));
    let results = community_testkit::join_all(requests.collect()).await;
    assert!(results.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(like_count(&app, &id).await, 40);
    let pool = app.sys.pg.pool().await;
    let (likes, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM post_likes),
                (SELECT count(*) FROM outbox WHERE event_type = 'post_liked')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((likes, events), (40, 40));
}
