use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Ports handed out come from below the kernel's ephemeral range (32768+ on
/// Linux), so they never collide with the local end of an outgoing
/// connection, and each test process starts at its own random offset so
/// concurrent tests rarely pick the same one.
const PORT_RANGE: std::ops::Range<u16> = 15_000..32_000;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    static START: OnceLock<u16> = OnceLock::new();
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let start = *START.get_or_init(|| {
        let [a, b, ..] = *uuid::Uuid::new_v4().as_bytes();
        u16::from_le_bytes([a, b]) % span
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = (u32::from(start) + u32::from(n)) % u32::from(span);
        let port = PORT_RANGE.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}")
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
