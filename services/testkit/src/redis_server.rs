//! A throwaway Redis server (no persistence: a restart comes back empty).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, tail};

pub struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sparkle-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut r = Self {
            dir,
            port: free_port(),
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        for attempt in 0..3 {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server (run scripts/install-deps.sh): {e}"));
            self.child = Some(child);
            if self.wait_ready().await {
                return;
            }
            self.kill();
            let text = tail(&log, 10);
            if attempt < 2 && text.contains("Address already in use") {
                self.port = free_port();
                continue;
            }
            panic!("Redis did not start:\n{text}");
        }
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            let pid = self.child.as_ref().map(Child::id);
            if let Ok(Some(server_pid)) =
                tokio::time::timeout(Duration::from_secs(2), self.server_pid()).await
                && Some(server_pid) == pid
            {
                // Checked by pid: another test's Redis may hold the port if
                // ours failed to bind (ours then exits, seen above).
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The process id of the Redis answering on our port, if one does.
    async fn server_pid(&self) -> Option<u32> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection for assertions.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap_or_else(|e| panic!("redis url: {e}"))
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to test Redis: {e}"))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(sig)
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Stops the server; its data is lost (no persistence).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts an empty server on the same port.
    pub async fn start_again(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
