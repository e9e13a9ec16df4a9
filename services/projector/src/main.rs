//! The `projector` binary: consume, or `rebuild`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use community_shared::cli::{self, Start};
use projector::config::{Config, HELP};

// mimalloc: the hot paths allocate many small buffers (Redis replies, JSON);
// measured faster than glibc malloc in the feed benchmark (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "projector";

fn main() -> ExitCode {
    let (sub, runtime) = match cli::start(NAME, HELP, &["rebuild"]) {
        Start::Exit(code) => return code,
        Start::Run { sub, runtime } => (sub, runtime),
    };
    let config = cli::load(NAME, Config::from_env);
    let telemetry = config.telemetry.clone();
    if sub.as_deref() == Some("rebuild") {
        return runtime.block_on(cli::run_task(NAME, &telemetry, async move {
            let pool = config.db.pool();
            let mut redis = community_shared::redis_conn::connect(&config.redis_url, "REDIS_URL")
                .map_err(|e| e.to_string())?;
            let writer = projector::model::Writer::new(config.feeds);
            projector::rebuild::run(&pool, &mut redis, &writer, config.rebuild_batch)
                .await
                .map_err(|e| format!("rebuild failed: {e}"))
        }));
    }
    runtime.block_on(cli::run_service(
        NAME,
        &telemetry,
        |metrics, trigger| async move {
            let app = projector::Application::build(config, metrics, trigger).await?;
            if let Ok(admin) = app.admin_addr() {
                tracing::info!(%admin, "projector running");
            }
            app.run_until_stopped().await;
            Ok(())
        },
    ))
}
