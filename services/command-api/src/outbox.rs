//! The transactional outbox: events written with the state change, then
//! relayed to the Redis stream.
//!
//! [`record`] inserts an event inside the caller's transaction, with the W3C
//! trace context of the current span, so the event exists if and only if the
//! change committed. The [`Relay`] publishes unpublished rows to the stream:
//!
//! * one leader across all replicas, holding a session-level Postgres
//!   advisory lock on its own connection (a dead leader's lock is released
//!   with its session and another replica takes over);
//! * woken right after each local commit, polling as a fallback (for writes
//!   committed by other replicas);
//! * in a stable order without gaps: rows are taken in `(txid, id)` order and
//!   only below the snapshot's xmin, i.e. once no older transaction can still
//!   commit a row that would sort before them;
//! * in batches, as one atomic pipeline (MULTI/EXEC of XADDs), then the
//!   relay's position (`outbox_relay`: the last `(txid, id)` published) moves
//!   past the batch, one row update per batch rather than one per event; if
//!   the process dies between the two, the batch is sent again (at-least-once;
//!   the projector is idempotent);
//! * retrying with exponential backoff while Redis is down; commands keep
//!   succeeding meanwhile because they only need Postgres;
//! * trimming published rows older than the retention, and expired
//!   idempotency keys, on the leader, beside publishing: on a connection of
//!   its own, so a long trim never holds up the stream.

use std::sync::Arc;
use std::time::Duration;

use community_shared::events::{DomainEvent, SCHEMA_VERSION, field};
use community_shared::keys;
use community_shared::shutdown::Shutdown;
use community_shared::telemetry;
use community_store::DbConfig;
use redis::aio::ConnectionManager;
use sqlx::{ConnectOptions, PgConnection, PgPool, Row};
use tokio::sync::Notify;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::config::RelayConfig;

/// Advisory lock key of the relay leader ("SPKLOUTB").
const LEADER_LOCK_KEY: i64 = 0x5350_4b4c_4f55_5442;

/// The options of the relay's connections (publishing and trimming).
///
/// Every query of the relay is built for an index (the position range, the
/// primary key). A cached generic plan made while the outbox's statistics
/// said "empty" would scan the whole table on every batch until the next
/// autoanalyze (measured: a quarter of the machine and 50 ms of lag), so these
/// connections never prefer a sequential scan. (The penalty that setting adds
/// to the cost of the one-row outbox_relay UPDATE is why JIT is off on every
/// connection: see community_store::DbConfig.)
///
/// Like every service connection they always use the generic plan; here it
/// matters most: for the position range Postgres guesses a third of the
/// table, so its plan chooser would plan every batch's read afresh
/// (measured: a fifth of the relay's Postgres CPU at 4 k writes/s).
///
/// And their commits do not wait for the WAL flush: a position lost in a
/// Postgres crash only means its batch is published again, which
/// at-least-once delivery allows already, and a lost trim is redone.
///
/// They are named "<service> relay", so the session holding the leader lock
/// is plain to see in `pg_stat_activity`.
fn relay_connection_options(db: &DbConfig) -> sqlx::postgres::PgConnectOptions {
    db.options_for("relay")
        .options([("enable_seqscan", "off"), ("synchronous_commit", "off")])
}

/// The values of one outbox row, trace context included.
pub struct EventRow {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub version: i16,
    pub aggregate_id: Uuid,
    pub payload: serde_json::Value,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl EventRow {
    /// The row for `event`, carrying the trace context of the current span.
    pub fn new(event: &DomainEvent) -> Self {
        let (traceparent, tracestate) = telemetry::trace_context_of(&tracing::Span::current());
        Self {
            event_id: Uuid::now_v7(),
            event_type: event.type_name(),
            version: SCHEMA_VERSION as i16,
            aggregate_id: event.aggregate_id(),
            payload: event.payload(),
            traceparent,
            tracestate,
        }
    }
}

/// Writes `event` to the outbox inside the caller's transaction.
pub async fn record(conn: &mut PgConnection, event: &DomainEvent) -> Result<(), sqlx::Error> {
    let row = EventRow::new(event);
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, payload, traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(row.event_id)
    .bind(row.event_type)
    .bind(row.version)
    .bind(row.aggregate_id)
    .bind(sqlx::types::Json(row.payload))
    .bind(row.traceparent)
    .bind(row.tracestate)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

struct OutboxRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    event_version: i16,
    payload: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
    occurred_at_us: i64,
}

/// The relay task. Cheap to construct; [`Relay::run`] until shutdown.
pub struct Relay {
    db: DbConfig,
    redis: ConnectionManager,
    wake: Arc<Notify>,
    config: RelayConfig,
    shutdown: Shutdown,
    /// `(txid, id)` of the last published row, as stored in `outbox_relay`;
    /// loaded when this replica becomes leader. Every row at or below it is
    /// published (rows are taken in that order, and only below the xmin
    /// horizon, where nothing can still commit), and none above it.
    position: Option<(String, i64)>,
}

impl Relay {
    pub fn new(
        db: DbConfig,
        redis: ConnectionManager,
        wake: Arc<Notify>,
        config: RelayConfig,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            db,
            redis,
            wake,
            config,
            shutdown,
            position: None,
        }
    }

    /// Sleeps for `d` unless shutdown begins first; returns false on shutdown.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.wait() => false,
        }
    }

    pub async fn run(mut self) {
        let mut retry = Duration::from_millis(200);
        while !self.shutdown.is_triggered() {
            let options = relay_connection_options(&self.db);
            let mut conn = match options.connect().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay cannot reach Postgres");
                    if !self.pause(retry).await {
                        break;
                    }
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            retry = Duration::from_millis(200);
            let locked: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK_KEY)
                .fetch_one(&mut conn)
                .await;
            match locked {
                Ok(true) => {
                    tracing::info!("outbox relay: leader");
                    self.position = None;
                    metrics::gauge!("outbox_relay_leader").set(1.0);
                    if let Err(e) = self.lead(&mut conn).await {
                        tracing::warn!(error = %e, "outbox relay lost its Postgres connection");
                    }
                    metrics::gauge!("outbox_relay_leader").set(0.0);
                }
                Ok(false) => {
                    // Another replica leads; try again later (it may die).
                    metrics::gauge!("outbox_relay_leader").set(0.0);
                    if !self.pause(Duration::from_secs(2)).await {
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox relay: lock attempt failed"),
            }
            // Closing the connection releases the advisory lock.
            drop(conn);
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes as leader, and trims, until shutdown or a Postgres error.
    async fn lead(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        // Trimming runs beside publishing, on a connection of its own, for as
        // long as this replica leads: when the two shared one connection,
        // publishing waited for each whole trim (measured with old rows to
        // trim: relay delay p99 90–220 ms, against 18–24 ms beside).
        let trimmer = tokio::spawn(trim_while_leading(
            relay_connection_options(&self.db),
            self.config.retention,
            self.shutdown.clone(),
        ));
        let result = self.publish(conn).await;
        trimmer.abort();
        result
    }

    /// Publishes until shutdown or a Postgres error.
    async fn publish(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut redis_backoff = Duration::from_millis(100);
        loop {
            if self.shutdown.is_triggered() {
                return Ok(());
            }
            match self.publish_batch(conn).await {
                Ok(n) => {
                    redis_backoff = Duration::from_millis(100);
                    if n as i64 >= self.config.batch_size {
                        continue; // more waiting: no pause
                    }
                }
                Err(RelayError::Redis(e)) => {
                    metrics::counter!("outbox_relay_errors_total", "dependency" => "redis")
                        .increment(1);
                    tracing::warn!(error = %e, retry_in = ?redis_backoff, "outbox relay: Redis unavailable");
                    if !self.pause(redis_backoff).await {
                        return Ok(());
                    }
                    redis_backoff = (redis_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(RelayError::Db(e)) => {
                    metrics::counter!("outbox_relay_errors_total", "dependency" => "postgres")
                        .increment(1);
                    return Err(e);
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = self.shutdown.wait() => return Ok(()),
            }
        }
    }

    async fn publish_batch(&mut self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let (txid, id) = match &self.position {
            Some(p) => p.clone(),
            None => {
                let stored: (String, i64) =
                    sqlx::query_as("SELECT last_txid::text, last_id FROM outbox_relay")
                        .fetch_one(&mut *conn)
                        .await?;
                self.position = Some(stored.clone());
                stored
            }
        };
        let rows = sqlx::query(
            "SELECT id, txid::text AS txid, event_id, event_type, event_version,
                    payload::text AS payload, traceparent, tracestate,
                    (extract(epoch FROM created_at) * 1000000)::bigint AS occurred_at_us
               FROM outbox
              WHERE (outbox.txid, id) > ($2::text::xid8, $3)
                AND outbox.txid < pg_snapshot_xmin(pg_current_snapshot())
              -- Qualified: a bare `txid` here is the text output column, whose
              -- order is not commit order ('1000' < '999') and has no index.
              ORDER BY outbox.txid, outbox.id LIMIT $1",
        )
        .bind(self.config.batch_size)
        .bind(txid)
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let last_position: (String, i64) = (last.try_get("txid")?, last.try_get("id")?);
        let rows = rows
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    event_version: r.try_get("event_version")?,
                    payload: r.try_get("payload")?,
                    traceparent: r.try_get("traceparent")?,
                    tracestate: r.try_get("tracestate")?,
                    occurred_at_us: r.try_get("occurred_at_us")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;

        // With export on, one PRODUCER span per event, continuing the trace of
        // the request that wrote it; the span's own context is what travels in
        // the stream entry. With export off nothing would read the spans (a
        // twentieth of command-api's CPU under writes): the stored context
        // passes through as it is.
        let spans: Vec<tracing::Span> = if telemetry::exporting() {
            rows.iter().map(producer_span).collect()
        } else {
            Vec::new()
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (i, row) in rows.iter().enumerate() {
            // `spans` is one per row, or empty with export off.
            let (traceparent, tracestate) = match spans.get(i).map(telemetry::trace_context_of) {
                Some((Some(tp), ts)) => (Some(tp), ts),
                // No span, or no valid span context: pass the stored context through.
                _ => (row.traceparent.clone(), row.tracestate.clone()),
            };
            let mut cmd = redis::cmd("XADD");
            cmd.arg(keys::STREAM)
                .arg("*")
                .arg(field::EVENT_ID)
                .arg(row.event_id.to_string())
                .arg(field::TYPE)
                .arg(&row.event_type)
                .arg(field::VERSION)
                .arg(row.event_version)
                .arg(field::PAYLOAD)
                .arg(&row.payload)
                .arg(field::OCCURRED_AT_US)
                .arg(row.occurred_at_us)
                .arg(field::OUTBOX_ID)
                .arg(row.id);
            if let Some(tp) = traceparent {
                cmd.arg(field::TRACEPARENT).arg(tp);
            }
            if let Some(ts) = tracestate {
                cmd.arg(field::TRACESTATE).arg(ts);
            }
            pipe.add_command(cmd);
        }
        let stream_ids: Vec<String> = match pipe.query_async(&mut self.redis).await {
            Ok(ids) => ids,
            Err(e) => {
                for span in &spans {
                    span.record("otel.status_code", "ERROR");
                }
                return Err(e.into());
            }
        };
        for (span, id) in spans.iter().zip(&stream_ids) {
            span.record("messaging.message.id", id.as_str());
        }
        drop(spans);

        sqlx::query(
            "UPDATE outbox_relay
                SET last_txid = $1::text::xid8, last_id = $2, last_stream_id = $3,
                    published_at = now()",
        )
        .bind(&last_position.0)
        .bind(last_position.1)
        .bind(stream_ids.last())
        .execute(&mut *conn)
        .await?;
        self.position = Some(last_position);
        metrics::counter!("outbox_published_events_total").increment(rows.len() as u64);
        tracing::debug!(count = rows.len(), "outbox batch published");
        Ok(rows.len())
    }
}

/// The PRODUCER span of one event, continuing the trace of the request that
/// wrote it.
fn producer_span(row: &OutboxRow) -> tracing::Span {
    let span = tracing::info_span!(
        "outbox.publish",
        otel.name = %format!("send {}", keys::STREAM),
        otel.kind = "producer",
        messaging.system = "redis",
        messaging.destination.name = keys::STREAM,
        messaging.operation.type = "send",
        messaging.operation.name = "XADD",
        messaging.message.id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        messaging.message.conversation_id = %row.event_id,
    );
    let parent = telemetry::context_from(row.traceparent.as_deref(), row.tracestate.as_deref());
    let _ = span.set_parent(parent);
    span
}

/// How often the trim runs, and the most it deletes per statement and per
/// tick: 20 000 rows/s, twice the most this machine has written (~9 500/s),
/// so the outbox cannot outgrow its retention.
///
/// Small and often, because each delete takes CPU from the hops between a
/// commit and its view: with ticks of 10 s and batches of 10 000, a steady
/// 4.5 k writes/s left ~45 000 rows to delete in one burst every 10 s, and
/// projection lag p99 went from ~20 ms to 95 ms; a tick a second in batches
/// of 1 000 spreads the same work evenly.
const TRIM_EVERY: Duration = Duration::from_secs(1);
const TRIM_BATCH: i64 = 1_000;
const TRIM_BATCHES_PER_TICK: usize = 20;

/// Trims every [`TRIM_EVERY`], on its own connection, until shutdown (or until
/// the relay stops leading and aborts it). Trimming is only housekeeping: a
/// failed tick is logged and retried on the next, on a fresh connection.
async fn trim_while_leading(
    options: sqlx::postgres::PgConnectOptions,
    retention: Duration,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    // A tick that ran late is not made up for with a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<PgConnection> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match options.connect().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox trim cannot reach Postgres");
                    continue;
                }
            },
        };
        if let Err(e) = trim_once(c, retention).await {
            tracing::warn!(error = %e, "outbox trim failed");
            conn = None;
        }
    }
}

/// Deletes old published rows and expired idempotency keys.
async fn trim_once(conn: &mut PgConnection, retention: Duration) -> Result<(), sqlx::Error> {
    // The oldest rows by id (≈ by age) that are published and past the
    // retention: the window is read from the primary key's start, so a
    // tick never scans the young rows.
    let trimmed = trim(
        conn,
        "DELETE FROM outbox WHERE id IN (
            SELECT o.id
              FROM (SELECT id, txid, created_at FROM outbox ORDER BY id LIMIT $2) o,
                   outbox_relay r
             WHERE (o.txid, o.id) <= (r.last_txid, r.last_id)
               AND o.created_at < now() - make_interval(secs => $1))",
        retention,
    )
    .await?;
    let expired = trim(
        conn,
        "DELETE FROM idempotency_keys WHERE (user_id, key) IN (
            SELECT user_id, key FROM idempotency_keys
             WHERE created_at < now() - make_interval(secs => $1)
             LIMIT $2)",
        Duration::from_secs(24 * 3600),
    )
    .await?;
    metrics::counter!("outbox_trimmed_rows_total", "table" => "outbox").increment(trimmed);
    metrics::counter!("outbox_trimmed_rows_total", "table" => "idempotency_keys")
        .increment(expired);
    if trimmed + expired > 0 {
        // Every second under load: debug, with the counters above for the totals.
        tracing::debug!(trimmed, expired, "outbox maintenance");
    }
    Ok(())
}

/// Runs a bounded `DELETE` (`$1` = age in seconds, `$2` = batch size) again
/// while it finds a full batch, up to [`TRIM_BATCHES_PER_TICK`] times; each
/// statement is short, so no lock is held for long.
async fn trim(
    conn: &mut PgConnection,
    sql: &'static str,
    age: Duration,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for _ in 0..TRIM_BATCHES_PER_TICK {
        let n = sqlx::query(sql)
            .bind(age.as_secs_f64())
            .bind(TRIM_BATCH)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        total += n;
        if n < TRIM_BATCH as u64 {
            break;
        }
    }
    Ok(total)
}

/// Reports the outbox backlog (`outbox_backlog_events`, oldest age) every few seconds.
pub async fn report_backlog(pool: PgPool, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        match backlog(&pool).await {
            Ok((n, age)) => {
                metrics::gauge!("outbox_backlog_events").set(n as f64);
                metrics::gauge!("outbox_oldest_unpublished_age_seconds").set(age);
            }
            Err(e) => tracing::debug!(error = %e, "cannot measure the outbox backlog"),
        }
    }
}

/// Pending events and the age of the oldest, read along the position index:
/// the planner cannot know how far the position is from the end (it guesses
/// a third of the table) and would rather scan an outbox that holds an hour
/// of published rows.
async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query_as(
        "SELECT count(*)::bigint,
                coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
           FROM outbox_pending",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use community_testkit::Postgres;

    async fn rows(pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// One tick deletes at most its cap, so a backlog of old rows goes over
    /// several ticks instead of in one burst; unpublished rows never go.
    #[tokio::test]
    async fn a_trim_tick_deletes_at_most_its_cap_and_never_unpublished_rows() {
        let pg = Postgres::start().await;
        let pool = pg.pool().await;
        community_store::MIGRATOR.run(&pool).await.unwrap();
        let cap = TRIM_BATCH * TRIM_BATCHES_PER_TICK as i64;
        let old = |n: i64| {
            sqlx::query(
                "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, payload, created_at)
                 SELECT gen_random_uuid(), 'post_created', 1, gen_random_uuid(), '{}', now() - interval '2 hours'
                   FROM generate_series(1, $1)",
            )
            .bind(n)
        };
        old(cap + 500).execute(&pool).await.unwrap();
        sqlx::query(
            "UPDATE outbox_relay SET last_txid = (SELECT max(txid) FROM outbox),
                                     last_id = (SELECT max(id) FROM outbox)",
        )
        .execute(&pool)
        .await
        .unwrap();
        old(100).execute(&pool).await.unwrap(); // past the position: unpublished

        let mut conn = pool.acquire().await.unwrap();
        let retention = Duration::from_secs(3600);
        trim_once(&mut conn, retention).await.unwrap();
        assert_eq!(rows(&pool).await, 600, "the first tick takes its cap");
        trim_once(&mut conn, retention).await.unwrap();
        assert_eq!(rows(&pool).await, 100, "the next tick takes the rest");
        trim_once(&mut conn, retention).await.unwrap();
        assert_eq!(rows(&pool).await, 100, "unpublished rows stay");
    }
}
