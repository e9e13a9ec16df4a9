//! The read model: reading current state from Postgres and writing it to Redis.
//!
//! State-based and idempotent: a view is always rebuilt from the current rows,
//! never patched from an event, so re-delivery and reordering do no harm.
//! Every write is a compare-and-set on versions (small Lua scripts, each
//! touching one key) so a replica holding an older snapshot can never
//! overwrite a newer one. Both the consumer and `rebuild` write through here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use community_shared::keys;
use community_shared::views::{self, AuthorView, PostView, ViewVersion, rfc3339};
use redis::aio::ConnectionManager;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::config::FeedLimits;

/// Tombstones of deleted posts are kept this long (they stop stale writes).
const TOMBSTONE_TTL_SECS: u64 = 7 * 86_400;

/// Writes a stored view (ARGV: post version, author version, the stored
/// value, a TTL in seconds or 0) unless the stored one is newer.
///
/// It reads only the stored version prefix, at most 40 bytes (two 19-digit
/// numbers, '.' and '|'), not the whole view, and the client sends the value
/// ready to store: copying ~900 bytes in and out of Lua per view was most of
/// the script's cost, and the script most of Redis's time in a rebuild.
const VIEW_CAS: &str = r#"
local cp, ca = string.match(redis.call('GETRANGE', KEYS[1], 0, 40), '^(%d+)%.(%d+)|')
if cp and (tonumber(ARGV[1]) < tonumber(cp) or tonumber(ARGV[2]) < tonumber(ca)) then
  return 0
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
end
return 1
"#;

/// Sets like states (ARGV: post id, signed post version, ...) unless the
/// stored one is newer: one HMGET and one HSET for all of them, because each
/// `redis.call` costs about as much as the work it does, and a user's likes
/// come by the hundred in a rebuild. In chunks, as Lua's `unpack` takes at
/// most a few thousand values.
const LIKES_CAS: &str = r#"
local chunk = 500
for first = 1, #ARGV, 2 * chunk do
  local last = math.min(first + 2 * chunk - 1, #ARGV)
  local fields = {}
  for i = first, last, 2 do fields[#fields + 1] = ARGV[i] end
  local cur = redis.call('HMGET', KEYS[1], unpack(fields))
  local set = {}
  for j = 1, #fields do
    local new = ARGV[first + 2 * j - 1]
    local c = cur[j]
    if (not c) or math.abs(tonumber(new)) >= math.abs(tonumber(c)) then
      set[#set + 1] = fields[j]
      set[#set + 1] = new
    end
  end
  if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
end
return 1
"#;

/// Raises an integer key to ARGV[1] if it is lower.
const MAX_SET: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;

/// The current state of one post, as read from Postgres.
#[derive(Debug, Clone)]
pub struct PostState {
    pub id: Uuid,
    pub seq: i64,
    pub author_id: Uuid,
    pub deleted: bool,
    pub version: ViewVersion,
    pub view: PostView,
    /// Of the users asked about, those who like this post.
    pub likers: Vec<Uuid>,
}

pub const POST_COLUMNS: &str = "p.id, p.seq, p.author_id, p.content, p.like_count,
       p.version AS post_version, p.created_at, p.deleted_at IS NOT NULL AS deleted,
       u.username, u.display_name, u.avatar_url, u.version AS author_version";

pub fn post_from_row(row: &PgRow) -> Result<PostState, sqlx::Error> {
    let id: Uuid = row.try_get("id")?;
    let author_id: Uuid = row.try_get("author_id")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok(PostState {
        id,
        seq: row.try_get("seq")?,
        author_id,
        deleted: row.try_get("deleted")?,
        version: ViewVersion {
            post: row.try_get("post_version")?,
            author: row.try_get("author_version")?,
        },
        view: PostView {
            id,
            author: AuthorView {
                id: author_id,
                username: row.try_get("username")?,
                display_name: row.try_get("display_name")?,
                avatar_url: row.try_get("avatar_url")?,
            },
            content: row.try_get("content")?,
            created_at: rfc3339(created_at),
            like_count: row.try_get("like_count")?,
            liked_by_me: false,
        },
        likers: row
            .try_get::<Option<Vec<Uuid>>, _>("likers")
            .ok()
            .flatten()
            .unwrap_or_default(),
    })
}

/// One query for a whole batch: the posts and, for the given users, who likes them.
pub async fn read_posts(
    db: &mut PgConnection,
    post_ids: &[Uuid],
    like_users: &[Uuid],
) -> Result<Vec<PostState>, sqlx::Error> {
    let sql = format!(
        "SELECT {POST_COLUMNS},
                ARRAY(SELECT pl.user_id FROM post_likes pl
                       WHERE pl.post_id = p.id AND pl.user_id = ANY($2)) AS likers
           FROM posts p JOIN users u ON u.id = p.author_id
          WHERE p.id = ANY($1)"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(post_ids)
        .bind(like_users)
        .fetch_all(db)
        .await?;
    rows.iter().map(post_from_row).collect()
}

/// A page of one author's live posts, newest first, below `before_seq`.
pub async fn read_author_posts(
    db: &mut PgConnection,
    author: Uuid,
    before_seq: i64,
    limit: i64,
) -> Result<Vec<PostState>, sqlx::Error> {
    let sql = format!(
        "SELECT {POST_COLUMNS}
           FROM posts p JOIN users u ON u.id = p.author_id
          WHERE p.author_id = $1 AND p.deleted_at IS NULL AND p.seq < $2
          ORDER BY p.seq DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(author)
        .bind(before_seq)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(post_from_row).collect()
}

/// The current version of a user's profile (None if the user does not exist).
pub async fn profile_version(
    db: &mut PgConnection,
    user: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(db)
        .await
}

/// Builds Redis pipelines that bring the read model to a given state.
#[derive(Clone)]
pub struct Writer {
    view_cas: redis::Script,
    likes_cas: redis::Script,
    max_set: redis::Script,
    limits: FeedLimits,
}

/// One pipeline under construction, with the feeds it must trim at the end.
pub struct Batch {
    pipe: redis::Pipeline,
    feeds: BTreeSet<String>,
}

impl Writer {
    pub fn new(limits: FeedLimits) -> Self {
        Self {
            view_cas: redis::Script::new(VIEW_CAS),
            likes_cas: redis::Script::new(LIKES_CAS),
            max_set: redis::Script::new(MAX_SET),
            limits,
        }
    }

    pub fn batch(&self) -> Batch {
        Batch {
            pipe: redis::pipe(),
            feeds: BTreeSet::new(),
        }
    }

    fn evalsha(script: &redis::Script, key: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(1).arg(key);
        cmd
    }

    /// Like states: user → [(post, liked, post version)].
    pub fn likes(&self, b: &mut Batch, pairs: &BTreeMap<Uuid, Vec<(Uuid, bool, i64)>>) {
        for (user, states) in pairs {
            let mut cmd = Self::evalsha(&self.likes_cas, &keys::user_likes(*user));
            for (post, liked, version) in states {
                cmd.arg(post.to_string())
                    .arg(if *liked { *version } else { -*version });
            }
            b.pipe.add_command(cmd).ignore();
        }
    }

    /// Feed membership and views of `posts`, feeds first: once a view shows a
    /// version, its feed entries are in place (read-your-writes checks the view).
    pub fn posts(&self, b: &mut Batch, posts: &[PostState]) {
        for post in posts {
            self.feeds(b, post);
        }
        for post in posts {
            self.view(b, post);
        }
    }

    fn feeds(&self, b: &mut Batch, post: &PostState) {
        let id = post.id.to_string();
        let author_feed = keys::author_feed(post.author_id);
        if post.deleted {
            b.pipe.zrem(keys::GLOBAL_FEED, &id).ignore();
            b.pipe.zrem(&author_feed, &id).ignore();
        } else {
            // The unique sequence number is the score: cursors never meet a tie.
            let score = post.seq as f64;
            b.pipe.zadd(keys::GLOBAL_FEED, &id, score).ignore();
            b.pipe.zadd(&author_feed, &id, score).ignore();
            b.feeds.insert(keys::GLOBAL_FEED.to_string());
            b.feeds.insert(author_feed);
        }
    }

    /// The post view itself (a tombstone when deleted).
    fn view(&self, b: &mut Batch, post: &PostState) {
        let stored = views::encode_stored(post.version, (!post.deleted).then_some(&post.view));
        let ttl = if post.deleted { TOMBSTONE_TTL_SECS } else { 0 };
        let mut cmd = Self::evalsha(&self.view_cas, &keys::post_view(post.id));
        cmd.arg(post.version.post)
            .arg(post.version.author)
            .arg(stored)
            .arg(ttl);
        b.pipe.add_command(cmd).ignore();
    }

    /// Records that a profile version is in every view of the user's posts.
    pub fn profile_version(&self, b: &mut Batch, user: Uuid, version: i64) {
        let mut cmd = Self::evalsha(&self.max_set, &keys::profile_version(user));
        cmd.arg(version);
        b.pipe.add_command(cmd).ignore();
    }

    /// Any other command (XACK, the marker, ...), run after the writes.
    pub fn then(&self, b: &mut Batch, cmd: redis::Cmd) {
        b.pipe.add_command(cmd).ignore();
    }

    /// Trims the touched feeds to their windows and runs the pipeline.
    ///
    /// Scripts are sent by hash; after a Redis restart (empty script cache)
    /// they are loaded and the pipeline is sent again, which is safe because
    /// every write in it is idempotent.
    pub async fn run(&self, conn: &mut ConnectionManager, mut b: Batch) -> redis::RedisResult<()> {
        for feed in &b.feeds {
            let keep = if feed == keys::GLOBAL_FEED {
                self.limits.global
            } else {
                self.limits.author
            };
            b.pipe
                .zremrangebyrank(feed, 0, -(keep as isize) - 1)
                .ignore();
        }
        if b.pipe.cmd_iter().next().is_none() {
            return Ok(()); // nothing to write (Redis refuses an empty pipeline)
        }
        match b.pipe.query_async::<()>(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_scripts(conn).await?;
                b.pipe.query_async::<()>(conn).await
            }
            other => other,
        }
    }

    pub async fn load_scripts(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        for s in [&self.view_cas, &self.likes_cas, &self.max_set] {
            s.load_async(conn).await?;
        }
        Ok(())
    }
}

/// The compare-and-set scripts against a real Redis.
#[cfg(test)]
mod tests {
    use community_shared::views::decode_stored;
    use community_testkit::Redis;

    use super::*;

    fn post(version: ViewVersion, deleted: bool) -> PostState {
        let id = Uuid::new_v4();
        let author = AuthorView {
            id: Uuid::new_v4(),
            username: "ann".into(),
            display_name: None,
            avatar_url: None,
        };
        PostState {
            id,
            seq: 1,
            author_id: author.id,
            deleted,
            version,
            view: PostView {
                id,
                author,
                content: format!("at {version:?}"),
                created_at: "2026-01-01T00:00:00.000000Z".into(),
                like_count: version.post,
                liked_by_me: false,
            },
            likers: Vec::new(),
        }
    }

    async fn setup() -> (Redis, ConnectionManager, Writer) {
        let server = Redis::start().await;
        let client = redis::Client::open(server.url()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let writer = Writer::new(FeedLimits {
            global: 10,
            author: 10,
        });
        (server, conn, writer)
    }

    async fn write_view(writer: &Writer, conn: &mut ConnectionManager, post: &PostState) {
        let mut batch = writer.batch();
        writer.view(&mut batch, post);
        writer.run(conn, batch).await.unwrap();
    }

    #[tokio::test]
    async fn a_view_is_replaced_only_by_a_state_at_least_as_new() {
        let (_server, mut conn, writer) = setup().await;
        let v = |post, author| ViewVersion { post, author };
        let stored = async |conn: &mut ConnectionManager, p: &PostState| -> Option<String> {
            redis::cmd("GET")
                .arg(keys::post_view(p.id))
                .query_async(conn)
                .await
                .unwrap()
        };
        let mut p = post(v(7, 3), false);
        write_view(&writer, &mut conn, &p).await;
        let want = views::encode_stored(v(7, 3), Some(&p.view));
        assert_eq!(stored(&mut conn, &p).await.as_deref(), Some(want.as_str()));

        // Older in either part: refused. Newer, or the same again: written.
        for (version, written) in [
            (v(6, 9), false),
            (v(9, 2), false),
            (v(7, 3), true),
            (v(8, 3), true),
            (v(12_345_678_901_234, 4), true),
        ] {
            let before = stored(&mut conn, &p).await;
            p.version = version;
            p.view.content = format!("at {version:?}");
            write_view(&writer, &mut conn, &p).await;
            let after = stored(&mut conn, &p).await;
            if written {
                let want = views::encode_stored(version, Some(&p.view));
                assert_eq!(after.as_deref(), Some(want.as_str()), "{version:?}");
            } else {
                assert_eq!(after, before, "{version:?} overwrote a newer view");
            }
        }

        // A tombstone: the version and no JSON, kept for a week only.
        p.deleted = true;
        p.version = v(12_345_678_901_235, 4);
        write_view(&writer, &mut conn, &p).await;
        let raw = stored(&mut conn, &p).await.unwrap();
        assert_eq!(decode_stored(&raw), Some((p.version, "")));
        let ttl: i64 = redis::cmd("TTL")
            .arg(keys::post_view(p.id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            ttl > 0 && ttl <= TOMBSTONE_TTL_SECS as i64,
            "tombstone TTL {ttl}"
        );
        // A live view has none.
        let live = post(v(1, 1), false);
        write_view(&writer, &mut conn, &live).await;
        let ttl: i64 = redis::cmd("TTL")
            .arg(keys::post_view(live.id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1);
    }

    #[tokio::test]
    async fn like_states_keep_the_newest_across_chunks_of_many() {
        let (_server, mut conn, writer) = setup().await;
        let user = Uuid::new_v4();
        let key = keys::user_likes(user);
        // More than two of the script's chunks (500) for one user.
        let posts: Vec<Uuid> = (0..1_234).map(|_| Uuid::new_v4()).collect();
        // Stored before: newer than what comes for posts[0] (unliked at 9),
        // older for posts[1] (liked at 2), the same age for posts[700].
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(posts[0].to_string())
            .arg(-9)
            .arg(posts[1].to_string())
            .arg(2)
            .arg(posts[700].to_string())
            .arg(-5)
            .query_async(&mut conn)
            .await
            .unwrap();
        let states: Vec<(Uuid, bool, i64)> = posts.iter().map(|p| (*p, true, 5)).collect();
        let mut batch = writer.batch();
        writer.likes(&mut batch, &BTreeMap::from([(user, states)]));
        writer.run(&mut conn, batch).await.unwrap();

        let stored: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored.len(), posts.len());
        for (i, p) in posts.iter().enumerate() {
            let want = if i == 0 { -9 } else { 5 };
            assert_eq!(stored.get(&p.to_string()), Some(&want), "post {i}");
        }
    }
}
