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
use community_shared::views::{AuthorView, PostView, ViewVersion, rfc3339};
use redis::aio::ConnectionManager;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::config::FeedLimits;

/// Tombstones of deleted posts are kept this long (they stop stale writes).
const TOMBSTONE_TTL_SECS: u64 = 7 * 86_400;

/// Writes a stored view unless the stored one is newer (or the same).
const VIEW_CAS: &str = r#"
local cur = redis.call('GET', KEYS[1])
local pv, av = tonumber(ARGV[1]), tonumber(ARGV[2])
if cur then
  local cp, ca = string.match(cur, '^(%d+)%.(%d+)|')
  if cp and (pv < tonumber(cp) or av < tonumber(ca)) then return 0 end
end
local val = ARGV[1] .. '.' .. ARGV[2] .. '|' .. ARGV[3]
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], val, 'EX', ARGV[4])
else
  redis.call('SET', KEYS[1], val)
end
return 1
"#;

/// Sets like states (post id → signed post version) unless the stored one is newer.
const LIKES_CAS: &str = r#"
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local new = tonumber(ARGV[i + 1])
  if (not cur) or math.abs(new) >= math.abs(tonumber(cur)) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
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
        // An empty JSON part is a tombstone (see community_shared::views).
        let json = if post.deleted {
            String::new()
        } else {
            serde_json::to_string(&post.view).unwrap_or_default()
        };
        let mut cmd = Self::evalsha(&self.view_cas, &keys::post_view(post.id));
        cmd.arg(post.version.post)
            .arg(post.version.author)
            .arg(json)
            .arg(TOMBSTONE_TTL_SECS);
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
