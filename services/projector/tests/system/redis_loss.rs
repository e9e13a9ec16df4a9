use std::collections::HashSet;

use community_testkit::Stack;
use uuid::Uuid;

use crate::{assert_feed_exactly, until_feed_len};

#[tokio::test]
async fn redis_restarted_empty_under_running_services_comes_back_by_itself() {
    let mut stack = Stack::start().await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut expected = HashSet::new();
    for i in 0..15 {
        expected.insert(
            stack.post(ann, &format!("before {i}")).await.body["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let liked = expected.iter().next().unwrap().clone();
    stack.like(bob, &liked, true).await;
    until_feed_len(&stack, 15).await;

    // Redis dies; writes keep succeeding (the outbox holds them); reads are 503.
    stack.sys.redis.stop();
    for i in 0..10 {
        expected.insert(
            stack.post(ann, &format!("during {i}")).await.body["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let res = stack
        .sys
        .http
        .get(stack.query_url("/feed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));

    // It comes back empty: the projector rebuilds, the relay delivers the backlog.
    stack.sys.redis.start_again().await;
    until_feed_len(&stack, expected.len()).await;
    assert_feed_exactly(&stack, &expected).await;
    let (_, view) = stack.get(&format!("/feed/posts/{liked}"), Some(bob)).await;
    assert_eq!(
        (view["like_count"].as_i64(), view["liked_by_me"].as_bool()),
        (Some(1), Some(true))
    );
    let author = stack.all_items(&format!("/feed/users/{ann}"), 100).await;
    assert_eq!(author.len(), 25);
}
