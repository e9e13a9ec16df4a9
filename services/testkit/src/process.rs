use std::net::TcpListener;
use std::path::PathBuf;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
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
