//! Running the load tools (wrk, redis-benchmark, pgbench) and reading their output.

use std::path::Path;
use std::process::Command;

/// wrk's summary: requests/s, p50 and p99 latency (ms), non-2xx count.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

fn ms(value: &str) -> Option<f64> {
    let (num, unit): (String, String) =
        value.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let n: f64 = num.parse().ok()?;
    Some(match unit.as_str() {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

pub fn parse_wrk(out: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in out.lines() {
        let t = line.trim();
        let mut parts = t.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("Requests/sec:"), Some(v)) => r.rps = v.parse().unwrap_or(0.0),
            (Some("50%"), Some(v)) => r.p50_ms = ms(v).unwrap_or(0.0),
            (Some("99%"), Some(v)) => r.p99_ms = ms(v).unwrap_or(0.0),
            (Some("Non-2xx"), _) => {
                r.errors += t
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            }
            (Some("Socket"), _) => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                r.errors += t
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    r
}

/// One thread, like redis-benchmark: on a machine the load shares with the
/// system, a second wrk thread took more from the service than it added
/// (measured here: about 7% fewer feed pages/s with two).
pub fn wrk(url: &str, connections: u32, secs: u64, script: Option<&Path>) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        "1",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{secs}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("wrk (apt-get install wrk): {e}"));
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// requests/s of one redis-benchmark command.
pub fn redis_benchmark(port: u16, connections: u32, requests: u64, command: &[String]) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            &connections.to_string(),
        ])
        .args(["-n", &requests.to_string(), "-q"])
        .args(command)
        .output()
        .unwrap_or_else(|e| panic!("redis-benchmark: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "ZREVRANGE ...: 48309.18 requests per second, p50=0.5 msec" (the last \r-separated part)
    text.split(['\r', '\n'])
        .filter_map(|l| {
            l.split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .next_back()
        .unwrap_or(0.0)
}

/// tps of a pgbench script (prepared statements, no vacuum).
pub fn pgbench(pg_bin: &Path, port: u16, connections: u32, secs: u64, script: &Path) -> f64 {
    let out = Command::new(pg_bin.join("pgbench"))
        .args([
            "-n",
            "-M",
            "prepared",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
        ])
        .args([
            "-c",
            &connections.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
        ])
        .arg("-f")
        .arg(script)
        .arg("postgres")
        .output()
        .unwrap_or_else(|e| panic!("pgbench: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "pgbench failed: {}\n{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(0.0)
}

pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 2s test @ http://x\n  Latency Distribution\n     50%  512.00us\n     75%    1.20ms\n     99%    3.50ms\n  1000 requests in 2.00s\nRequests/sec:  20000.50\nNon-2xx or 3xx responses: 3\n";
        let r = parse_wrk(out);
        assert_eq!(
            (r.rps, r.p50_ms, r.p99_ms, r.errors),
            (20000.5, 0.512, 3.5, 3)
        );
    }
}
