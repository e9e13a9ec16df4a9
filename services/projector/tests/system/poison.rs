use std::collections::HashMap;
use std::time::Duration;

use community_shared::keys;
use community_testkit::{Stack, eventually};
use uuid::Uuid;

#[tokio::test]
async fn a_poison_entry_is_dead_lettered_and_does_not_block_the_stream() {
    let stack = Stack::start().await;
    let mut conn = stack.sys.redis.conn().await;
    let poison_id: String = redis::cmd("XADD")
        .arg(keys::STREAM)
        .arg("*")
        .arg("event_id")
        .arg(Uuid::new_v4().to_string())
        .arg("type")
        .arg("post_created")
        .arg("version")
        .arg("1")
        .arg("payload")
        .arg("{this is not json")
        .arg("occurred_at_us")
        .arg("1")
        .arg("outbox_id")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let unknown_id: String = redis::cmd("XADD")
        .arg(keys::STREAM)
        .arg("*")
        .arg("type")
        .arg("post_exploded")
        .query_async(&mut conn)
        .await
        .unwrap();
    let post = stack.post(Uuid::new_v4(), "after the poison").await;
    let id = post.body["id"].as_str().unwrap().to_string();
    stack
        .until_post(&id, "the post behind the poison", |v| v.is_some())
        .await;

    let dead: Vec<HashMap<String, String>> =
        eventually("two dead letters", Duration::from_secs(10), || {
            let mut conn = conn.clone();
            async move {
                let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(keys::DEAD_LETTER_STREAM)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                let entries: Vec<HashMap<String, String>> = r
                    .ids
                    .iter()
                    .map(|e| {
                        e.map
                            .iter()
                            .filter_map(|(k, v)| {
                                Some((k.clone(), redis::from_redis_value_ref::<String>(v).ok()?))
                            })
                            .collect()
                    })
                    .collect();
                (entries.len() == 2).then_some(entries)
            }
        })
        .await;
    assert_eq!(dead[0]["original_id"], poison_id);
    assert!(dead[0]["reason"].contains("payload"), "{:?}", dead[0]);
    assert_eq!(dead[0]["original.payload"], "{this is not json");
    assert_eq!(dead[1]["original_id"], unknown_id);
    assert!(dead[1]["reason"].contains("cannot decode"), "{:?}", dead[1]);

    crate::until_nothing_pending(&conn, 10).await;
    let text = stack.projector.as_ref().unwrap().metrics().await;
    assert!(
        text.contains(r#"projector_events_dead_lettered_total{type="undecodable"} 2"#),
        "{text}"
    );
}
