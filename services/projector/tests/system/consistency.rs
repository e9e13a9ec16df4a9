use std::time::Duration;

use community_testkit::{Stack, join_all};
use reqwest::StatusCode;
use uuid::Uuid;

#[tokio::test]
async fn the_consistency_token_makes_the_first_read_see_the_write_under_load() {
    let stack = Stack::start().await;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let stack = &stack;
            async move {
                let user = Uuid::new_v4();
                for i in 0..8 {
                    let w1 = stack.post(user, &format!("writer {w} post {i}")).await;
                    let id = w1.body["id"].as_str().unwrap().to_string();
                    let tok = w1.token.clone().unwrap();
                    // The header on a post read...
                    let res = stack
                        .get_after(&format!("/feed/posts/{id}"), None, &tok)
                        .await;
                    assert_eq!(
                        res.status(),
                        StatusCode::OK,
                        "first read after the write must see it"
                    );
                    assert_eq!(res.headers()["x-consistency"], "consistent");
                    // ...and the parameter on the author's feed.
                    let res = stack
                        .sys
                        .http
                        .get(stack.query_url(&format!(
                            "/feed/users/{user}?limit=1&consistency_token={tok}"
                        )))
                        .send()
                        .await
                        .unwrap();
                    let page: serde_json::Value = res.json().await.unwrap();
                    assert_eq!(page["items"][0]["id"], id.as_str());
                    // A like, read back through the token, counts.
                    let liked = stack.like(user, &id, true).await;
                    let res = stack
                        .get_after(
                            &format!("/feed/posts/{id}"),
                            Some(user),
                            &liked.token.unwrap(),
                        )
                        .await;
                    let view: serde_json::Value = res.json().await.unwrap();
                    assert_eq!(
                        (view["like_count"].as_i64(), view["liked_by_me"].as_bool()),
                        (Some(1), Some(true))
                    );
                }
            }
        })
        .collect();
    join_all(writers).await;
}

#[tokio::test]
async fn a_token_the_read_model_cannot_reach_answers_stale_after_the_bound() {
    let mut stack = Stack::start().await;
    // No projector: nothing will ever be projected.
    stack.projector.take();
    let w = stack.post(Uuid::new_v4(), "never projected").await;
    let started = std::time::Instant::now();
    let res = stack.get_after("/feed", None, &w.token.unwrap()).await;
    let waited = started.elapsed();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-consistency"], "stale");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let bad = stack
        .sys
        .http
        .get(stack.query_url("/feed?consistency_token=garbage"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
