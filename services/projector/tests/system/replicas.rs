use std::collections::HashSet;
use std::time::Duration;

use community_shared::keys;
use community_testkit::{Stack, eventually, join_all, metric_sum};
use uuid::Uuid;

use crate::{assert_feed_exactly, until_feed_len};

async fn processed(svc: &community_testkit::Service) -> f64 {
    metric_sum(&svc.metrics().await, "projector_events_processed_total").unwrap_or(0.0)
}

#[tokio::test]
async fn two_replicas_share_the_work_and_the_survivor_reclaims_a_dead_consumers_entries() {
    let mut stack = Stack::start().await;
    let second = stack
        .sys
        .projector("p2", &[("PROJECTOR_BATCH_SIZE", "5")])
        .await;
    let user = Uuid::new_v4();
    let ids: Vec<String> = join_all(
        (0..120)
            .map(|i| {
                let stack = &stack;
                async move {
                    stack.post(user, &format!("shared {i}")).await.body["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                }
            })
            .collect(),
    )
    .await;
    let mut expected: HashSet<String> = ids.into_iter().collect();
    until_feed_len(&stack, expected.len()).await;
    assert_feed_exactly(&stack, &expected).await;
    let first = stack.projector.as_ref().unwrap();
    let (a, b) = (processed(first).await, processed(&second).await);
    assert!(
        a > 0.0 && b > 0.0,
        "both replicas should have worked: {a} / {b}"
    );
    assert!(a + b >= 120.0, "every event processed: {a} + {b}");

    // A consumer that read entries and died before acking them ("ghost"), then
    // p2 dies too: p1 reclaims the ghost's entries once they are idle.
    let mut conn = stack.sys.redis.conn().await;
    drop(second);
    stack.projector.as_mut().unwrap().kill9();
    let more: Vec<String> = join_all(
        (0..10)
            .map(|i| {
                let stack = &stack;
                async move {
                    stack.post(user, &format!("orphaned {i}")).await.body["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                }
            })
            .collect(),
    )
    .await;
    let stolen: redis::streams::StreamReadReply =
        eventually("the ghost to grab entries", Duration::from_secs(10), || {
            let mut conn = conn.clone();
            async move {
                let r: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::CONSUMER_GROUP)
                    .arg("ghost")
                    .arg("COUNT")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(keys::STREAM)
                    .arg(">")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (!r.keys.is_empty()).then_some(r)
            }
        })
        .await;
    assert!(!stolen.keys[0].ids.is_empty());
    let pending: (usize, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
        .arg(keys::STREAM)
        .arg(keys::CONSUMER_GROUP)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pending.0 > 0, "the ghost holds entries");

    stack.projector = Some(stack.sys.projector("p1-restarted", &[]).await);
    expected.extend(more);
    until_feed_len(&stack, expected.len()).await;
    assert_feed_exactly(&stack, &expected).await;
    crate::until_nothing_pending(&conn, 20).await;
}
