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

/// Many pages of posts and of likes (read ahead of the writes), a user whose
/// likes span pages, and an author with more posts than their feed keeps:
/// the rebuilt read model is what Postgres says, to the last like.
#[tokio::test]
async fn rebuild_pages_through_posts_and_likes_and_matches_postgres() {
    let mut stack = Stack::start().await;
    stack.projector.take();
    let pool = stack.sys.pg.pool().await;
    let (ann, heavy, light) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO users (id, username) VALUES ($1, 'ann'), ($2, 'heavy'), ($3, 'light')",
    )
    .bind(ann)
    .bind(heavy)
    .bind(light)
    .execute(&pool)
    .await
    .unwrap();
    // 1 250 posts, every one liked by `heavy`, every hundredth by `light`,
    // the seventh deleted.
    let posts: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO posts (id, author_id, content)
         SELECT gen_random_uuid(), $1, 'post ' || i FROM generate_series(1, 1250) i
         RETURNING id",
    )
    .bind(ann)
    .fetch_all(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO post_likes (post_id, user_id)
         SELECT p, $2 FROM unnest($1::uuid[]) p
         UNION ALL
         SELECT p, $3 FROM unnest($1::uuid[]) WITH ORDINALITY AS t(p, n) WHERE n % 100 = 0",
    )
    .bind(&posts)
    .bind(heavy)
    .bind(light)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE posts p SET like_count = (SELECT count(*) FROM post_likes l WHERE l.post_id = p.id),
                            version = version + 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE posts SET deleted_at = now(), version = version + 1 WHERE id = $1")
        .bind(posts[6])
        .execute(&pool)
        .await
        .unwrap();

    // Pages of 100 posts and of 500 likes.
    let (status, err) = stack
        .sys
        .run_with("projector", &["rebuild"], &[("REBUILD_BATCH_SIZE", "100")])
        .await;
    assert!(status.success(), "{err}");
    let redis_url = stack.sys.redis.url();
    let matched =
        community_testkit::compare::read_model_matches(&pool, &redis_url, 10_000, 1_000).await;
    assert_eq!(matched, Ok(()));
    let mut conn = stack.sys.redis.conn().await;
    let heavy_likes: usize = redis::cmd("HLEN")
        .arg(keys::user_likes(heavy))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(heavy_likes, 1_250);
}
