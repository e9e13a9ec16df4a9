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

/// The projector makes sure of its consumer group and read model at start,
/// after a failure and every 10 s, not before every read: a check per batch
/// put a BUSYGROUP error reply per batch into Redis's error statistics
/// (hundreds a second under load: noise for anyone alerting on Redis
/// errors) and two round trips on the way from commit to view.
#[tokio::test]
async fn the_projector_does_not_recheck_its_group_before_every_read() {
    let stack = Stack::start().await;
    let ann = Uuid::new_v4();
    for i in 0..20 {
        stack.post(ann, &format!("post {i}")).await;
        until_feed_len(&stack, i + 1).await; // one batch each
    }
    let mut conn = stack.sys.redis.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let busy: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_BUSYGROUP:count="))
        .map_or(0, |n| n.trim().parse().unwrap());
    assert!(busy <= 3, "{busy} BUSYGROUP replies over 20 batches");
}
