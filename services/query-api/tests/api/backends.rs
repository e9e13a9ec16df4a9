//! The lean client serves plain TCP; redis-rs serves TLS (`rediss://`), which
//! the lean client does not speak. Both must read the same model the same way,
//! and a page read with its scores must equal one whose cursor comes by ZSCORE.

use community_shared::consistency::ConsistencyToken;
use community_shared::keys;
use community_testkit::Stack;
use query_api::read_model::{Backend, PageOf, ReadModel};
use query_api::resp::{self, Encode};
use uuid::Uuid;

#[tokio::test]
async fn the_lean_client_and_redis_rs_read_the_same_model_alike() {
    let stack = Stack::start().await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..7 {
        let w = stack.post(ann, &format!("post {i}")).await;
        ids.push(w.body["id"].as_str().unwrap().to_string());
        tokens.extend(w.token);
    }
    tokens.extend(stack.like(bob, &ids[2], true).await.token);
    tokens.extend(stack.delete(ann, &ids[4]).await.token);
    stack.converged().await;

    let url = stack.sys.redis.url();
    let lean = Backend::connect(&url, "REDIS_URL").unwrap();
    assert!(
        matches!(lean, Backend::Lean(_)),
        "redis:// takes the lean client"
    );
    let rs = Backend::RedisRs(community_shared::redis_conn::connect(&url, "REDIS_URL").unwrap());
    let (a, b) = (ReadModel::new(lean), ReadModel::new(rs));

    // Every page of both feeds, anonymous and personalised, following cursors.
    for feed in [keys::GLOBAL_FEED.to_string(), keys::author_feed(ann)] {
        for reader in [None, Some(bob)] {
            let (mut before, mut pages, mut items, mut liked) = (None, 0, 0, 0);
            loop {
                let of = PageOf {
                    feed: &feed,
                    limit: 3,
                    before,
                    reader,
                };
                let pa = a.page(of).await.unwrap();
                for other in [
                    b.page(of).await.unwrap(),
                    a.page_with_scores(of).await.unwrap(),
                    b.page_with_scores(of).await.unwrap(),
                ] {
                    assert_eq!(
                        String::from_utf8_lossy(&pa.json),
                        String::from_utf8_lossy(&other.json)
                    );
                }
                let page: serde_json::Value = serde_json::from_slice(&pa.json).unwrap();
                pages += 1;
                items += pa.items;
                liked += page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|i| i["liked_by_me"] == true)
                    .count();
                match page["next_cursor"].as_str() {
                    Some(c) => before = Some(query_api::cursor::decode(c).unwrap()),
                    None => break,
                }
            }
            assert_eq!((pages, items), (2, 6), "{feed}: 7 posts, one deleted");
            assert_eq!(liked, usize::from(reader.is_some()), "{feed}");
        }
    }

    // Single views: present, liked, deleted, never written.
    for id in ids
        .iter()
        .map(|i| i.parse().unwrap())
        .chain([Uuid::new_v4()])
    {
        for reader in [None, Some(bob)] {
            assert_eq!(
                a.post(id, reader).await.unwrap(),
                b.post(id, reader).await.unwrap()
            );
        }
    }
    assert!(
        a.post(ids[0].parse().unwrap(), None)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        a.post(ids[4].parse().unwrap(), None)
            .await
            .unwrap()
            .is_none()
    );

    // Read-your-writes checks: every token is held; a token from the future is not.
    assert_eq!(tokens.len(), 9);
    for t in &tokens {
        let t = ConsistencyToken::decode(t).unwrap();
        assert!(a.holds(&t).await.unwrap() && b.holds(&t).await.unwrap());
    }
    let future = ConsistencyToken::Post {
        post_id: ids[0].parse().unwrap(),
        version: 1_000,
    };
    assert!(!a.holds(&future).await.unwrap() && !b.holds(&future).await.unwrap());

    // A Redis error reply is an error from both, not a panic or an empty page.
    let not_a_feed = keys::post_view(ids[0].parse().unwrap());
    for model in [&a, &b] {
        let of = PageOf {
            feed: &not_a_feed,
            limit: 3,
            before: None,
            reader: None,
        };
        let outcome = model.page(of).await.map(|p| p.json);
        assert!(
            matches!(&outcome, Err(resp::Error::Server(e)) if e.contains("WRONGTYPE")),
            "{outcome:?}"
        );
    }
    a.backend().ping().await.unwrap();
    b.backend().ping().await.unwrap();
}

#[tokio::test]
async fn the_lean_client_gives_up_on_a_frozen_redis_and_reconnects() {
    let sys = community_testkit::System::start().await;
    let backend = Backend::connect(&sys.redis.url(), "REDIS_URL").unwrap();
    backend.ping().await.unwrap();

    // Frozen: the socket stays open but nothing answers; the reply deadline (2 s) ends the wait.
    sys.redis.freeze();
    let started = std::time::Instant::now();
    let err = backend.ping().await.unwrap_err();
    let waited = started.elapsed();
    assert!(err.contains("no reply"), "{err}");
    assert!(
        waited >= std::time::Duration::from_millis(1900)
            && waited < std::time::Duration::from_secs(4),
        "{waited:?}"
    );
    // Queries in a burst meanwhile fail too, each within its own deadline.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let b = backend.clone();
        burst.spawn(async move { b.ping().await });
    }
    while let Some(outcome) = burst.join_next().await {
        assert!(outcome.unwrap().is_err());
    }

    // Back: the next query reconnects by itself.
    sys.redis.thaw();
    backend.ping().await.unwrap();
}

#[tokio::test]
async fn the_lean_client_authenticates_and_selects_the_database_of_the_url() {
    let sys = community_testkit::System::start().await;
    let mut admin = sys.redis.conn().await;
    let port = sys.redis.port();
    let _: () = redis::pipe()
        .cmd("SELECT")
        .arg(3)
        .cmd("SET")
        .arg("k")
        .arg("in db 3")
        .cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut admin)
        .await
        .unwrap();

    let get_k = |url: String| async move {
        let backend = Backend::connect(&url, "REDIS_URL").unwrap();
        let mut c = backend.commands();
        c.command("GET", &["k"]);
        backend.query(c).await
    };
    let replies = get_k(format!("redis://:s3cret@127.0.0.1:{port}/3"))
        .await
        .unwrap();
    assert_eq!(
        replies,
        vec![resp::Reply::Bulk(bytes::Bytes::from_static(b"in db 3"))]
    );
    let replies = get_k(format!("redis://default:s3cret@127.0.0.1:{port}/0"))
        .await
        .unwrap();
    assert_eq!(replies, vec![resp::Reply::Nil]);
    let wrong = get_k(format!("redis://:nope@127.0.0.1:{port}/3"))
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, resp::Error::Connect(e) if e.contains("WRONGPASS")),
        "{wrong:?}"
    );
    assert!(!wrong.to_string().contains("nope"));
}

/// A like's token needs the liker's own state, not only the view: a view can
/// be rewritten from a read newer than the like (a rename, a lagging batch)
/// before the like's own event writes the liker's state.
#[tokio::test]
async fn a_like_token_waits_for_the_likers_state_not_only_the_view() {
    let sys = community_testkit::System::start().await;
    let url = sys.redis.url();
    let lean = ReadModel::new(Backend::connect(&url, "REDIS_URL").unwrap());
    let rs = ReadModel::new(Backend::RedisRs(
        community_shared::redis_conn::connect(&url, "REDIS_URL").unwrap(),
    ));
    let (post, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let token = ConsistencyToken::Like {
        post_id: post,
        user_id: bob,
        version: 3,
    };
    let mut conn = sys.redis.conn().await;
    let mut set = async |cmd: &mut redis::Cmd| cmd.query_async::<()>(&mut conn).await.unwrap();
    let holds = async |expected: bool, why: &str| {
        for model in [&lean, &rs] {
            assert_eq!(model.holds(&token).await.unwrap(), expected, "{why}");
        }
    };
    holds(false, "nothing written").await;
    // The view already at the like's version; bob's state not yet written.
    set(redis::cmd("SET").arg(keys::post_view(post)).arg("3.1|{}")).await;
    holds(false, "the view alone").await;
    // Bob's state (a signed post version) from a read before the like.
    let state = |v: i64| {
        let mut hset = redis::cmd("HSET");
        hset.arg(keys::user_likes(bob)).arg(post.to_string()).arg(v);
        hset
    };
    set(&mut state(2)).await;
    holds(false, "a state older than the like").await;
    // From a read at the like or after it (negative: unliked since).
    set(&mut state(-4)).await;
    holds(true, "a state from a later read").await;
    set(&mut state(3)).await;
    holds(true, "the like's own state").await;
    // The state alone is not enough either.
    set(redis::cmd("DEL").arg(keys::post_view(post))).await;
    holds(false, "the state alone").await;
}
