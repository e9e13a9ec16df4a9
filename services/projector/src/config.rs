//! projector settings (CONTRACT §2), validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use community_shared::config::{ConfigError, Env};
use community_shared::telemetry::TelemetryConfig;
use community_store::DbConfig;

pub const HELP: &str = concat!(
    "projector ",
    env!("CARGO_PKG_VERSION"),
    " — Sparkle Community read-model projector

USAGE:
  projector              consume the event stream and maintain the Redis read model
  projector rebuild      rebuild the whole read model from Postgres and exit (the feed stays served)
  projector --help | --version

ENVIRONMENT:
  DATABASE_URL                   Postgres URL (required)
  PROJECTOR_CONSUMER             this replica's consumer name in the group [default: $HOSTNAME]
  PROJECTOR_BATCH_SIZE           entries per XREADGROUP batch [default: 200]
  PROJECTOR_BLOCK_MS             how long one read waits for new entries [default: 1000]
  PROJECTOR_CLAIM_IDLE_MS        reclaim entries pending this long on a (dead) consumer [default: 30000]
  PROJECTOR_MAX_DELIVERIES       deliveries before an entry is dead-lettered [default: 5]
  FEED_GLOBAL_LIMIT              posts kept in the global feed [default: 10000]
  FEED_AUTHOR_LIMIT              posts kept in each author's feed [default: 1000]
  REBUILD_BATCH_SIZE             posts per rebuild batch [default: 2000]
  DATABASE_MAX_CONNECTIONS       pool size [default: 10]
"
);

/// The read model's shape: how much each feed keeps.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    pub global: u32,
    pub author: u32,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub consumer: String,
    pub batch_size: usize,
    pub block: Duration,
    pub claim_idle: Duration,
    pub max_deliveries: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub admin_addr: SocketAddr,
    pub db: DbConfig,
    pub redis_url: String,
    pub telemetry: TelemetryConfig,
    pub consumer: ConsumerConfig,
    pub feeds: FeedLimits,
    pub rebuild_batch: i64,
    pub shutdown_delay: Duration,
}

impl Config {
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let consumer = env
            .optional("PROJECTOR_CONSUMER")
            .or_else(|| env.optional("HOSTNAME"))
            .unwrap_or_else(|| format!("projector-{}", uuid::Uuid::new_v4().simple()));
        if consumer.len() > 200 || consumer.chars().any(char::is_whitespace) {
            return Err(ConfigError {
                var: "PROJECTOR_CONSUMER".into(),
                problem: "must be at most 200 characters without whitespace".into(),
            });
        }
        Ok(Self {
            admin_addr: env.addr_or("ADMIN_ADDR", "0.0.0.0:9090")?,
            db: DbConfig::from_env(env, "projector")?,
            redis_url: env.redis_url("REDIS_URL")?,
            telemetry: TelemetryConfig::from_env(env, "projector")?,
            consumer: ConsumerConfig {
                consumer,
                batch_size: env.bounded_or("PROJECTOR_BATCH_SIZE", 200, 1..=10_000)?,
                block: env.duration_ms_or("PROJECTOR_BLOCK_MS", 1000, 10..=60_000)?,
                claim_idle: env.duration_ms_or(
                    "PROJECTOR_CLAIM_IDLE_MS",
                    30_000,
                    100..=86_400_000,
                )?,
                max_deliveries: env.bounded_or("PROJECTOR_MAX_DELIVERIES", 5, 1..=1000)?,
            },
            feeds: FeedLimits {
                global: env.bounded_or("FEED_GLOBAL_LIMIT", 10_000, 1..=10_000_000)?,
                author: env.bounded_or("FEED_AUTHOR_LIMIT", 1_000, 1..=1_000_000)?,
            },
            rebuild_batch: env.bounded_or("REBUILD_BATCH_SIZE", 2000, 1..=100_000)?,
            shutdown_delay: env.duration_ms_or("SHUTDOWN_DELAY_MS", 0, 0..=120_000)?,
        })
    }
}
