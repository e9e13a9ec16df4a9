//! The `query-api` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use community_shared::cli::{self, Start};
use query_api::config::{Config, HELP};

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
