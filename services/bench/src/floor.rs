//! The floor under the paced p99: the same HTTP server loop as the services
//! (`community_shared::http::serve`: hyper, axum, the same runtime), serving
//! one fixed body of the feed page's size, with no Redis and no API layer.
//! Paced at the feed's rate, its p99 is what this machine gives any HTTP
//! service at that rate; the feed can only add to it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use community_shared::http::{ServerLimits, serve};
use community_shared::shutdown;

/// `sparkle-bench floor ADDR BYTES`: serves `GET /` with `BYTES` bytes of JSON.
pub async fn main(args: &[String]) {
    let usage = "usage: sparkle-bench floor ADDR BYTES";
    let (Some(addr), Some(bytes)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|b| b.parse::<usize>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let body = bytes::Bytes::from(body_of(bytes));
    let router = Router::new().route(
        "/",
        get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = match community_shared::http::bind("ADDR", addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let (_trigger, stop) = shutdown::on_signal();
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(10),
        shutdown_delay: Duration::ZERO,
        max_connections: 4096,
    };
    if let Err(e) = serve(listener, router, stop, limits).await {
        eprintln!("floor server: {e}");
        std::process::exit(1);
    }
}

/// A JSON string of exactly `n` bytes (at least `""`).
fn body_of(n: usize) -> Vec<u8> {
    let mut v = vec![b'x'; n.max(2)];
    v[0] = b'"';
    if let Some(last) = v.last_mut() {
        *last = b'"';
    }
    v
}

/// The floor server as a child process (its own runtime, as a service has),
/// killed on drop.
pub struct FloorServer {
    child: Child,
    pub url: String,
}

impl FloorServer {
    pub async fn start(port: u16, bytes: usize) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own path: {e}"));
        let child = Command::new(exe)
            .args(["floor", &addr, &bytes.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("floor server: {e}"));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            child,
            url: format!("http://{addr}/"),
        }
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_is_a_json_string_of_the_asked_size() {
        for n in [0, 1, 2, 3, 6400] {
            let b = super::body_of(n);
            assert_eq!(b.len(), n.max(2));
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert!(v.is_string());
        }
    }
}
