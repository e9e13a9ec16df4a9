//! Reads of the Redis read model: feed pages, single views, like states and
//! read-your-writes checks. Two round trips per page: the feed range, then
//! one pipeline with the views (MGET), the reader's likes (HMGET) and the
//! next cursor (ZSCORE).

use std::time::{Duration, Instant};

use bytes::Bytes;
use community_shared::config::ConfigError;
use community_shared::consistency::ConsistencyToken;
use community_shared::keys;
use community_shared::views::{decode_stored_bytes, write_personalised};
use community_shared::{redis_conn, redis_span};
use redis::aio::ConnectionManager;
use tracing::Instrument;
use uuid::Uuid;

use crate::cursor;
use crate::resp::{self, Encode, Reply};

/// A page of a feed, rendered as JSON.
pub struct Page {
    pub json: Vec<u8>,
    pub items: usize,
}

/// The JSON part of a stored view; `None` for a malformed value or a tombstone.
fn stored_json(raw: &[u8]) -> Option<&[u8]> {
    decode_stored_bytes(raw)
        .map(|(_, json)| json)
        .filter(|j| !j.is_empty())
}

/// The readiness/consistency outcome of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Consistent,
    Stale,
}

/// The connection the reads go over: the lean client ([`resp`]) for plain
/// TCP and Unix sockets, redis-rs for TLS (`rediss://`), which the lean
/// client does not speak. Both take the same commands and give the same replies.
#[derive(Clone)]
pub enum Backend {
    Lean(resp::Client),
    RedisRs(ConnectionManager),
}

/// Commands for one round trip, encoded for the backend that sends them.
pub enum Commands {
    Lean(resp::Pipeline),
    RedisRs(redis::Pipeline),
}

impl Encode for Commands {
    fn command_parts<'a, const N: usize>(
        &mut self,
        name: &str,
        args: impl ExactSizeIterator<Item = [&'a [u8]; N]>,
    ) -> &mut Self {
        match self {
            Commands::Lean(p) => {
                p.command_parts(name, args);
            }
            Commands::RedisRs(p) => {
                p.cmd(name);
                for parts in args {
                    p.arg(parts.concat());
                }
            }
        }
        self
    }
}

impl Backend {
    /// From `REDIS_URL` (named `var` in errors). Connects lazily, with the
    /// deadlines of every other Redis connection here (`redis_conn`).
    pub fn connect(url: &str, var: &str) -> Result<Self, ConfigError> {
        let client = redis_conn::client(url, var)?;
        match resp::Client::new(client.get_connection_info()) {
            Some(lean) => Ok(Backend::Lean(lean)),
            None => redis_conn::manager(client, var).map(Backend::RedisRs),
        }
    }

    pub fn commands(&self) -> Commands {
        match self {
            Backend::Lean(_) => Commands::Lean(resp::Pipeline::new()),
            Backend::RedisRs(_) => Commands::RedisRs(redis::pipe()),
        }
    }

    /// Sends `commands` in one round trip; one reply per command.
    pub async fn query(&self, commands: Commands) -> Result<Vec<Reply>, resp::Error> {
        match (self, commands) {
            (Backend::Lean(client), Commands::Lean(p)) => client.query(p).await,
            (Backend::RedisRs(conn), Commands::RedisRs(p)) => {
                let values: Vec<redis::Value> =
                    p.query_async(&mut conn.clone()).await.map_err(error_of)?;
                Ok(values.into_iter().map(reply_of).collect())
            }
            _ => Err(resp::Error::Protocol(
                "commands built for another backend".into(),
            )),
        }
    }

    /// [`Self::query`] in a client span named `op`.
    pub async fn traced(&self, commands: Commands, op: &str) -> Result<Vec<Reply>, resp::Error> {
        self.query(commands).instrument(redis_span!(op)).await
    }

    /// One command, one reply.
    async fn one<A: AsRef<[u8]>>(&self, name: &str, args: &[A]) -> Result<Reply, resp::Error> {
        let mut c = self.commands();
        c.command(name, args);
        first(self.query(c).await?)
    }

    /// `PING`, for the readiness check.
    pub async fn ping(&self) -> Result<(), String> {
        match self.one("PING", &[] as &[&str]).await {
            Ok(Reply::Status(_)) | Ok(Reply::Bulk(_)) => Ok(()),
            Ok(other) => Err(format!("unexpected PING reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// redis-rs's reply as ours (RESP2 shapes; others cannot come from our commands).
fn reply_of(v: redis::Value) -> Reply {
    match v {
        redis::Value::Nil => Reply::Nil,
        redis::Value::Int(i) => Reply::Int(i),
        redis::Value::BulkString(b) => Reply::Bulk(Bytes::from(b)),
        redis::Value::SimpleString(s) => Reply::Status(Bytes::from(s)),
        redis::Value::Okay => Reply::Status(Bytes::from_static(b"OK")),
        redis::Value::Array(items) => Reply::Array(items.into_iter().map(reply_of).collect()),
        redis::Value::ServerError(e) => Reply::Error(format!("{e:?}")),
        other => Reply::Error(format!("unsupported reply {other:?}")),
    }
}

/// redis-rs's error as ours: a lost or late connection, or Redis's own error reply.
fn error_of(e: redis::RedisError) -> resp::Error {
    if e.is_timeout() {
        resp::Error::Timeout(redis_conn::RESPONSE_TIMEOUT)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        resp::Error::Closed(e.to_string())
    } else {
        resp::Error::Server(e.to_string())
    }
}

fn first(replies: Vec<Reply>) -> Result<Reply, resp::Error> {
    replies
        .into_iter()
        .next()
        .ok_or_else(|| resp::Error::Protocol("no reply".into()))
}

fn text(b: &Bytes) -> Result<&str, resp::Error> {
    std::str::from_utf8(b).map_err(|_| resp::Error::Protocol("a reply that is not UTF-8".into()))
}

fn number<T: std::str::FromStr>(b: &Bytes, what: &str) -> Result<T, resp::Error> {
    text(b)?
        .parse()
        .map_err(|_| resp::Error::Protocol(format!("{what} that is not a number")))
}

/// Which page: of the feed at key `feed`, `limit` posts strictly below the
/// cursor score `before`, with `liked_by_me` for `reader`.
#[derive(Debug, Clone, Copy)]
pub struct PageOf<'a> {
    pub feed: &'a str,
    pub limit: usize,
    pub before: Option<i64>,
    pub reader: Option<Uuid>,
}

#[derive(Clone)]
pub struct ReadModel {
    backend: Backend,
}

fn liked(raw: Option<&[u8]>) -> bool {
    raw.and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
        .is_some_and(|v| v > 0)
}

impl ReadModel {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// One page, newest first.
    pub async fn page(&self, of: PageOf<'_>) -> Result<Page, resp::Error> {
        if let Some(page) = self.read_page(of, false).await? {
            return Ok(page);
        }
        // The page's last post left the feed between the two round trips, so
        // its score (the next cursor) is gone: read again with the scores.
        self.page_with_scores(of).await
    }

    /// [`Self::page`]'s fallback, which reads every score with the range: the
    /// same page, at more cost to Redis (public so tests can compare the two).
    pub async fn page_with_scores(&self, of: PageOf<'_>) -> Result<Page, resp::Error> {
        self.read_page(of, true)
            .await?
            .ok_or_else(|| resp::Error::Protocol("a page without its cursor".into()))
    }

    /// Two round trips: the range of ids, then the views (and the reader's
    /// likes) in one pipeline. The next cursor is the score of the page's
    /// last post. Asking the range for every score (WITHSCORES) cost Redis a
    /// third of its throughput on that command and doubled the reply to
    /// parse, so by default the one score needed rides along in the second
    /// round trip (ZSCORE); `None` when that post was removed meanwhile.
    async fn read_page(
        &self,
        of: PageOf<'_>,
        with_scores: bool,
    ) -> Result<Option<Page>, resp::Error> {
        let PageOf {
            feed: feed_key,
            limit,
            before,
            reader,
        } = of;
        let max = before.map_or_else(|| "+inf".to_string(), |s| format!("({s}"));
        // One more than asked, to know whether another page exists.
        let fetch = itoa::Buffer::new().format(limit + 1).to_string();
        let mut range = self.backend.commands();
        let mut args = vec![
            feed_key, &max, "-inf", "BYSCORE", "REV", "LIMIT", "0", &fetch,
        ];
        if with_scores {
            args.push("WITHSCORES");
        }
        range.command("ZRANGE", &args);
        let flat = first(self.backend.traced(range, "ZRANGE").await?)?.into_array()?;
        // [id, id, ...], or [id, score, id, score, ...] with the scores.
        let (mut ids, mut scores) = (Vec::with_capacity(flat.len()), Vec::new());
        for (i, reply) in flat.into_iter().enumerate() {
            let value = reply.into_bytes()?.unwrap_or_default();
            if with_scores && i % 2 == 1 {
                scores.push(value);
            } else {
                ids.push(value);
            }
        }
        let has_more = ids.len() > limit;
        ids.truncate(limit);
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"items\":[");
        let mut items = 0;
        // The next cursor: the last kept post's score, from the range when it
        // carried the scores, else by ZSCORE in the second round trip.
        let mut cursor_score = if has_more {
            limit.checked_sub(1).and_then(|i| scores.get(i)).cloned()
        } else {
            None
        };
        if let Some(last) = ids.last() {
            let mut second = self.backend.commands();
            second.command_parts("MGET", ids.iter().map(|id| keys::post_view_parts(id)));
            if let Some(user) = reader {
                let likes_key = keys::user_likes(user);
                let mut args: Vec<&[u8]> = Vec::with_capacity(ids.len() + 1);
                args.push(likes_key.as_bytes());
                args.extend(ids.iter().map(|id| id.as_ref()));
                second.command("HMGET", &args);
            }
            let want_score = has_more && !with_scores;
            if want_score {
                second.command("ZSCORE", &[feed_key.as_bytes(), last.as_ref()]);
            }
            let op = match (reader.is_some(), want_score) {
                (false, false) => "MGET",
                (true, false) => "PIPELINE MGET HMGET",
                (false, true) => "PIPELINE MGET ZSCORE",
                (true, true) => "PIPELINE MGET HMGET ZSCORE",
            };
            let mut replies = self.backend.traced(second, op).await?.into_iter();
            let mut next = || {
                replies
                    .next()
                    .ok_or_else(|| resp::Error::Protocol("a reply short".into()))
            };
            let views = next()?.into_array()?;
            let likes = match reader {
                Some(_) => next()?.into_array()?,
                None => Vec::new(),
            };
            if want_score {
                cursor_score = next()?.into_bytes()?;
                if cursor_score.is_none() {
                    return Ok(None);
                }
            }
            let views = views
                .into_iter()
                .map(Reply::into_bytes)
                .collect::<Result<Vec<_>, _>>()?;
            let likes = likes
                .into_iter()
                .map(Reply::into_bytes)
                .collect::<Result<Vec<_>, _>>()?;
            out.reserve(
                views
                    .iter()
                    .map(|v| v.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>()
                    + 64,
            );
            for (i, raw) in views.iter().enumerate() {
                // A missing view or a tombstone: the post is gone; skip the stale feed entry.
                // Views stay bytes: they were written as JSON by the projector and
                // go out as they are, without a UTF-8 pass or a copy into a String.
                let Some(json) = raw.as_deref().and_then(stored_json) else {
                    continue;
                };
                if items > 0 {
                    out.push(b',');
                }
                write_personalised(
                    json,
                    liked(likes.get(i).and_then(|v| v.as_deref())),
                    &mut out,
                );
                items += 1;
            }
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        match cursor_score {
            Some(score) => {
                let score: f64 = number(&score, "a score")?;
                out.push(b'"');
                out.extend_from_slice(cursor::encode(score as i64).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        Ok(Some(Page { json: out, items }))
    }

    /// One post view, or `None` when absent or deleted.
    pub async fn post(
        &self,
        post: Uuid,
        reader: Option<Uuid>,
    ) -> Result<Option<Vec<u8>>, resp::Error> {
        let id = post.to_string();
        let mut c = self.backend.commands();
        c.command("GET", &[keys::post_view(post)]);
        let op = match reader {
            Some(user) => {
                c.command("HGET", &[keys::user_likes(user), id]);
                "PIPELINE GET HGET"
            }
            None => "GET",
        };
        let mut replies = self.backend.traced(c, op).await?.into_iter();
        let raw = replies.next().map_or(Ok(None), Reply::into_bytes)?;
        let like = replies.next().map_or(Ok(None), Reply::into_bytes)?;
        let Some(json) = raw.as_deref().and_then(stored_json) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(json.len() + 8);
        write_personalised(json, liked(like.as_deref()), &mut out);
        Ok(Some(out))
    }

    /// Whether the read model already holds the write a token names.
    pub async fn holds(&self, token: &ConsistencyToken) -> Result<bool, resp::Error> {
        let view_version = |raw: Option<Bytes>| {
            raw.as_deref()
                .and_then(decode_stored_bytes)
                .map(|(v, _)| v.post)
        };
        Ok(match token {
            ConsistencyToken::Post { post_id, version } => {
                let raw = self.get(keys::post_view(*post_id)).await?;
                view_version(raw).is_some_and(|v| v >= *version)
            }
            ConsistencyToken::PostDeleted { post_id, version } => {
                let raw = self.get(keys::post_view(*post_id)).await?;
                view_version(raw).is_none_or(|v| v >= *version)
            }
            ConsistencyToken::Like {
                post_id,
                user_id,
                version,
            } => {
                let mut both = self.backend.commands();
                both.command("GET", &[keys::post_view(*post_id)])
                    .command("HGET", &[keys::user_likes(*user_id), post_id.to_string()]);
                let mut replies = self.backend.query(both).await?.into_iter();
                let view = replies.next().map(Reply::into_bytes).transpose()?.flatten();
                let like = replies.next().map(Reply::into_bytes).transpose()?.flatten();
                // The like state is a post version, negative for "not liked".
                let like_version = like
                    .map(|raw| number::<i64>(&raw, "a like state").map(i64::abs))
                    .transpose()?;
                view_version(view).is_some_and(|v| v >= *version)
                    && like_version.is_some_and(|v| v >= *version)
            }
            ConsistencyToken::Profile { user_id, version } => {
                match self.get(keys::profile_version(*user_id)).await? {
                    None => false,
                    Some(raw) => number::<i64>(&raw, "a profile version")? >= *version,
                }
            }
        })
    }

    async fn get(&self, key: String) -> Result<Option<Bytes>, resp::Error> {
        self.backend.one("GET", &[key]).await?.into_bytes()
    }

    /// Waits, polling with a short backoff, until the read model holds `token` or `bound` passes.
    pub async fn wait_for(
        &self,
        token: &ConsistencyToken,
        bound: Duration,
    ) -> Result<Freshness, resp::Error> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(1);
        let outcome = loop {
            if self.holds(token).await? {
                break Freshness::Consistent;
            }
            let left = bound.saturating_sub(started.elapsed());
            if left.is_zero() {
                break Freshness::Stale;
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        };
        let label = match outcome {
            Freshness::Consistent => "consistent",
            Freshness::Stale => "stale",
        };
        metrics::counter!("query_consistency_waits_total", "outcome" => label).increment(1);
        metrics::histogram!("query_consistency_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }
}
