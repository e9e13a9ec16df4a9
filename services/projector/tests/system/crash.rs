use std::collections::HashSet;

use community_testkit::{Stack, join_all};
use uuid::Uuid;

use crate::{assert_feed_exactly, until_feed_len};

#[tokio::test]
async fn kill_9_of_the_projector_mid_burst_loses_and_doubles_nothing() {
    let mut stack = Stack::start().await;
    let authors: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut expected: HashSet<String> = HashSet::new();
    // kill -9 the projector while the first burst is being written and projected.
    let pid = stack.projector.as_ref().and_then(|p| p.pid()).unwrap();
    let killer = async {
        community_testkit::eventually(
            "some posts projected",
            std::time::Duration::from_secs(20),
            || async { (!stack.all_items("/feed", 5).await.is_empty()).then_some(()) },
        )
        .await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        assert!(killed.is_ok_and(|s| s.success()));
    };
    let (ids, ()) = tokio::join!(burst(&stack, &authors, 0), killer);
    expected.extend(ids);
    stack.projector.take();
    expected.extend(burst(&stack, &authors, 100).await);

    // A new replica (a new pod name) takes over, including what the dead one held.
    stack.projector = Some(stack.sys.projector("p2", &[]).await);
    until_feed_len(&stack, expected.len()).await;
    assert_feed_exactly(&stack, &expected).await;
    for a in &authors {
        let n = stack
            .all_items(&format!("/feed/users/{a}"), 100)
            .await
            .len();
        assert_eq!(n, 20, "author feed of {a}");
    }
}

async fn burst(stack: &Stack, authors: &[Uuid], from: usize) -> Vec<String> {
    join_all(
        (0..60)
            .map(|i| async move {
                let w = stack
                    .post(authors[i % authors.len()], &format!("burst {}", from + i))
                    .await;
                w.body["id"].as_str().unwrap().to_string()
            })
            .collect(),
    )
    .await
}

#[tokio::test]
async fn sigterm_finishes_the_batch_acks_and_exits_zero() {
    let mut stack = Stack::start().await;
    let authors = [Uuid::new_v4(), Uuid::new_v4()];
    let (ids, ()) = tokio::join!(burst(&stack, &authors, 0), async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        stack.projector.as_ref().unwrap().sigterm();
    });
    let status = stack
        .projector
        .as_mut()
        .unwrap()
        .wait_exit(std::time::Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(0));
    // Nothing left pending on the stopped consumer: its last batch was acked.
    let mut conn = stack.sys.redis.conn().await;
    let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(community_shared::keys::STREAM)
        .arg(community_shared::keys::CONSUMER_GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg("p1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pending.ids.is_empty(),
        "{} entries left pending",
        pending.ids.len()
    );
    // A new replica carries on from where it stopped.
    stack.projector = Some(stack.sys.projector("p2", &[]).await);
    let expected: HashSet<String> = ids.into_iter().collect();
    until_feed_len(&stack, expected.len()).await;
    assert_feed_exactly(&stack, &expected).await;
}
