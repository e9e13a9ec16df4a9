//! The consumer loop: one consumer group on the event stream.
//!
//! * The group is created at start if missing (from the stream's beginning).
//! * Entries are read in batches (XREADGROUP); each batch costs one Postgres
//!   query (plus one per renamed author) and one Redis pipeline; its XACK
//!   goes out with the next XREADGROUP, in the same round trip.
//! * Entries left pending by a dead consumer are reclaimed (XAUTOCLAIM) once
//!   idle for `PROJECTOR_CLAIM_IDLE_MS`; an entry delivered more than
//!   `PROJECTOR_MAX_DELIVERIES` times, or one that cannot be decoded, goes to
//!   the dead-letter stream with the reason and is acked, so it never blocks
//!   the group.
//! * A dependency outage is not the entries' fault: the batch stays pending,
//!   is retried with backoff and is never dead-lettered for it.
//! * If the read model is missing (first start, or Redis lost its data) the
//!   projector rebuilds it from Postgres by itself, then goes on.
//! * On shutdown the current batch is finished and acked before exiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use community_shared::events::{DomainEvent, Envelope, field};
use community_shared::keys;
use community_shared::shutdown::Shutdown;
use community_shared::{postgres_span, redis_span, telemetry};
use community_store::HeldConnection;
use opentelemetry::trace::TraceContextExt;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use sqlx::PgPool;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::config::ConsumerConfig;
use crate::maintenance;
use crate::model::{self, Writer};
use crate::rebuild;

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl ProjectError {
    /// A dependency outage: retry later, and never blame the entries for it.
    fn is_outage(&self) -> bool {
        match self {
            Self::Db(e) => community_store::is_unavailable(e),
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_connection_refusal()
            }
        }
    }
}

/// A stream entry, decoded or not.
struct Entry {
    id: String,
    fields: HashMap<String, String>,
    decoded: Result<Envelope, String>,
}

fn to_entry(raw: StreamId) -> Entry {
    let fields: HashMap<String, String> = raw
        .map
        .iter()
        .map(|(k, v)| {
            let s = redis::from_redis_value_ref::<String>(v).unwrap_or_default();
            (k.clone(), s)
        })
        .collect();
    let decoded = Envelope::from_fields(&fields).map_err(|e| e.to_string());
    Entry {
        id: raw.id,
        fields,
        decoded,
    }
}

pub struct Consumer {
    pool: PgPool,
    /// The re-reads' connection, kept from batch to batch (a hot backend).
    db: HeldConnection,
    redis: ConnectionManager,
    writer: Writer,
    config: ConsumerConfig,
    rebuild_batch: i64,
    shutdown: Shutdown,
    /// Own failures per entry id (outages excluded), for dead-lettering.
    failures: HashMap<String, usize>,
    /// Entries projected but not acked yet: the ack rides with the next read.
    unacked: Vec<String>,
}

impl Consumer {
    pub fn new(
        pool: PgPool,
        redis: ConnectionManager,
        writer: Writer,
        config: ConsumerConfig,
        rebuild_batch: i64,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            db: HeldConnection::new(pool.clone()),
            pool,
            redis,
            writer,
            config,
            rebuild_batch,
            shutdown,
            failures: HashMap::new(),
            unacked: Vec::new(),
        }
    }

    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.wait() => false,
        }
    }

    /// Creates the group (and the stream) if missing. Reads start at the stream's
    /// beginning: whatever is in the stream has not been seen by this group.
    async fn ensure_group(&mut self) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::STREAM)
            .arg(keys::CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.redis)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(group = keys::CONSUMER_GROUP, "consumer group created");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Rebuilds the read model if its marker is missing and no other replica is on it.
    async fn ensure_read_model(&mut self) -> Result<(), ProjectError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(keys::READ_MODEL_MARKER)
            .query_async(&mut self.redis)
            .await?;
        if exists {
            return Ok(());
        }
        let lock: Option<String> = redis::cmd("SET")
            .arg(rebuild::LOCK_KEY)
            .arg(&self.config.consumer)
            .arg("NX")
            .arg("PX")
            .arg(600_000)
            .query_async(&mut self.redis)
            .await?;
        if lock.is_none() {
            return Ok(()); // another replica is rebuilding; keep consuming meanwhile
        }
        tracing::warn!(
            "read model missing (first start or Redis lost its data): rebuilding from Postgres"
        );
        let result = rebuild::run(
            &self.pool,
            &mut self.redis,
            &self.writer,
            self.rebuild_batch,
        )
        .await;
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(rebuild::LOCK_KEY)
            .query_async(&mut self.redis)
            .await;
        result
    }

    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut read_own_pending = true;
        let mut last_claim = Instant::now();
        let mut last_maintenance = Instant::now() - Duration::from_secs(60);
        // Whether the consumer group and the read model are known to exist.
        // Checked at start, after any failure (a Redis that restarted empty
        // breaks the connection; a flushed one answers NOGROUP) and every
        // 10 s, not before every read: that was two round trips per batch,
        // one of them answered with a BUSYGROUP error (hundreds a second in
        // Redis's error statistics under load).
        let mut verified = false;
        let claim_every =
            (self.config.claim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let mut scripts_loaded = false;

        while !self.shutdown.is_triggered() {
            let step: Result<(), ProjectError> = async {
                if !scripts_loaded {
                    self.writer.load_scripts(&mut self.redis).await?;
                    scripts_loaded = true;
                }
                let maintenance_due = last_maintenance.elapsed() >= Duration::from_secs(10);
                if !verified || maintenance_due {
                    self.ensure_group().await?;
                    self.ensure_read_model().await?;
                    verified = true;
                }
                if maintenance_due {
                    last_maintenance = Instant::now();
                    maintenance::run(&mut self.redis).await?;
                }
                if last_claim.elapsed() >= claim_every {
                    last_claim = Instant::now();
                    self.reclaim().await?;
                }
                // After a failure (or at start) first retry what this consumer holds.
                let start = if read_own_pending { "0" } else { ">" };
                // The last batch's ack and the next read share a round trip:
                // one less per batch on the way from commit to view. Until it
                // is acked a projected entry stays pending; if the ack is lost
                // it is read again and projected again, which is idempotent.
                let mut read = redis::pipe();
                if !self.unacked.is_empty() {
                    read.add_command(ack(&self.unacked)).ignore();
                }
                read.cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::CONSUMER_GROUP)
                    .arg(&self.config.consumer)
                    .arg("COUNT")
                    .arg(self.config.batch_size)
                    .arg("BLOCK")
                    .arg(self.config.block.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(keys::STREAM)
                    .arg(start);
                let (reply,): (StreamReadReply,) = read.query_async(&mut self.redis).await?;
                self.unacked.clear();
                let entries: Vec<Entry> = reply
                    .keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(to_entry)
                    .collect();
                if read_own_pending && entries.is_empty() {
                    read_own_pending = false;
                }
                if !entries.is_empty() {
                    self.process(entries).await?;
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    read_own_pending = true;
                    verified = false;
                    if matches!(&e, ProjectError::Redis(r) if r.code() == Some("NOGROUP")) {
                        continue; // the stream was lost with Redis; the group is recreated next round
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "projection step failed");
                    if !self.pause(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // The last batch is acked before exiting.
        if !self.unacked.is_empty()
            && let Err(e) = ack(&self.unacked).query_async::<()>(&mut self.redis).await
        {
            tracing::warn!(error = %e, "could not ack the last batch; it will be projected again");
        }
        tracing::info!("projector stopped");
    }

    /// Takes over entries idle too long on other (dead) consumers.
    async fn reclaim(&mut self) -> Result<(), ProjectError> {
        let mut start = "0-0".to_string();
        for _ in 0..10 {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(keys::STREAM)
                .arg(keys::CONSUMER_GROUP)
                .arg(&self.config.consumer)
                .arg(self.config.claim_idle.as_millis() as u64)
                .arg(&start)
                .arg("COUNT")
                .arg(self.config.batch_size)
                .query_async(&mut self.redis)
                .await?;
            if !reply.claimed.is_empty() {
                tracing::info!(count = reply.claimed.len(), "reclaimed pending entries");
                metrics::counter!("projector_entries_reclaimed_total")
                    .increment(reply.claimed.len() as u64);
                let entries: Vec<Entry> = reply.claimed.into_iter().map(to_entry).collect();
                let deliveries = self.deliveries(&entries).await?;
                let (dead, live): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| {
                    deliveries.get(&e.id).copied().unwrap_or(0) > self.config.max_deliveries
                });
                for e in &dead {
                    let n = deliveries.get(&e.id).copied().unwrap_or(0);
                    self.dead_letter(e, &format!("delivered {n} times without being processed"))
                        .await?;
                }
                if !live.is_empty() {
                    self.process(live).await?;
                }
            }
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        Ok(())
    }

    /// Delivery counts of entries this consumer holds.
    async fn deliveries(
        &mut self,
        entries: &[Entry],
    ) -> Result<HashMap<String, usize>, ProjectError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(keys::STREAM)
            .arg(keys::CONSUMER_GROUP)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len().max(1) * 2)
            .arg(&self.config.consumer)
            .query_async(&mut self.redis)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    /// Moves an entry to the dead-letter stream with the reason, then acks it.
    async fn dead_letter(&mut self, entry: &Entry, reason: &str) -> Result<(), ProjectError> {
        let kind = entry
            .fields
            .get(field::TYPE)
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        tracing::error!(entry = %entry.id, kind = %kind, %reason, "dead-lettering a stream entry");
        let mut add = redis::cmd("XADD");
        add.arg(keys::DEAD_LETTER_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("original_id")
            .arg(&entry.id)
            .arg("reason")
            .arg(reason)
            .arg("consumer")
            .arg(&self.config.consumer);
        for (k, v) in &entry.fields {
            add.arg(format!("original.{k}")).arg(v);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(add).ignore();
        pipe.add_command(ack(std::slice::from_ref(&entry.id)))
            .ignore();
        pipe.query_async::<()>(&mut self.redis).await?;
        self.failures.remove(&entry.id);
        let label = if entry.decoded.is_ok() {
            kind
        } else {
            "undecodable".to_string()
        };
        metrics::counter!("projector_events_dead_lettered_total", "type" => label).increment(1);
        Ok(())
    }

    /// Projects a batch: poison entries to the dead letters, the rest in one go.
    async fn process(&mut self, entries: Vec<Entry>) -> Result<(), ProjectError> {
        let started = Instant::now();
        let (good, poison): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.decoded.is_ok());
        for e in &poison {
            let reason = match &e.decoded {
                Err(r) => format!("cannot decode: {r}"),
                Ok(_) => String::new(),
            };
            self.dead_letter(e, &reason).await?;
        }
        if good.is_empty() {
            return Ok(());
        }
        let span = consumer_span(&self.config.consumer, &good);
        match self.project(&good).instrument(span).await {
            Ok(()) => {
                for e in &good {
                    self.failures.remove(&e.id);
                }
                metrics::histogram!("projector_batch_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(err) => {
                for e in &good {
                    let kind = e
                        .decoded
                        .as_ref()
                        .map(|env| env.event.type_name())
                        .unwrap_or("unknown");
                    metrics::counter!("projector_events_failed_total", "type" => kind).increment(1);
                }
                if !err.is_outage() {
                    // Blame the entries: after enough failures they are dead-lettered.
                    let reason = err.to_string();
                    for e in &good {
                        let n = {
                            let n = self.failures.entry(e.id.clone()).or_insert(0);
                            *n += 1;
                            *n
                        };
                        if n >= self.config.max_deliveries {
                            self.dead_letter(e, &format!("failed {n} times: {reason}"))
                                .await?;
                        }
                    }
                }
                Err(err)
            }
        }
    }

    /// Re-reads the state the batch touched and writes it, then acks the batch.
    async fn project(&mut self, entries: &[Entry]) -> Result<(), ProjectError> {
        let mut posts = BTreeSet::new();
        let mut pairs: BTreeSet<(Uuid, Uuid)> = BTreeSet::new();
        let mut profiles = BTreeSet::new();
        for env in entries.iter().filter_map(|e| e.decoded.as_ref().ok()) {
            match &env.event {
                DomainEvent::PostCreated { post_id, .. }
                | DomainEvent::PostDeleted { post_id, .. } => {
                    posts.insert(*post_id);
                }
                DomainEvent::PostLiked { post_id, user_id }
                | DomainEvent::PostUnliked { post_id, user_id } => {
                    posts.insert(*post_id);
                    pairs.insert((*post_id, *user_id));
                }
                DomainEvent::ProfileUpdated { user_id } => {
                    profiles.insert(*user_id);
                }
            }
        }
        let post_ids: Vec<Uuid> = posts.into_iter().collect();
        let like_users: Vec<Uuid> = pairs
            .iter()
            .map(|(_, u)| *u)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let states = self
            .db
            .run(async |c| model::read_posts(c, &post_ids, &like_users).await)
            .instrument(postgres_span!("SELECT posts", "posts"))
            .await?;

        let mut batch = self.writer.batch();
        let mut likes: BTreeMap<Uuid, Vec<(Uuid, bool, i64)>> = BTreeMap::new();
        let by_id: HashMap<Uuid, &model::PostState> = states.iter().map(|s| (s.id, s)).collect();
        for (post, user) in &pairs {
            if let Some(state) = by_id.get(post) {
                likes.entry(*user).or_default().push((
                    *post,
                    state.likers.contains(user),
                    state.version.post,
                ));
            }
        }
        // Likes first, then feeds and views: once a view shows a version, the
        // rest of that version is in place (read-your-writes checks the view).
        self.writer.likes(&mut batch, &likes);
        self.writer.posts(&mut batch, &states);
        self.writer
            .run(&mut self.redis, batch)
            .instrument(redis_span!("PIPELINE views"))
            .await?;

        for user in profiles {
            self.project_profile(user).await?;
        }
        // Acked with the next read, in the same round trip (see `run`).
        self.unacked.extend(entries.iter().map(|e| e.id.clone()));

        // The delay ends here, with the views written (and readable).
        let now_us = chrono::Utc::now().timestamp_micros();
        for env in entries.iter().filter_map(|e| e.decoded.as_ref().ok()) {
            let kind = env.event.type_name();
            metrics::counter!("projector_events_processed_total", "type" => kind).increment(1);
            let delay = (now_us - env.occurred_at_us).max(0) as f64 / 1e6;
            metrics::histogram!("projector_projection_delay_seconds", "type" => kind).record(delay);
        }
        Ok(())
    }

    /// A rename shows in every view of the author's posts: rewrite them, page by page.
    async fn project_profile(&mut self, user: Uuid) -> Result<(), ProjectError> {
        let Some(version) = self
            .db
            .run(async |c| model::profile_version(c, user).await)
            .await?
        else {
            return Ok(());
        };
        let mut before = i64::MAX;
        loop {
            let page = self
                .db
                .run(async |c| model::read_author_posts(c, user, before, 1000).await)
                .instrument(postgres_span!("SELECT posts by author", "posts"))
                .await?;
            let Some(last) = page.last() else { break };
            before = last.seq;
            // Feeds too, not only views: this event can be processed before the
            // posts' own post_created events, and a view must never be visible
            // before its feed entries.
            let mut batch = self.writer.batch();
            self.writer.posts(&mut batch, &page);
            self.writer
                .run(&mut self.redis, batch)
                .instrument(redis_span!("PIPELINE author views"))
                .await?;
        }
        let mut batch = self.writer.batch();
        self.writer.profile_version(&mut batch, user, version);
        self.writer.run(&mut self.redis, batch).await?;
        Ok(())
    }
}

/// The CONSUMER span of one batch (OpenTelemetry messaging conventions): the
/// child of the producer span for a single event, linked to every producer
/// span for a batch.
fn consumer_span(consumer: &str, entries: &[Entry]) -> tracing::Span {
    let span = tracing::info_span!(
        "projector.process",
        otel.name = %format!("process {}", keys::STREAM),
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.destination.name = keys::STREAM,
        messaging.operation.type = "process",
        messaging.consumer.group.name = keys::CONSUMER_GROUP,
        messaging.client.id = %consumer,
        messaging.batch.message_count = entries.len(),
        messaging.message.id = tracing::field::Empty,
    );
    let contexts: Vec<opentelemetry::Context> = entries
        .iter()
        .filter_map(|e| e.decoded.as_ref().ok())
        .map(|env| telemetry::context_from(env.traceparent.as_deref(), env.tracestate.as_deref()))
        .filter(|cx| cx.span().span_context().is_valid())
        .collect();
    if let ([entry], [cx]) = (entries, contexts.as_slice()) {
        span.record("messaging.message.id", entry.id.as_str());
        let _ = span.set_parent(cx.clone());
    } else {
        for cx in &contexts {
            span.add_link(cx.span().span_context().clone());
        }
    }
    span
}

/// XACK of `ids` on the event stream's group.
fn ack(ids: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("XACK");
    cmd.arg(keys::STREAM).arg(keys::CONSUMER_GROUP).arg(ids);
    cmd
}
