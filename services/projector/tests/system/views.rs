use serde_json::json;
use uuid::Uuid;

use community_testkit::{Stack, Written};

#[tokio::test]
async fn every_write_kind_shows_in_every_view_that_holds_the_post() {
    let stack = Stack::start().await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    stack
        .put_profile(ann, json!({"username": "ann", "display_name": "Ann"}))
        .await;
    let p1 = stack.post(ann, "first").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p2 = stack.post(ann, "second").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Created: in the global feed, the author feed and as a post view, newest first.
    let view = stack
        .until_post(&p2, "p2 projected", |v| v.is_some())
        .await
        .unwrap();
    assert_eq!(view["author"]["username"], "ann");
    assert_eq!(view["content"], "second");
    assert_eq!(view["like_count"], 0);
    assert_eq!(view["liked_by_me"], false);
    let global: Vec<String> = stack
        .all_items("/feed", 10)
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(global, [p2.clone(), p1.clone()]);
    let author: Vec<String> = stack
        .all_items(&format!("/feed/users/{ann}"), 10)
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(author, [p2.clone(), p1.clone()]);

    // Liked: the count everywhere; liked_by_me for the liker only. The liker
    // reads with the like's token: without it the view can show the count a
    // moment before the liker's own state is written (a rename's rewrite or
    // a lagging batch may read the post after the like, before the like's
    // event is projected); the token waits for both.
    let liked = stack.like(bob, &p1, true).await;
    stack
        .until_post(&p1, "like projected", |v| {
            v.is_some_and(|v| v["like_count"] == 1)
        })
        .await;
    let mine = read_after(&stack, &format!("/feed/posts/{p1}"), bob, liked).await;
    assert_eq!(mine["liked_by_me"], true);
    let (_, theirs) = stack.get(&format!("/feed/posts/{p1}"), Some(ann)).await;
    assert_eq!(theirs["liked_by_me"], false);
    let (_, page) = stack.get("/feed", Some(bob)).await;
    let in_feed = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == p1.as_str())
        .unwrap();
    assert_eq!(
        (
            in_feed["like_count"].clone(),
            in_feed["liked_by_me"].clone()
        ),
        (json!(1), json!(true))
    );
    let (_, page) = stack.get(&format!("/feed/users/{ann}"), Some(bob)).await;
    let in_author = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == p1.as_str())
        .unwrap();
    assert_eq!(in_author["liked_by_me"], true);

    // Unliked.
    let unliked = stack.like(bob, &p1, false).await;
    stack
        .until_post(&p1, "unlike projected", |v| {
            v.is_some_and(|v| v["like_count"] == 0)
        })
        .await;
    let mine = read_after(&stack, &format!("/feed/posts/{p1}"), bob, unliked).await;
    assert_eq!(mine["liked_by_me"], false);

    // Renamed: the author's existing posts show the new profile in every view.
    stack.put_profile(ann, json!({"username": "ann_renamed", "display_name": "Ann R.", "avatar_url": "https://cdn.example/ann.png"})).await;
    stack
        .until_post(&p1, "rename projected", |v| {
            v.is_some_and(|v| v["author"]["username"] == "ann_renamed")
        })
        .await;
    for feed in ["/feed".to_string(), format!("/feed/users/{ann}")] {
        for item in stack.all_items(&feed, 10).await {
            assert_eq!(item["author"]["username"], "ann_renamed", "{feed}");
            assert_eq!(item["author"]["display_name"], "Ann R.");
            assert_eq!(item["author"]["avatar_url"], "https://cdn.example/ann.png");
        }
    }

    // Deleted: gone from every view.
    stack.delete(ann, &p2).await;
    stack
        .until_post(&p2, "delete projected", |v| v.is_none())
        .await;
    for feed in ["/feed".to_string(), format!("/feed/users/{ann}")] {
        let ids: Vec<String> = stack
            .all_items(&feed, 10)
            .await
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, std::slice::from_ref(&p1), "{feed}");
    }
}

/// `path` read by `reader` once the read model holds `write`.
async fn read_after(stack: &Stack, path: &str, reader: Uuid, write: Written) -> serde_json::Value {
    let token = write.token.expect("a write's token");
    let res = stack.get_after(path, Some(reader), &token).await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    res.json().await.unwrap()
}
