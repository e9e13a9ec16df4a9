use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Ports handed out come from below the kernel's ephemeral range (32768+ on
/// Linux), so they never collide with the local end of an outgoing
/// connection. Test processes run in parallel, so each port is also reserved
/// machine-wide with a lock file before use: two tests never get the same
/// port between the check and the server's own bind.
const PORT_RANGE: std::ops::Range<u16> = 15_000..32_000;

/// A reservation older than this belongs to a finished run and may be reused.
const RESERVATION_TTL: Duration = Duration::from_secs(30 * 60);

/// A port that was free a moment ago on 127.0.0.1, reserved for this process.
pub fn free_port() -> u16 {
    static START: OnceLock<u16> = OnceLock::new();
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let start = *START.get_or_init(|| {
        let [a, b, ..] = *uuid::Uuid::new_v4().as_bytes();
        u16::from_le_bytes([a, b]) % span
    });
    let dir = std::env::temp_dir().join("sparkle-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = (u32::from(start) + u32::from(n)) % u32::from(span);
        let port = PORT_RANGE.start + offset as u16;
        if reserve(&dir.join(port.to_string())) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}")
}

/// Creates the reservation file, or takes over a stale one.
fn reserve(path: &std::path::Path) -> bool {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > RESERVATION_TTL);
    // Removing first keeps the take-over exclusive: of two processes that
    // both saw it stale, only one creates the new file.
    stale && std::fs::remove_file(path).is_ok() && create()
}

/// An HTTP client for probes: every request is bounded, so a peer that
/// accepts and never answers fails the probe instead of hanging the test.
pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// Path of a workspace binary built by cargo (`SPARKLE_BIN_DIR` overrides).
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SPARKLE_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build it first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Last lines of a log file, for failure messages.
pub(crate) fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
