//! projector: turns the event stream into the Redis read model.
//!
//! One consumer group (`projector`) on `sparkle:stream:events`; each replica
//! is a consumer. For every batch it re-reads the current state of what the
//! events touched from Postgres and writes post views, feeds and like states
//! to Redis with version checks (see [`model`]), then acks. `projector
//! rebuild` (and a projector that finds Redis empty) regenerates everything
//! from Postgres (see [`rebuild`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod maintenance;
pub mod model;
pub mod rebuild;

use std::net::SocketAddr;

use community_shared::admin::{AdminServer, CheckTiming, ReadinessBuilder};
use community_shared::shutdown::{Shutdown, ShutdownTrigger};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::consumer::Consumer;
use crate::model::Writer;

pub struct Application {
    admin: AdminServer,
    consumer: Consumer,
    shutdown: Shutdown,
    shutdown_delay: std::time::Duration,
    _trigger: ShutdownTrigger,
}

impl Application {
    pub async fn build(
        config: Config,
        metrics: PrometheusHandle,
        trigger: ShutdownTrigger,
    ) -> Result<Self, String> {
        let shutdown = trigger.subscribe();
        let pool = config.db.pool();
        let redis = community_shared::redis_conn::connect(&config.redis_url, "REDIS_URL")
            .map_err(|e| e.to_string())?;
        let readiness = ReadinessBuilder::new(CheckTiming::default())
            .check("postgres", community_store::reachable_check(pool.clone()))
            .check(
                "redis",
                community_shared::redis_conn::readiness_check(redis.clone()),
            )
            .start(shutdown.clone());
        let admin = AdminServer::bind(config.admin_addr, readiness, metrics).await?;
        let consumer = Consumer::new(
            pool,
            redis,
            Writer::new(config.feeds),
            config.consumer.clone(),
            config.rebuild_batch,
            shutdown.clone(),
        );
        tracing::info!(consumer = %config.consumer.consumer, "projector configured");
        Ok(Self {
            admin,
            consumer,
            shutdown,
            shutdown_delay: config.shutdown_delay,
            _trigger: trigger,
        })
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Consumes until shutdown; the batch in flight is finished and acked first.
    pub async fn run_until_stopped(self) {
        self.admin.spawn();
        let consumer = tokio::spawn(self.consumer.run());
        self.shutdown.wait().await;
        tokio::time::sleep(self.shutdown_delay).await;
        let _ = consumer.await;
    }
}
