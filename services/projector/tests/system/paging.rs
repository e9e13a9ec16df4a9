use std::collections::HashSet;

use community_testkit::{Stack, join_all};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::until_feed_len;

#[tokio::test]
async fn paging_while_posts_arrive_never_repeats_or_skips_even_with_equal_timestamps() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    let mut before = HashSet::new();
    for i in 0..45 {
        before.insert(
            stack.post(user, &format!("old {i}")).await.body["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Give a third of them the very same timestamp, as a bulk import would, and
    // rebuild the views from Postgres so the read model shows it.
    let pool = stack.sys.pg.pool().await;
    sqlx::query("UPDATE posts SET created_at = '2026-01-01T00:00:00Z' WHERE seq % 3 = 0")
        .execute(&pool)
        .await
        .unwrap();
    let (status, err) = stack.sys.run("projector", &["rebuild"]).await;
    assert!(status.success(), "{err}");
    until_feed_len(&stack, 45).await;

    // Page with a small limit while new posts keep arriving.
    let writer = async {
        join_all(
            (0..30)
                .map(|i| {
                    let stack = &stack;
                    async move {
                        stack.post(user, &format!("new {i}")).await;
                    }
                })
                .collect(),
        )
        .await;
    };
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/feed?limit=7&cursor={c}"),
                None => "/feed?limit=7".to_string(),
            };
            let (status, page) = stack.get(&path, None).await;
            assert_eq!(status, StatusCode::OK);
            for item in page["items"].as_array().unwrap() {
                seen.push(item["id"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break seen,
            }
        }
    };
    let ((), seen) = tokio::join!(writer, reader);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an item was repeated");
    assert!(
        before.is_subset(&unique),
        "an item that existed before paging was skipped"
    );
    let same_time = seen.len() - unique.difference(&before).count();
    assert_eq!(same_time, 45);

    let bad = [
        "/feed?limit=0",
        "/feed?limit=101",
        "/feed?limit=x",
        "/feed?cursor=nope",
        "/feed/users/not-a-uuid",
        "/feed/posts/123",
    ];
    for path in bad {
        let (status, body) = stack.get(path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["status"], 400);
    }
    let (status, _) = stack
        .get(&format!("/feed/posts/{}", Uuid::new_v4()), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
