//! command-api settings (CONTRACT §2), validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use community_shared::auth::AuthConfig;
use community_shared::config::{ConfigError, Env};
use community_shared::http::ServerLimits;
use community_shared::telemetry::TelemetryConfig;
use community_store::DbConfig;

pub const HELP: &str = concat!(
    "command-api ",
    env!("CARGO_PKG_VERSION"),
    " — Sparkle Community write side

USAGE:
  command-api            serve the command API and relay the outbox
  command-api migrate    apply the SQL migrations and exit (idempotent, safe to run concurrently)
  command-api --help | --version

ENVIRONMENT:
  DATABASE_URL                   Postgres URL (required)
  AUTH_JWT_SECRET                HS256 key for bearer tokens, >= 16 bytes (required to serve)
  AUTH_JWT_ISSUER                expected `iss` claim [default: not checked]
  AUTH_JWT_AUDIENCE              expected `aud` claim [default: not checked]
  HTTP_ADDR                      public REST listener [default: 0.0.0.0:8080]
  DATABASE_MAX_CONNECTIONS       pool size [default: 10]
  DATABASE_ACQUIRE_TIMEOUT_MS    wait for a pooled connection before answering 503 [default: 3000]
  REQUEST_TIMEOUT_MS             per-request deadline, then 503 [default: 10000]
  HTTP_HEADER_READ_TIMEOUT_MS    a client must send its request head within this [default: 10000]
  HTTP_MAX_CONNECTIONS           open client connections at most [default: 4096]
  OUTBOX_BATCH_SIZE              events per relay batch [default: 500]
  OUTBOX_POLL_INTERVAL_MS        relay polling fallback [default: 200]
  OUTBOX_RETENTION_SECS          keep published outbox rows this long [default: 3600]
  MIGRATE_WAIT_SECS              `migrate`: wait this long for Postgres [default: 120]
"
);

/// Outbox relay tuning.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub db: DbConfig,
    pub redis_url: String,
    pub auth: AuthConfig,
    pub telemetry: TelemetryConfig,
    pub relay: RelayConfig,
    pub request_timeout: Duration,
    pub server: ServerLimits,
}

impl Config {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let auth = AuthConfig::from_env(env)?.ok_or_else(|| ConfigError {
            var: "AUTH_JWT_SECRET".into(),
            problem: "is required but not set".into(),
        })?;
        Ok(Self {
            db: DbConfig::from_env(env, "command-api")?,
            redis_url: env.redis_url("REDIS_URL")?,
            auth,
            http_addr: env.addr_or("HTTP_ADDR", "0.0.0.0:8080")?,
            admin_addr: env.addr_or("ADMIN_ADDR", "0.0.0.0:9090")?,
            telemetry: TelemetryConfig::from_env(env, "command-api")?,
            relay: RelayConfig {
                batch_size: env.bounded_or("OUTBOX_BATCH_SIZE", 500, 1..=10_000)?,
                poll_interval: env.duration_ms_or("OUTBOX_POLL_INTERVAL_MS", 200, 10..=60_000)?,
                retention: Duration::from_secs(env.bounded_or(
                    "OUTBOX_RETENTION_SECS",
                    3600,
                    0..=30 * 86_400,
                )?),
            },
            request_timeout: env.duration_ms_or("REQUEST_TIMEOUT_MS", 10_000, 100..=300_000)?,
            server: ServerLimits::from_env(env)?,
        })
    }
}

/// What `command-api migrate` needs: only the database.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub db: DbConfig,
    pub telemetry: TelemetryConfig,
    pub wait: Duration,
}

impl MigrateConfig {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            db: DbConfig::from_env(env, "command-api migrate")?,
            telemetry: TelemetryConfig::from_env(env, "command-api")?,
            wait: Duration::from_secs(env.bounded_or("MIGRATE_WAIT_SECS", 120, 0..=3600)?),
        })
    }
}
