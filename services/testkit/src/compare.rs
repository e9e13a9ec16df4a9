//! Does the Redis read model say what Postgres says? The oracle of the fault tests.
//!
//! Compares, for every post: the stored view (content, author, like count,
//! created_at) or its absence/tombstone when deleted; the visible content of
//! the global and author feeds (the newest live posts, in order, within their
//! windows); and every user's like states against `post_likes`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use community_shared::keys;
use community_shared::views::{AuthorView, PostView, decode_stored, rfc3339};
use sqlx::Row;
use uuid::Uuid;

struct DbPost {
    author: Uuid,
    deleted: bool,
    view: PostView,
}

async fn visible_feed(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    live: &HashMap<String, String>,
) -> redis::RedisResult<Vec<String>> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("REV")
        .query_async(conn)
        .await?;
    Ok(ids.into_iter().filter(|id| live.contains_key(id)).collect())
}

/// `Ok` when the read model matches Postgres; otherwise the first differences.
pub async fn read_model_matches(
    pool: &sqlx::PgPool,
    redis_url: &str,
    global_limit: usize,
    author_limit: usize,
) -> Result<(), String> {
    let rows = sqlx::query(
        "SELECT p.id, p.seq, p.author_id, p.content, p.like_count, p.created_at,
                p.deleted_at IS NOT NULL AS deleted, u.username, u.display_name, u.avatar_url
           FROM posts p JOIN users u ON u.id = p.author_id ORDER BY p.seq DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut posts: Vec<(Uuid, DbPost)> = Vec::new();
    for r in &rows {
        let id: Uuid = r.try_get("id").map_err(|e| e.to_string())?;
        let author: Uuid = r.try_get("author_id").map_err(|e| e.to_string())?;
        let created: DateTime<Utc> = r.try_get("created_at").map_err(|e| e.to_string())?;
        posts.push((
            id,
            DbPost {
                author,
                deleted: r.try_get("deleted").map_err(|e| e.to_string())?,
                view: PostView {
                    id,
                    author: AuthorView {
                        id: author,
                        username: r.try_get("username").map_err(|e| e.to_string())?,
                        display_name: r.try_get("display_name").map_err(|e| e.to_string())?,
                        avatar_url: r.try_get("avatar_url").map_err(|e| e.to_string())?,
                    },
                    content: r.try_get("content").map_err(|e| e.to_string())?,
                    created_at: rfc3339(created),
                    like_count: r.try_get("like_count").map_err(|e| e.to_string())?,
                    liked_by_me: false,
                },
            },
        ));
    }
    let likes: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT pl.user_id, pl.post_id FROM post_likes pl JOIN posts p ON p.id = pl.post_id
          WHERE p.deleted_at IS NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;

    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let mut live: HashMap<String, String> = HashMap::new();
    for chunk in posts.chunks(500) {
        let keys_: Vec<String> = chunk.iter().map(|(id, _)| keys::post_view(*id)).collect();
        let raws: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys_)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        for ((id, p), raw) in chunk.iter().zip(raws) {
            let stored = raw
                .as_deref()
                .and_then(decode_stored)
                .map(|(_, j)| j.to_string());
            match (p.deleted, stored) {
                (true, None) => {}
                (true, Some(j)) if j.is_empty() => {}
                (true, Some(_)) => problems.push(format!("deleted post {id} still has a view")),
                (false, None) => problems.push(format!("live post {id} has no view")),
                (false, Some(j)) if j.is_empty() => {
                    problems.push(format!("live post {id} has a tombstone"))
                }
                (false, Some(j)) => {
                    match serde_json::from_str::<PostView>(&j) {
                        Ok(v) if v == p.view => {}
                        Ok(v) => problems.push(format!(
                            "post {id}: view {v:?} but Postgres says {:?}",
                            p.view
                        )),
                        Err(e) => problems.push(format!("post {id}: unreadable view: {e}")),
                    }
                    live.insert(id.to_string(), j);
                }
            }
        }
    }

    let live_by_seq: Vec<&(Uuid, DbPost)> = posts.iter().filter(|(_, p)| !p.deleted).collect();
    let expected_global: Vec<String> = live_by_seq
        .iter()
        .take(global_limit)
        .map(|(id, _)| id.to_string())
        .collect();
    let mut global = visible_feed(&mut conn, keys::GLOBAL_FEED, &live)
        .await
        .map_err(|e| e.to_string())?;
    global.truncate(global_limit);
    if global != expected_global {
        problems.push(format!(
            "global feed has {} visible items, expected {}",
            global.len(),
            expected_global.len()
        ));
    }
    let mut by_author: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for (id, p) in &live_by_seq {
        by_author.entry(p.author).or_default().push(id.to_string());
    }
    for (author, ids) in &by_author {
        let expected: Vec<String> = ids.iter().take(author_limit).cloned().collect();
        let got = visible_feed(&mut conn, &keys::author_feed(*author), &live)
            .await
            .map_err(|e| e.to_string())?;
        if got != expected {
            problems.push(format!(
                "feed of {author}: {} visible items, expected {}",
                got.len(),
                expected.len()
            ));
        }
    }

    // Likes: the positive entries of each user's hash are exactly their likes of live posts.
    let mut expected_likes: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for (user, post) in &likes {
        expected_likes
            .entry(*user)
            .or_default()
            .insert(post.to_string());
    }
    let users: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users")
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
    for user in users {
        let hash: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(keys::user_likes(user))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let got: BTreeSet<String> = hash
            .into_iter()
            .filter(|(post, v)| *v > 0 && live.contains_key(post))
            .map(|(post, _)| post)
            .collect();
        let want = expected_likes.remove(&user).unwrap_or_default();
        if got != want {
            problems.push(format!(
                "likes of {user}: read model {} vs Postgres {}",
                got.len(),
                want.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let n = problems.len();
        problems.truncate(5);
        Err(format!(
            "{n} differences, e.g.:\n  {}",
            problems.join("\n  ")
        ))
    }
}
