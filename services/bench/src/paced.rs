//! A constant-rate client (like wrk2): a fixed number of connections share one
//! timetable; each request is sent at its scheduled time (or at once when its
//! worker is late) and its latency is measured from the scheduled time, so a
//! slow response cannot hide the requests that should have been sent meanwhile.
//!
//! It speaks HTTP/1.1 itself over keep-alive connections, as wrk does: the
//! load generator shares the cores with the system it measures, and a
//! general-purpose client (connection pool, header maps) cost about 45 µs of
//! CPU per request here, three times what these few lines do.
//!
//! One pacer task releases the requests at their times on a timerfd
//! ([`Timer`]), not on tokio's timer: tokio's ticks in whole milliseconds and
//! rounds a deadline up to the next tick, so every send went out 1–2 ms late
//! (1.3 ms at the median), and that lateness, the client's own, was counted
//! in every latency from the schedule. A timer per request would be exact but
//! costs a wake-up per request; the pacer wakes at most once per tick
//! ([`TICK`]) and releases every request due by then. With [`MS_TICK`] it
//! releases them in whole-millisecond batches, as wrk2 does.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The pacer's coarsest wake-up: a send is at most this late on its account.
pub const TICK: Duration = Duration::from_micros(250);
/// wrk2's granularity (its timers are in milliseconds), for comparison.
pub const MS_TICK: Duration = Duration::from_millis(1);

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
/// over `connections` workers, released every `tick`. `url` is `http://host:port/path`.
pub async fn run(
    url: String,
    rate: f64,
    duration: Duration,
    tokens: Option<Vec<String>>,
    connections: usize,
    tick: Duration,
) -> Paced {
    let (host, path) = split_url(&url).unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let due = move |i: u64| start + interval.mul_f64(i as f64);
    let wakes: Vec<Arc<Notify>> = (0..connections).map(|_| Arc::default()).collect();
    let pacer = tokio::spawn(release(due, total, tick, wakes.clone()));
    let mut workers = Vec::new();
    for (w, wake) in wakes.into_iter().enumerate() {
        let (host, path, tokens) = (host.clone(), path.clone(), tokens.clone());
        workers.push(tokio::spawn(async move {
            let (mut lat, mut sent_lat) = (Vec::new(), Vec::new());
            let mut errors = 0u64;
            let mut conn: Option<Conn> = None;
            let mut i = w as u64;
            while i < total {
                let due = due(i);
                until(due, &wake).await;
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
    let _ = pacer.await;
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

/// Wakes each request's worker (request `i` belongs to worker `i % n`) once
/// the request is due, waking itself at most once per `tick`.
async fn release(
    due: impl Fn(u64) -> Instant,
    total: u64,
    tick: Duration,
    wakes: Vec<Arc<Notify>>,
) {
    let timer = Timer::new().ok();
    let mut next = 0;
    while next < total {
        let now = Instant::now();
        while next < total && due(next) <= now {
            wakes[(next % wakes.len() as u64) as usize].notify_one();
            next += 1;
        }
        if next < total {
            let at = due(next).max(now + tick);
            match &timer {
                Some(t) => t.sleep_until(at).await,
                // No timerfd here: tokio's timer, late by up to a millisecond.
                None => tokio::time::sleep_until(at.into()).await,
            }
        }
    }
}

/// Waits for the pacer to release a request due at `due`. A wake-up left
/// over from a request that was sent late can come early: the clock, not the
/// wake-up, says when to send.
async fn until(due: Instant, wake: &Notify) {
    while Instant::now() < due {
        wake.notified().await;
    }
}

/// A timer on the kernel's high-resolution clock, woken through tokio's
/// reactor like a socket.
struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    fn new() -> std::io::Result<Self> {
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: `fd` is an open timerfd, and the AsyncFd owns it until it
        // is dropped, so the descriptor stays open and names the same timer.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Self { fd })
    }

    /// Returns at `at` (at once when it has passed). Should the timerfd
    /// fail, tokio's timer stands in: a millisecond late, never stuck.
    async fn sleep_until(&self, at: Instant) {
        let Some(left) = at
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        if self.wait(left).await.is_err() {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    async fn wait(&self, left: Duration) -> std::io::Result<()> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        };
        rustix::time::timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(ready.get_inner(), &mut expirations) {
                Ok(_) => {
                    // Read to empty: the next arming's expiry is a new edge.
                    ready.clear_ready();
                    return Ok(());
                }
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
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

    /// The pacer releases every request to its own worker, none before it is
    /// due, including when workers fall behind (the timetable is denser than
    /// the tick, and one worker dawdles), and nobody waits for ever.
    #[tokio::test]
    async fn the_pacer_releases_every_request_on_time_and_none_early() {
        for tick in [TICK, MS_TICK] {
            assert_eq!(
                released_by_worker(tick).await,
                vec![(150, 0); 4],
                "{tick:?}"
            );
        }
    }

    /// (requests sent, sent before due) for each of 4 workers.
    async fn released_by_worker(tick: Duration) -> Vec<(u64, u64)> {
        let start = Instant::now() + Duration::from_millis(5);
        let due = move |i: u64| start + Duration::from_micros(37 * i);
        let (total, n) = (600u64, 4usize);
        let wakes: Vec<Arc<Notify>> = (0..n).map(|_| Arc::default()).collect();
        let pacer = tokio::spawn(release(due, total, tick, wakes.clone()));
        let workers: Vec<_> = wakes
            .into_iter()
            .enumerate()
            .map(|(w, wake)| {
                tokio::spawn(async move {
                    let mut early = 0;
                    let mut sent = 0u64;
                    for i in (w as u64..total).step_by(n) {
                        until(due(i), &wake).await;
                        early += u64::from(Instant::now() < due(i));
                        sent += 1;
                        if w == 0 && i % 40 == 0 {
                            // Busy past several of its next due times.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    (sent, early)
                })
            })
            .collect();
        let all = async {
            let mut counts = Vec::new();
            for w in workers {
                counts.push(w.await.unwrap());
            }
            pacer.await.unwrap();
            counts
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("the pacer left a worker waiting")
    }
}
