//! The `command-api` binary: serve, or `migrate`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use command_api::config::{Config, HELP, MigrateConfig};
use community_shared::cli::{self, Start};

// mimalloc: the hot paths allocate many small buffers (Redis replies, JSON);
// measured faster than glibc malloc in the feed benchmark (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "command-api";

fn main() -> ExitCode {
    let (sub, runtime) = match cli::start(NAME, HELP, &["migrate"]) {
        Start::Exit(code) => return code,
        Start::Run { sub, runtime } => (sub, runtime),
    };
    if sub.as_deref() == Some("migrate") {
        let config = cli::load(NAME, MigrateConfig::from_env);
        return runtime.block_on(cli::run_task(
            NAME,
            &config.telemetry,
            community_store::migrate(&config.db, config.wait),
        ));
    }
    let config = cli::load(NAME, Config::from_env);
    let telemetry = config.telemetry.clone();
    runtime.block_on(cli::run_service(
        NAME,
        &telemetry,
        |metrics, trigger| async move {
            let app = command_api::Application::build(config, metrics, trigger).await?;
            if let (Ok(http), Ok(admin)) = (app.http_addr(), app.admin_addr()) {
                tracing::info!(%http, %admin, "command-api listening");
            }
            app.run_until_stopped()
                .await
                .map_err(|e| format!("server error: {e}"))
        },
    ))
}
