use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{App, assert_problem, error_fields};

async fn events(app: &App) -> Vec<String> {
    let pool = app.sys.pg.pool().await;
    sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn put_profile_creates_replaces_and_only_real_changes_emit_events() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let put = |body: serde_json::Value| {
        app.as_user(app.sys.http.put(app.url("/profile")), user)
            .json(&body)
            .send()
    };
    let res =
        put(json!({"username": "ann", "display_name": "Ann", "avatar_url": "https://cdn.x/a.png"}))
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-consistency-token"));
    let p: serde_json::Value = res.json().await.unwrap();
    assert_eq!(p["id"], user.to_string());
    assert_eq!(p["username"], "ann");
    assert_eq!(p["display_name"], "Ann");
    assert_eq!(p["avatar_url"], "https://cdn.x/a.png");

    // Same body again: 200, nothing changed, no event.
    let res =
        put(json!({"username": "ann", "display_name": "Ann", "avatar_url": "https://cdn.x/a.png"}))
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(events(&app).await, ["profile_updated"]);

    // PUT replaces: omitted optional fields are cleared.
    let res = put(json!({"username": "ann_2"})).await.unwrap();
    let p: serde_json::Value = res.json().await.unwrap();
    assert_eq!(p["username"], "ann_2");
    assert!(p["display_name"].is_null() && p["avatar_url"].is_null());
    assert_eq!(events(&app).await, ["profile_updated", "profile_updated"]);
}

#[tokio::test]
async fn profile_validation_lists_every_bad_field() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let res = app
        .as_user(app.sys.http.put(app.url("/profile")), user)
        .json(&json!({"username": "A!", "display_name": "x".repeat(65), "avatar_url": "http://insecure"}))
        .send()
        .await
        .unwrap();
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut fields = error_fields(&p);
    fields.sort();
    assert_eq!(fields, ["avatar_url", "display_name", "username"]);

    let res = app
        .as_user(app.sys.http.put(app.url("/profile")), user)
        .json(&json!({"display_name": "no username"}))
        .send()
        .await
        .unwrap();
    let p = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&p), ["username"]);

    let res = app
        .as_user(app.sys.http.put(app.url("/profile")), user)
        .json(&json!({"username": 42}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert!(events(&app).await.is_empty());
}

#[tokio::test]
async fn a_taken_username_is_409() {
    let app = App::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let put = |user, name: &str| {
        app.as_user(app.sys.http.put(app.url("/profile")), user)
            .json(&json!({"username": name}))
            .send()
    };
    assert_eq!(put(a, "taken").await.unwrap().status(), StatusCode::OK);
    assert_problem(put(b, "taken").await.unwrap(), StatusCode::CONFLICT).await;
    // Keeping your own name is not a conflict.
    assert_eq!(put(a, "taken").await.unwrap().status(), StatusCode::OK);
}
