use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use community_testkit::{Claims, TEST_SECRET, token_with};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{App, assert_problem};

fn unsigned(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

#[tokio::test]
async fn every_bad_token_is_the_same_401() {
    let app = App::start().await;
    let user = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let valid = Claims::for_user(user);
    let mut expired = valid.clone();
    expired.exp = Some(now - 3600);
    let mut not_yet = valid.clone();
    not_yet.nbf = Some(now + 3600);
    let mut bad_sub = valid.clone();
    bad_sub.sub = Some("not-a-uuid".into());
    let mut no_exp = valid.clone();
    no_exp.exp = None;
    let mut no_sub = valid.clone();
    no_sub.sub = None;

    let tokens = vec![
        ("wrong key", token_with(&valid, "another-secret-0123456789")),
        ("expired", token_with(&expired, TEST_SECRET)),
        ("not yet valid", token_with(&not_yet, TEST_SECRET)),
        ("non-UUID sub", token_with(&bad_sub, TEST_SECRET)),
        ("no exp", token_with(&no_exp, TEST_SECRET)),
        ("no sub", token_with(&no_sub, TEST_SECRET)),
        (
            "alg none",
            unsigned(&json!({"sub": user.to_string(), "exp": now + 3600})),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    let mut details = std::collections::HashSet::new();
    for (what, token) in tokens {
        let res = app
            .sys
            .http
            .post(app.url("/posts"))
            .bearer_auth(&token)
            .json(&json!({"content": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(res.headers().contains_key("www-authenticate"), "{what}");
        let p = assert_problem(res, StatusCode::UNAUTHORIZED).await;
        details.insert(p["detail"].as_str().unwrap().to_string());
    }
    // No endpoint reveals how close a forged token came.
    assert_eq!(details.len(), 1, "{details:?}");

    for req in [
        app.sys
            .http
            .post(app.url("/posts"))
            .json(&json!({"content": "x"})),
        app.sys
            .http
            .put(app.url("/profile"))
            .json(&json!({"username": "abc"})),
        app.sys
            .http
            .delete(app.url(&format!("/posts/{}", Uuid::new_v4()))),
        app.sys
            .http
            .post(app.url(&format!("/posts/{}/like", Uuid::new_v4()))),
        app.sys
            .http
            .post(app.url("/posts"))
            .header("authorization", "Basic abc")
            .json(&json!({"content": "x"})),
    ] {
        assert_problem(req.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    }
    let pool = app.sys.pg.pool().await;
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(posts, 0);
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let sys = community_testkit::System::start().await;
    let (status, err) = sys.migrate().await;
    assert!(status.success(), "{err}");
    let api = sys
        .command_api_with(&[
            ("AUTH_JWT_ISSUER", "https://id.sparkle"),
            ("AUTH_JWT_AUDIENCE", "community"),
        ])
        .await;
    api.wait_ready().await;
    let url = api.http_url("/api/v1/community/posts");
    let user = Uuid::new_v4();
    let mut good = Claims::for_user(user);
    good.iss = Some("https://id.sparkle".into());
    good.aud = Some("community".into());
    let mut wrong_iss = good.clone();
    wrong_iss.iss = Some("https://evil".into());
    let mut wrong_aud = good.clone();
    wrong_aud.aud = Some("billing".into());
    let mut none = good.clone();
    none.iss = None;
    none.aud = None;
    for (claims, expected) in [
        (&good, StatusCode::CREATED),
        (&wrong_iss, StatusCode::UNAUTHORIZED),
        (&wrong_aud, StatusCode::UNAUTHORIZED),
        (&none, StatusCode::UNAUTHORIZED),
    ] {
        let res = sys
            .http
            .post(&url)
            .bearer_auth(token_with(claims, TEST_SECRET))
            .json(&json!({"content": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected, "{claims:?}");
    }
}
