//! Configuration from the environment.
//!
//! Every binary reads its settings from environment variables (CONTRACT §2).
//! A missing or malformed variable is reported as one line naming it, and the
//! process exits non-zero; nothing here panics.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Source of variables; the process environment in production, a map in unit tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads typed values from a [`Source`]; empty strings count as unset.
pub struct Env<'a> {
    source: &'a dyn Source,
}

impl<'a> Env<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.source.get(name).filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name).ok_or_else(|| ConfigError {
            var: name.to_string(),
            problem: "is required but not set".into(),
        })
    }

    /// Parses the variable if set, else returns `default`.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse::<T>().map_err(|e| ConfigError {
                var: name.to_string(),
                problem: format!("cannot parse {raw:?}: {e}"),
            }),
        }
    }

    pub fn addr_or(&self, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.optional(name).unwrap_or_else(|| default.to_string());
        raw.trim().parse().map_err(|_| ConfigError {
            var: name.to_string(),
            problem: format!("{raw:?} is not a socket address like 0.0.0.0:8080"),
        })
    }

    /// A whole number of milliseconds (or seconds, via `unit`) with a lower and upper bound.
    pub fn duration_ms_or(
        &self,
        name: &str,
        default_ms: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse_or(name, default_ms)?;
        if !range.contains(&ms) {
            return Err(ConfigError {
                var: name.to_string(),
                problem: format!("{ms} is out of range {}..={}", range.start(), range.end()),
            });
        }
        Ok(Duration::from_millis(ms))
    }

    /// An integer within bounds.
    pub fn bounded_or<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let v: T = self.parse_or(name, default)?;
        if !range.contains(&v) {
            return Err(ConfigError {
                var: name.to_string(),
                problem: format!("{v} is out of range {}..={}", range.start(), range.end()),
            });
        }
        Ok(v)
    }

    /// A Redis URL: `redis://`, `rediss://` or `unix://`.
    pub fn redis_url(&self, name: &str) -> Result<String, ConfigError> {
        let url = self.required(name)?;
        let ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|p| url.starts_with(p));
        if !ok {
            return Err(ConfigError {
                var: name.to_string(),
                problem: "must start with redis:// or rediss://".into(),
            });
        }
        Ok(url)
    }
}

/// How a binary was asked to run, from its command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Print the help text and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// Run the named sub-command (`None` = the default: serve).
    Run(Option<String>),
}

/// Parses `[--help|-h|--version|-V|<sub-command>]`; anything else is an error line.
pub fn parse_args(args: &[String], subcommands: &[&str]) -> Result<Invocation, String> {
    match args {
        [] => Ok(Invocation::Run(None)),
        [one] if one == "--help" || one == "-h" || one == "help" => Ok(Invocation::Help),
        [one] if one == "--version" || one == "-V" => Ok(Invocation::Version),
        [one] if subcommands.contains(&one.as_str()) => Ok(Invocation::Run(Some(one.clone()))),
        _ => Err(format!(
            "unexpected arguments {:?}; run with --help to see usage",
            args.join(" ")
        )),
    }
}

/// Prints one clear line to stderr and exits with status 2 (a usage/config error).
pub fn exit_with_config_error(binary: &str, err: &dyn fmt::Display) -> ! {
    eprintln!("{binary}: configuration error: {err}");
    std::process::exit(2)
}

/// Text shared by every binary's `--help`: the variables all three read.
pub const COMMON_ENV_HELP: &str = "\
  REDIS_URL                      Redis URL, redis:// or rediss:// (required)
  ADMIN_ADDR                     admin listener for /livez /readyz /metrics [default: 0.0.0.0:9090]
  RUST_LOG                       log filter [default: info]
  LOG_FORMAT                     json | text [default: json]
  SHUTDOWN_DELAY_MS              after SIGTERM, stay up (unready) this long before draining [default: 0]
  WORKER_THREADS                 async runtime threads, 1..=1024 [default: the CPUs available to the process]
  OTEL_EXPORTER_OTLP_ENDPOINT    OTLP collector; unset = trace export off
  OTEL_EXPORTER_OTLP_PROTOCOL    grpc | http/protobuf [default: http/protobuf]
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
                                 standard OpenTelemetry settings";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn required_names_the_variable() {
        let src = env(&[("EMPTY", "  ")]);
        let e = Env::new(&src);
        assert_eq!(e.required("MISSING").unwrap_err().var, "MISSING");
        assert_eq!(e.required("EMPTY").unwrap_err().var, "EMPTY");
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        let src = env(&[("ADDR", "nonsense"), ("N", "-3"), ("BIG", "100000")]);
        let e = Env::new(&src);
        assert!(e.addr_or("ADDR", "0.0.0.0:1").is_err());
        assert!(e.parse_or::<u32>("N", 1).is_err());
        assert!(e.bounded_or::<u32>("BIG", 1, 1..=100).is_err());
        assert_eq!(e.bounded_or::<u32>("UNSET", 7, 1..=100).unwrap(), 7);
    }

    #[test]
    fn redis_url_scheme_is_checked() {
        let src = env(&[("A", "http://x"), ("B", "rediss://h:6380/0")]);
        let e = Env::new(&src);
        assert!(e.redis_url("A").is_err());
        assert_eq!(e.redis_url("B").unwrap(), "rediss://h:6380/0");
    }

    #[test]
    fn args_are_parsed_strictly() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&s(&[]), &["migrate"]), Ok(Invocation::Run(None)));
        assert_eq!(parse_args(&s(&["--help"]), &[]), Ok(Invocation::Help));
        assert_eq!(
            parse_args(&s(&["migrate"]), &["migrate"]),
            Ok(Invocation::Run(Some("migrate".into())))
        );
        assert!(parse_args(&s(&["migrat"]), &["migrate"]).is_err());
        assert!(parse_args(&s(&["migrate", "x"]), &["migrate"]).is_err());
    }
}
