//! The real service binaries, started as child processes.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::pg::Postgres;
use crate::process::{binary, free_port, probe_client, tail};
use crate::redis_server::Redis;
use crate::token::TEST_SECRET;

/// A running service process with its ports and log.
pub struct Service {
    name: String,
    child: Option<Child>,
    http_port: Option<u16>,
    admin_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `name` with `env` on free ports and waits for `/livez`.
    pub async fn spawn(
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        with_http: bool,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sparkle-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = dir.path().join("service.log");
        for attempt in 0..3 {
            let http_port = with_http.then(free_port);
            let admin_port = free_port();
            let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
            let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
            let mut cmd = Command::new(binary(name));
            cmd.args(args)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            if let Some(p) = http_port {
                cmd.env("HTTP_ADDR", format!("127.0.0.1:{p}"));
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
            let mut svc = Self {
                name: name.to_string(),
                child: Some(child),
                http_port,
                admin_port,
                log: log.clone(),
                _dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            };
            if svc.wait_live(Duration::from_secs(20)).await {
                svc._dir = dir;
                return svc;
            }
            let text = svc.log();
            svc.kill9();
            if attempt < 2 && text.contains("cannot bind") {
                continue;
            }
            panic!("{name} did not come up:\n{text}");
        }
        unreachable!("the loop returns or panics")
    }

    async fn wait_live(&mut self, timeout: Duration) -> bool {
        let client = probe_client();
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            if let Ok(r) = client.get(self.admin_url("/livez")).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = probe_client();
        let url = self.admin_url("/readyz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{} never became ready:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        let port = self
            .http_port
            .unwrap_or_else(|| panic!("{} has no HTTP listener", self.name));
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The Prometheus text of `/metrics` (empty when the process does not answer).
    pub async fn metrics(&self) -> String {
        let res = probe_client().get(self.admin_url("/metrics")).send().await;
        match res {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub fn log(&self) -> String {
        tail(&self.log, 40)
    }

    /// Every line the process has written so far.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return status;
                }
            } else {
                panic!("{} already reaped", self.name);
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Postgres + Redis + an HTTP client: the backdrop of a system test.
pub struct System {
    pub pg: Postgres,
    pub redis: Redis,
    pub http: reqwest::Client,
}

impl System {
    pub async fn start() -> Self {
        let (pg, redis) = tokio::join!(Postgres::start(), Redis::start());
        Self {
            pg,
            redis,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        }
    }

    /// The environment the Helm chart would give every service.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.pg.url()),
            ("REDIS_URL", self.redis.url()),
            ("AUTH_JWT_SECRET", TEST_SECRET.to_string()),
            ("OUTBOX_POLL_INTERVAL_MS", "50".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs `command-api migrate` and returns its exit status and stderr.
    pub async fn migrate(&self) -> (ExitStatus, String) {
        let mut cmd = tokio::process::Command::new(binary("command-api"));
        cmd.arg("migrate")
            .env_clear()
            .env("DATABASE_URL", self.pg.url())
            .env("MIGRATE_WAIT_SECS", "30");
        output_within(cmd, Duration::from_secs(120), "command-api migrate").await
    }

    /// Migrates, starts command-api and waits until it is ready.
    pub async fn command_api(&self) -> Service {
        let (status, err) = self.migrate().await;
        assert!(status.success(), "migrate failed: {err}");
        let svc = self.command_api_with(&[]).await;
        svc.wait_ready().await;
        svc
    }

    /// Starts command-api with extra environment, without waiting for readiness.
    pub async fn command_api_with(&self, extra: &[(&str, &str)]) -> Service {
        self.service("command-api", extra, true).await
    }

    /// Starts query-api and waits until it is ready.
    pub async fn query_api(&self) -> Service {
        self.query_api_with(&[]).await
    }

    /// [`Self::query_api`] with extra environment.
    pub async fn query_api_with(&self, extra: &[(&str, &str)]) -> Service {
        let svc = self.service("query-api", extra, true).await;
        svc.wait_ready().await;
        svc
    }

    /// Starts a projector replica named `consumer` and waits until it is ready.
    pub async fn projector(&self, consumer: &str, extra: &[(&str, &str)]) -> Service {
        let mut env = vec![
            ("PROJECTOR_CONSUMER", consumer),
            ("PROJECTOR_CLAIM_IDLE_MS", "1000"),
        ];
        env.extend_from_slice(extra);
        let svc = self.service("projector", &env, false).await;
        svc.wait_ready().await;
        svc
    }

    /// Starts any of the three binaries with the common environment plus `extra`.
    pub async fn service(&self, name: &str, extra: &[(&str, &str)], with_http: bool) -> Service {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Service::spawn(name, &[], &env, with_http).await
    }

    /// Runs a binary's sub-command to completion (e.g. `projector rebuild`).
    pub async fn run(&self, name: &str, args: &[&str]) -> (ExitStatus, String) {
        self.run_with(name, args, &[]).await
    }

    /// [`Self::run`] with extra environment.
    pub async fn run_with(
        &self,
        name: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let mut cmd = tokio::process::Command::new(binary(name));
        cmd.args(args)
            .env_clear()
            .envs(self.env())
            .envs(extra.iter().copied());
        let what = format!("{name} {args:?}");
        output_within(cmd, Duration::from_secs(300), &what).await
    }
}

/// Runs `cmd` to completion and returns its exit status and stderr, killing
/// it and failing the test after `limit`.
async fn output_within(
    mut cmd: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> (ExitStatus, String) {
    cmd.kill_on_drop(true);
    let out = match tokio::time::timeout(limit, cmd.output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
