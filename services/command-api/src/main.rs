//! The `command-api` binary: parse arguments and environment, then run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use command_api::config::{Config, HELP, MigrateConfig};
use community_shared::config::{Env, Invocation, ProcessEnv, exit_with_config_error, parse_args};
use community_shared::telemetry::Telemetry;

const NAME: &str = "command-api";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = match parse_args(&args, &["migrate"]) {
        Ok(Invocation::Help) => {
            println!("{HELP}\n{}", community_shared::config::COMMON_ENV_HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(sub)) => sub,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{NAME}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env::new(&ProcessEnv);
    match sub.as_deref() {
        Some("migrate") => {
            let config =
                MigrateConfig::from_env(&env).unwrap_or_else(|e| exit_with_config_error(NAME, &e));
            runtime.block_on(migrate(config))
        }
        _ => {
            let config =
                Config::from_env(&env).unwrap_or_else(|e| exit_with_config_error(NAME, &e));
            runtime.block_on(serve(config))
        }
    }
}

async fn migrate(config: MigrateConfig) -> ExitCode {
    let telemetry = match Telemetry::init(&config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{NAME}: cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match community_store::migrate(&config.db, config.wait).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "migrate failed");
            eprintln!("{NAME}: {e}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn serve(config: Config) -> ExitCode {
    let telemetry = match Telemetry::init(&config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{NAME}: cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match community_shared::admin::install_metrics() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{NAME}: cannot install metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (trigger, _) = community_shared::shutdown::on_signal();
    let app = match command_api::Application::build(config, metrics, trigger).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Ok(http), Ok(admin)) = (app.http_addr(), app.admin_addr()) {
        tracing::info!(%http, %admin, "command-api listening");
    }
    let result = app.run_until_stopped().await;
    telemetry.shutdown();
    match result {
        Ok(()) => {
            tracing::info!("command-api stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{NAME}: server error: {e}");
            ExitCode::FAILURE
        }
    }
}
