use std::collections::HashSet;

use community_shared::keys;
use community_testkit::Stack;
use serde_json::json;
use uuid::Uuid;

use crate::{assert_feed_exactly, until_feed_len};

#[tokio::test]
async fn projector_rebuild_regenerates_the_read_model_from_postgres() {
    let mut stack = Stack::start().await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    stack.put_profile(ann, json!({"username": "ann"})).await;
    let mut live = HashSet::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let id = stack.post(ann, &format!("p{i}")).await.body["id"]
            .as_str()
            .unwrap()
            .to_string();
        live.insert(id.clone());
        ids.push(id);
    }
    stack.like(bob, &ids[0], true).await;
    stack.delete(ann, &ids[1]).await;
    live.remove(&ids[1]);
    until_feed_len(&stack, 29).await;

    // Stop projecting, wipe the read model (keep the stream), rebuild by command.
    stack.projector.take();
    let mut conn = stack.sys.redis.conn().await;
    let mut victims: Vec<String> = redis::cmd("KEYS")
        .arg("sparkle:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    victims.retain(|k| k != keys::STREAM);
    let _: () = redis::cmd("DEL")
        .arg(&victims)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, page) = stack.get("/feed", None).await;
    assert_eq!(page["items"], json!([]));

    let (status, err) = stack.sys.run("projector", &["rebuild"]).await;
    assert!(status.success(), "{err}");
    assert_feed_exactly(&stack, &live).await;
    let (_, view) = stack
        .get(&format!("/feed/posts/{}", ids[0]), Some(bob))
        .await;
    assert_eq!(
        (view["like_count"].as_i64(), view["liked_by_me"].as_bool()),
        (Some(1), Some(true))
    );
    let (status, _) = stack.get(&format!("/feed/posts/{}", ids[1]), None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let marker: bool = redis::cmd("EXISTS")
        .arg(keys::READ_MODEL_MARKER)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(marker);
}
