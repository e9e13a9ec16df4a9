//! Postgres plumbing for the services that use SQL (command-api, projector).
//!
//! Kept apart from `community-shared` so that query-api never links a SQL
//! driver. Holds the connection pool settings, the embedded migrations and
//! the readiness checks that need Postgres.
#![forbid(unsafe_code)]

use std::time::Duration;

use community_shared::admin::CheckFuture;
use community_shared::config::{ConfigError, Env};
use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};

/// The SQL migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The schema version this build expects (the newest embedded migration).
pub fn expected_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Pool settings from the environment.
#[derive(Clone)]
pub struct DbConfig {
    pub options: PgConnectOptions,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for DbConfig {
    // The URL may hold a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("host", &self.options.get_host())
            .field("database", &self.options.get_database())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl DbConfig {
    /// `service` names this process's sessions in Postgres (`application_name`,
    /// as `pg_stat_activity` and the server log show them), unless the URL
    /// names them itself (`?application_name=…`).
    pub fn from_env(env: &Env<'_>, service: &str) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError {
                var: "DATABASE_URL".into(),
                problem: "must start with postgres:// or postgresql://".into(),
            });
        }
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| ConfigError {
            var: "DATABASE_URL".into(),
            // sqlx's message does not echo the URL, so no password leaks here.
            problem: format!("invalid Postgres URL: {e}"),
        })?;
        let application = options.get_application_name().unwrap_or(service).to_owned();
        let options = options
            // Fail a stuck statement rather than hold a connection forever.
            .options([
                ("statement_timeout", "10s"),
                ("idle_in_transaction_session_timeout", "30s"),
                // Every statement here is a short indexed one; JIT compiling
                // one whose estimate crosses jit_above_cost (a stale
                // statistic is enough) costs tens of milliseconds each time.
                ("jit", "off"),
                // For the same reason a generic plan serves them all, and
                // planning each execution afresh is pure overhead: Postgres
                // kept custom-planning command-api's batched INSERT (arrays
                // as parameters), a tenth of its backends' CPU. Measured at
                // 4.5 k paced writes/s, three interleaved pairs: Postgres
                // 74.6 → 73.0% of a core, projection lag p50 5.6 → 5.2 ms.
                ("plan_cache_mode", "force_generic_plan"),
            ])
            .application_name(&application)
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        Ok(Self {
            options,
            max_connections: env.bounded_or("DATABASE_MAX_CONNECTIONS", 10, 1..=1000)?,
            acquire_timeout: env.duration_ms_or(
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                3000,
                100..=60_000,
            )?,
        })
    }

    /// These options for a connection of its own with a role in the service
    /// (the relay's, say): the same session settings, named "<service> <role>".
    pub fn options_for(&self, role: &str) -> PgConnectOptions {
        let name = match self.options.get_application_name() {
            Some(service) => format!("{service} {role}"),
            None => role.to_owned(),
        };
        self.options.clone().application_name(&name)
    }

    /// A lazy pool: the process starts while Postgres is down and reports unready.
    pub fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(false)
            .connect_lazy_with(self.options.clone())
    }
}

/// One pool connection kept by a task that runs statement after statement
/// (command-api's post writer, the projector's re-reads).
///
/// The pool hands out its idle connections in turn, so a task that took a
/// fresh one per statement woke a different Postgres backend each time, one
/// whose caches had gone cold. Keeping one for command-api's post writes took
/// the projection lag p50 at 4.5 k writes/s from 4.4–5.4 ms to 3.2–4.2 ms
/// (docs/operations.md, "Write batching"); for the projector's re-reads it
/// took a sixth off the projector's CPU.
pub struct HeldConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl HeldConnection {
    /// Takes nothing yet: the first [`Self::run`] acquires.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    /// The held connection, acquired from the pool if there is none.
    async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// Runs `f` on the held connection. After an error that means the
    /// connection may be gone ([`is_unavailable`]) it is closed, and the next
    /// call acquires another; after any other error (a constraint, a bad
    /// row) it is still good and kept.
    pub async fn run<T, F>(&mut self, f: F) -> Result<T, sqlx::Error>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    {
        let result = match self.get().await {
            Ok(conn) => f(conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result
            && is_unavailable(e)
            && let Some(mut conn) = self.conn.take()
        {
            conn.close_on_drop();
        }
        result
    }
}

/// Whether an error means "the database is unreachable" (→ 503) rather than a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| {
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
        // statement/lock timeouts (query_canceled).
        matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300" | "57014")
    }))
}

/// A readiness check that Postgres answers (for `ReadinessBuilder::check`).
pub fn reachable_check(pool: PgPool) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    move || {
        let p = pool.clone();
        Box::pin(async move { check_reachable(&p).await })
    }
}

/// A readiness check that the schema is migrated (for `ReadinessBuilder::check`).
pub fn schema_check(pool: PgPool) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    move || {
        let p = pool.clone();
        Box::pin(async move { check_schema(&p).await })
    }
}

/// Readiness: Postgres answers.
pub async fn check_reachable(pool: &PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Readiness: the schema is at least the version this build expects.
///
/// Newer is fine (a rolling upgrade migrated ahead of us); older means the
/// migration Job has not run, so the pod stays unready instead of failing requests.
pub async fn check_schema(pool: &PgPool) -> Result<(), String> {
    let expected = expected_schema_version();
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    "schema not migrated: run `command-api migrate`".to_string()
                }
                _ => e.to_string(),
            })?;
    let applied = applied.unwrap_or(0);
    if applied >= expected {
        Ok(())
    } else {
        Err(format!(
            "schema at version {applied}, this build needs {expected}: run `command-api migrate`"
        ))
    }
}

/// How long one connection attempt of `migrate` may take.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies pending migrations, waiting up to `wait` for Postgres to accept connections.
///
/// sqlx takes a Postgres advisory lock around the run, so two concurrent
/// `migrate` Jobs serialize: the second waits, then finds nothing to do.
pub async fn migrate(config: &DbConfig, wait: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(200);
    let mut conn = loop {
        // A peer that accepts but never answers (a black-holed Service, the
        // wrong server on the port) must not hang the Job: bound each attempt.
        let attempt = tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, config.options.connect())
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_ATTEMPT_TIMEOUT:?}"),
                )))
            });
        match attempt {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "Postgres not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(format!("Postgres not reachable within {wait:?}: {e}")),
        }
    };
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    tracing::info!(version = expected_schema_version(), "schema is up to date");
    Ok(())
}
