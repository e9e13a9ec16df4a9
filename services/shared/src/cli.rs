//! The `main` of every binary, written once: arguments, configuration,
//! runtime, telemetry, metrics and signals. Each binary supplies its help
//! text, its sub-commands and what to run.

use std::future::Future;
use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{ConfigError, Env, Invocation, ProcessEnv, exit_with_config_error, parse_args};
use crate::shutdown::ShutdownTrigger;
use crate::telemetry::{Telemetry, TelemetryConfig};

/// What the command line asked for.
pub enum Start {
    /// Done already (help, version, bad arguments).
    Exit(ExitCode),
    /// Run the default service (`None`) or a sub-command, on this runtime.
    Run {
        sub: Option<String>,
        runtime: tokio::runtime::Runtime,
    },
}

/// Parses the arguments (`--help`, `--version`, a sub-command) and builds the runtime.
pub fn start(name: &str, help: &str, subcommands: &[&str]) -> Start {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = match parse_args(&args, subcommands) {
        Ok(Invocation::Help) => {
            println!("{help}\n{}", crate::config::COMMON_ENV_HELP);
            return Start::Exit(ExitCode::SUCCESS);
        }
        Ok(Invocation::Version) => {
            println!("{name} {}", env!("CARGO_PKG_VERSION"));
            return Start::Exit(ExitCode::SUCCESS);
        }
        Ok(Invocation::Run(sub)) => sub,
        Err(e) => {
            eprintln!("{name}: {e}");
            return Start::Exit(ExitCode::from(2));
        }
    };
    // Set here rather than left to Tokio: its own TOKIO_WORKER_THREADS
    // panics on a bad value, and a bad value deserves one clear line.
    let workers = load(name, |env| {
        env.bounded_or("WORKER_THREADS", default_worker_threads(), 1..=1024)
    });
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => Start::Run { sub, runtime },
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            Start::Exit(ExitCode::FAILURE)
        }
    }
}

/// The CPUs this process may use (a container's CPU limit counts).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads configuration from the environment, or exits with one line naming the variable.
pub fn load<T>(name: &str, read: impl FnOnce(&Env<'_>) -> Result<T, ConfigError>) -> T {
    read(&Env::new(&ProcessEnv)).unwrap_or_else(|e| exit_with_config_error(name, &e))
}

/// Runs a one-shot task (a sub-command) with telemetry set up and flushed.
pub async fn run_task<Fut>(name: &str, telemetry: &TelemetryConfig, task: Fut) -> ExitCode
where
    Fut: Future<Output = Result<(), String>>,
{
    let guard = match Telemetry::init(telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match task.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    };
    guard.shutdown();
    code
}

/// Runs a long-lived service: telemetry, the metrics recorder, SIGTERM handling;
/// `run` builds the application and serves until shutdown.
pub async fn run_service<F, Fut>(name: &str, telemetry: &TelemetryConfig, run: F) -> ExitCode
where
    F: FnOnce(PrometheusHandle, ShutdownTrigger) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let guard = match Telemetry::init(telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "{name} starting"
    );
    let code = match crate::admin::install_metrics() {
        Err(e) => {
            eprintln!("{name}: cannot install metrics: {e}");
            ExitCode::FAILURE
        }
        Ok(metrics) => {
            let (trigger, _) = crate::shutdown::on_signal();
            match run(metrics, trigger).await {
                Ok(()) => {
                    tracing::info!("{name} stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "{name} failed");
                    eprintln!("{name}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    guard.shutdown();
    code
}
