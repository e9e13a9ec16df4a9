//! The `query-api` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use community_shared::cli::{self, Start};
use query_api::config::{Config, HELP};

// mimalloc: the hot paths allocate many small buffers (Redis replies, JSON);
// measured faster than glibc malloc in the feed benchmark (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "query-api";

fn main() -> ExitCode {
    let runtime = match cli::start(NAME, HELP, &[]) {
        Start::Exit(code) => return code,
        Start::Run { runtime, .. } => runtime,
    };
    let config = cli::load(NAME, Config::from_env);
    let telemetry = config.telemetry.clone();
    runtime.block_on(cli::run_service(
        NAME,
        &telemetry,
        |metrics, trigger| async move {
            let app = query_api::Application::build(config, metrics, trigger).await?;
            if let (Ok(http), Ok(admin)) = (app.http_addr(), app.admin_addr()) {
                tracing::info!(%http, %admin, "query-api listening");
            }
            app.run_until_stopped()
                .await
                .map_err(|e| format!("server error: {e}"))
        },
    ))
}
