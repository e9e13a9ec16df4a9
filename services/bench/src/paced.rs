//! A constant-rate client (like wrk2): a fixed number of connections share one
//! timetable; each request is sent at its scheduled time (or at once when its
//! worker is late) and its latency is measured from the scheduled time, so a
//! slow response cannot hide the requests that should have been sent meanwhile.
//!
//! It speaks HTTP/1.1 itself over keep-alive connections, as wrk does: the
//! load generator shares the cores with the system it measures, and a
//! general-purpose client (connection pool, header maps) cost about 45 µs of
//! CPU per request here, three times what these few lines do.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Paced {
    /// From each request's scheduled time: what a client sending at this rate sees.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the moment each request was written: the server's answer alone,
    /// without the wait of a request whose worker was still busy or late.
    pub sent_p99_ms: f64,
    pub errors: u64,
}

/// GETs `url` (or POSTs a new post when `tokens` is given) at `rate` per second
/// over `connections` workers. `url` is `http://host:port/path`.
pub async fn run(
    url: String,
    rate: f64,
    duration: Duration,
    tokens: Option<Vec<String>>,
    connections: usize,
) -> Paced {
    let (host, path) = split_url(&url).unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::new();
    for w in 0..connections as u64 {
        let (host, path, tokens) = (host.clone(), path.clone(), tokens.clone());
        workers.push(tokio::spawn(async move {
            let (mut lat, mut sent_lat) = (Vec::new(), Vec::new());
            let mut errors = 0u64;
            let mut conn: Option<Conn> = None;
            let mut i = w;
            while i < total {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                let request = match &tokens {
                    Some(t) => {
                        let body = format!("{{\"content\":\"paced post {i}\"}}");
                        format!(
                            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
                             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            t[(i as usize) % t.len()],
                            body.len()
                        )
                    }
                    None => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                };
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match TcpStream::connect(&host).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn.insert(Conn::new(s))
                        }
                        Err(_) => {
                            errors += 1;
                            i += connections as u64;
                            continue;
                        }
                    },
                };
                let sent = Instant::now();
                match c.exchange(request.as_bytes()).await {
                    Ok((status, keep_alive)) => {
                        if (200..300).contains(&status) {
                            lat.push(due.elapsed().as_secs_f64() * 1000.0);
                            sent_lat.push(sent.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            errors += 1;
                        }
                        if !keep_alive {
                            conn = None;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
                i += connections as u64;
            }
            (lat, sent_lat, errors)
        }));
    }
    let (mut all, mut all_sent) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for w in workers {
        if let Ok((lat, sent_lat, e)) = w.await {
            all.extend(lat);
            all_sent.extend(sent_lat);
            errors += e;
        }
    }
    all.sort_by(f64::total_cmp);
    all_sent.sort_by(f64::total_cmp);
    Paced {
        p50_ms: quantile(&all, 0.5),
        p99_ms: quantile(&all, 0.99),
        sent_p99_ms: quantile(&all_sent, 0.99),
        errors,
    }
}

/// The `p` quantile of `sorted` (nearest rank); 0 when empty.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(last))
        .copied()
        .unwrap_or(0.0)
}

/// The length of the body `url` answers a GET with (for the floor's body).
pub async fn body_len(url: &str) -> Option<usize> {
    let (host, path) = split_url(url)?;
    let mut conn = Conn::new(TcpStream::connect(&host).await.ok()?);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (status, _) = conn.exchange(request.as_bytes()).await.ok()?;
    let head_end = find(&conn.buf, b"\r\n\r\n")? + 4;
    (200..300)
        .contains(&status)
        .then(|| conn.buf.len() - head_end)
}

/// `http://host:port/path?query` → ("host:port", "/path?query").
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!host.is_empty()).then(|| (host.to_string(), path.to_string()))
}

/// One keep-alive connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

type Io<T> = std::io::Result<T>;

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one request and reads its whole response: (status, keep-alive).
    async fn exchange(&mut self, request: &[u8]) -> Io<(u16, bool)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end]).ok_or_else(|| bad("malformed response"))?;
        match head.body {
            Body::Length(n) => {
                while self.buf.len() < head_end + n {
                    self.fill().await?;
                }
            }
            // Enough for the servers measured here: the last chunk ends it.
            Body::Chunked => {
                while !self.buf[head_end..].ends_with(b"0\r\n\r\n") {
                    self.fill().await?;
                }
            }
        }
        Ok((head.status, head.keep_alive))
    }

    async fn fill(&mut self) -> Io<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

enum Body {
    Length(usize),
    Chunked,
}

struct Head {
    status: u16,
    keep_alive: bool,
    body: Body,
}

/// The status line and the headers that frame the body.
fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let (mut body, mut keep_alive) = (None, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body = Some(Body::Length(value.parse().ok()?));
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            body = Some(Body::Chunked);
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    Some(Head {
        status,
        keep_alive,
        body: body.unwrap_or(Body::Length(0)),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8081/api/feed?limit=20"),
            Some(("127.0.0.1:8081".into(), "/api/feed?limit=20".into()))
        );
        assert_eq!(split_url("http://h:1"), Some(("h:1".into(), "/".into())));
        assert_eq!(split_url("https://h/x"), None);
        assert_eq!(split_url("http:///x"), None);
    }

    #[test]
    fn heads_give_status_framing_and_keep_alive() {
        let h = parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n").unwrap();
        assert!(h.status == 201 && h.keep_alive && matches!(h.body, Body::Length(12)));
        let h = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert!(h.status == 503 && !h.keep_alive && matches!(h.body, Body::Chunked));
        assert!(parse_head(b"garbage\r\n\r\n").is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n").is_none());
    }
}
