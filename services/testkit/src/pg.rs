//! A throwaway Postgres cluster.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection};

use crate::process::{free_port, tail};

pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// The directory of Postgres's binaries (Debian puts them under /usr/lib/postgresql/N/bin).
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PG_BIN_DIR") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("Postgres not installed: run scripts/install-deps.sh"))
}

/// uid/gid of the `postgres` user when we are root (Postgres refuses to run as root).
fn postgres_ids() -> Option<(u32, u32)> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u32>()
        .ok()?;
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn command(program: PathBuf) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_for_postgres(path: &Path) {
    if let Some((uid, gid)) = postgres_ids() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "chown {} failed",
            path.display()
        );
    }
}

/// An initdb'd cluster, made once per machine and copied for each test.
fn template() -> PathBuf {
    let root = std::env::temp_dir().join("sparkle-testkit");
    let bin = bin_dir();
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tpl = root.join(format!("pg{version}-template-v1"));
    if tpl.join("PG_VERSION").exists() {
        return tpl;
    }
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    // Postgres (as its own user) must be able to traverse to the data directory.
    let _ = Command::new("chmod").arg("0755").arg(&root).status();
    let staging = tempfile::Builder::new()
        .prefix("pg-init-")
        .tempdir_in(&root)
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let data = staging.path().join("data");
    let _ = Command::new("chmod")
        .arg("0755")
        .arg(staging.path())
        .status();
    chown_for_postgres(staging.path());
    let out = command(bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ])
        .output()
        .unwrap_or_else(|e| panic!("initdb: {e}"));
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test may have won the race; either copy is as good.
    if std::fs::rename(&data, &tpl).is_err() && !tpl.join("PG_VERSION").exists() {
        panic!("cannot install the Postgres template at {}", tpl.display());
    }
    tpl
}

impl Postgres {
    /// Starts a fresh cluster on a free port.
    pub async fn start() -> Self {
        let tpl = template();
        let dir = tempfile::Builder::new()
            .prefix("sparkle-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let _ = Command::new("chmod").arg("0755").arg(dir.path()).status();
        let data = dir.path().join("data");
        let status = Command::new("cp").arg("-a").arg(&tpl).arg(&data).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "copying the Postgres template failed"
        );
        chown_for_postgres(dir.path());
        let log = dir.path().join("postgres.log");
        let mut pg = Self {
            _dir: dir,
            data,
            log,
            port: free_port(),
            child: None,
        };
        pg.spawn().await;
        pg
    }

    async fn spawn(&mut self) {
        for attempt in 0..3 {
            let log = std::fs::File::create(&self.log).unwrap_or_else(|e| panic!("log: {e}"));
            let err = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
            chown_for_postgres(&self.log);
            let child = command(bin_dir().join("postgres"))
                .arg("-D")
                .arg(&self.data)
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!(
                    "unix_socket_directories={}",
                    self.data
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ))
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
                .args(["-c", "shared_buffers=64MB"])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("postgres: {e}"));
            self.child = Some(child);
            if self.wait_ready(Duration::from_secs(30)).await {
                return;
            }
            let log = tail(&self.log, 20);
            self.kill();
            if attempt < 2 && log.contains("could not bind") {
                self.port = free_port();
                continue;
            }
            panic!("Postgres did not start:\n{log}");
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            let opts: Result<sqlx::postgres::PgConnectOptions, _> = self.url().parse();
            // Bounded: whatever holds the port if ours failed to bind may
            // accept and never answer (a Redis waits for a newline forever).
            if let Ok(opts) = opts
                && let Ok(Ok(mut conn)) =
                    tokio::time::timeout(Duration::from_secs(2), opts.connect()).await
            {
                // Ours, not another test's server that holds the port.
                let dir: Result<String, _> = sqlx::query_scalar("SHOW data_directory")
                    .fetch_one(&mut conn)
                    .await;
                let _ = conn.close().await;
                let ours = |d: &str| {
                    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
                    canon(std::path::Path::new(d)) == canon(&self.data)
                };
                if dir.is_ok_and(|d| ours(&d)) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A connection pool for assertions on the database; its sessions are
    /// named `testkit`, apart from the services' own.
    pub async fn pool(&self) -> sqlx::PgPool {
        let options = self
            .url()
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap_or_else(|e| panic!("test Postgres URL: {e}"))
            .application_name("testkit");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("connect to test Postgres: {e}"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (fast shutdown: open connections are cut), keeping its data.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, no checkpoint — the data is thrown away anyway.
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .arg("-QUIT")
                .arg(child.id().to_string())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
