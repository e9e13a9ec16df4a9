//! A constant-rate client (like wrk2): the requests follow one fixed
//! timetable, each is released at its scheduled time, and its latency is
//! measured from that time, so a slow response cannot hide the requests that
//! should have been sent meanwhile (no coordinated omission).
//!
//! It speaks HTTP/1.1 itself over keep-alive connections, as wrk does: the
//! load generator shares the cores with the system it measures, and a
//! general-purpose client (connection pool, header maps) cost about 45 µs of
//! CPU per request here, three times what these few lines do.
//!
//! How requests are released ([`Pacing`]) is what the target is measured
//! with ([`OPEN`]) or what wrk2 does ([`WRK2`]), for comparison:
//! - *When.* One pacer task waits on a timerfd ([`Timer`]) and, at most once
//!   per tick, releases every request due by then. tokio's own timer ticks
//!   in whole milliseconds and rounds a deadline up, so on it every send went
//!   out 1–2 ms late (1.3 ms at the median), the client's own lateness counted
//!   in every latency from the schedule. A timer per request would be exact
//!   but costs a wake-up per request.
//! - *To which connection.* With a shared queue, any idle connection takes
//!   the oldest released request, as an open-model load generator does (k6's
//!   constant arrival rate, vegeta): a request waits for a connection only
//!   when all of them are busy, and that wait counts. wrk2 gives each
//!   connection a fixed share of the timetable instead, so one slow answer
//!   holds up the next requests of its connection while the others idle.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How requests are released to the connections.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The pacer's coarsest wake-up: a send is at most this late on its account.
    pub tick: Duration,
    /// Any idle connection takes the next request (else each connection
    /// sends its fixed share of the timetable).
    pub shared: bool,
}

/// The targets' pacing: within 250 µs of the timetable, on any idle connection.
pub const OPEN: Pacing = Pacing {
    tick: Duration::from_micros(250),
    shared: true,
};

/// wrk2's: in whole-millisecond batches, each connection its share.
pub const WRK2: Pacing = Pacing {
    tick: Duration::from_millis(1),
    shared: false,
};

pub struct Paced {
    /// From each request's scheduled time: what a client sending at this rate sees.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the moment each request was written: the server's answer alone,
    /// without the wait for a free connection or for the pacer.
    pub sent_p99_ms: f64,
    /// How late the pacer released the requests (p99 and the longest): its
    /// own share of the latency from the schedule; the rest is the wait for
    /// a free connection and the answer.
    pub released_late_p99_ms: f64,
    pub released_late_max_ms: f64,
    pub errors: u64,
}

/// Released requests waiting for a connection: a permit per request, and the
/// requests taken in timetable order (`next`, then every `step`-th).
struct Queue {
    released: Semaphore,
    next: AtomicU64,
    step: u64,
}

impl Queue {
    fn new(first: u64, step: u64) -> Self {
        Self {
            released: Semaphore::new(0),
            next: AtomicU64::new(first),
            step,
        }
    }

    /// The next request once it is released; `None` when none is left.
    async fn take(&self, total: u64) -> Option<u64> {
        self.released.acquire().await.ok()?.forget();
        let i = self.next.fetch_add(self.step, Ordering::Relaxed);
        (i < total).then_some(i)
    }
}

/// The queues the pacer releases to: one shared by all workers, or one per
/// worker holding its share. Worker `w` takes from queue `w % len`, as the
/// pacer gives request `i` to queue `i % len`.
fn queues(pacing: Pacing, connections: usize) -> Vec<Arc<Queue>> {
    let n = connections as u64;
    if pacing.shared {
        vec![Arc::new(Queue::new(0, 1))]
    } else {
        (0..n).map(|w| Arc::new(Queue::new(w, n))).collect()
    }
}

/// GETs `url` (or POSTs a new post when `tokens` is given) at `rate` per second
/// over `connections` workers. `url` is `http://host:port/path`.
pub async fn run(
    url: String,
    rate: f64,
    duration: Duration,
    tokens: Option<Vec<String>>,
    connections: usize,
    pacing: Pacing,
) -> Paced {
    let (host, path) = split_url(&url).unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let due = move |i: u64| start + interval.mul_f64(i as f64);
    let connections = connections.max(1);
    let queues = queues(pacing, connections);
    let pacer = tokio::spawn(release(
        due,
        total,
        pacing.tick,
        queues.clone(),
        connections,
    ));
    let mut workers = Vec::new();
    for w in 0..connections {
        let (host, path, tokens) = (host.clone(), path.clone(), tokens.clone());
        let queue = queues[w % queues.len()].clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut sent_lat) = (Vec::new(), Vec::new());
            let mut errors = 0u64;
            let mut conn: Option<Conn> = None;
            while let Some(i) = queue.take(total).await {
                let due = due(i);
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
            }
            (lat, sent_lat, errors)
        }));
    }
    let (mut all, mut all_sent) = (Vec::new(), Vec::new());
    let mut errors = 0;
    let mut late = pacer.await.unwrap_or_default();
    for w in workers {
        if let Ok((lat, sent_lat, e)) = w.await {
            all.extend(lat);
            all_sent.extend(sent_lat);
            errors += e;
        }
    }
    for v in [&mut all, &mut all_sent, &mut late] {
        v.sort_by(f64::total_cmp);
    }
    Paced {
        p50_ms: quantile(&all, 0.5),
        p99_ms: quantile(&all, 0.99),
        sent_p99_ms: quantile(&all_sent, 0.99),
        released_late_p99_ms: quantile(&late, 0.99),
        released_late_max_ms: late.last().copied().unwrap_or(0.0),
        errors,
    }
}

/// Releases each request to its queue once it is due (request `i` to queue
/// `i % queues.len()`), waking at most once per `tick`; then releases one
/// request past the end to each of the `workers` so that each stops.
/// Returns how late it released each request (ms).
async fn release(
    due: impl Fn(u64) -> Instant,
    total: u64,
    tick: Duration,
    queues: Vec<Arc<Queue>>,
    workers: usize,
) -> Vec<f64> {
    let timer = Timer::new();
    let mut late = Vec::with_capacity(total as usize);
    let mut next = 0;
    while next < total {
        let now = Instant::now();
        while next < total && due(next) <= now {
            late.push((now - due(next)).as_secs_f64() * 1000.0);
            queues[(next % queues.len() as u64) as usize]
                .released
                .add_permits(1);
            next += 1;
        }
        if next < total {
            timer.sleep_until(due(next).max(now + tick)).await;
        }
    }
    for q in &queues {
        q.released.add_permits(workers / queues.len());
    }
    late
}

/// A timer on the kernel's high-resolution clock, woken through tokio's
/// reactor like a socket. Where no timerfd can be had, or one fails, tokio's
/// timer stands in: a millisecond late, never stuck.
struct Timer {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Timer {
    fn new() -> Self {
        Self {
            fd: Self::timerfd().ok(),
        }
    }

    fn timerfd() -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: `fd` is an open timerfd, and the AsyncFd owns it until it
        // is dropped, so the descriptor stays open and names the same timer.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(fd)
    }

    /// Returns at `at` (at once when it has passed).
    async fn sleep_until(&self, at: Instant) {
        let Some(left) = at
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        let fired = match &self.fd {
            Some(fd) => Self::wait(fd, left).await.is_ok(),
            None => false,
        };
        if !fired {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    async fn wait(fd: &AsyncFd<OwnedFd>, left: Duration) -> std::io::Result<()> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        };
        rustix::time::timerfd_settime(
            fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut ready = fd.readable().await?;
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

    /// Both pacings send every request once, none before it is due, and
    /// stop every worker, including when a worker falls behind (the
    /// timetable is denser than the tick, and one worker dawdles); with
    /// wrk2's, each worker sends only its own share.
    #[tokio::test]
    async fn every_request_is_sent_once_and_none_early() {
        let (total, n) = (600u64, 4usize);
        for pacing in [OPEN, WRK2] {
            let sent = sent_by_worker(pacing, total, n).await;
            let mut all: Vec<u64> = sent.iter().flatten().map(|&(i, _)| i).collect();
            all.sort_unstable();
            assert_eq!(all, (0..total).collect::<Vec<_>>(), "{pacing:?}");
            let early = sent.iter().flatten().filter(|&&(_, early)| early).count();
            assert_eq!(early, 0, "{pacing:?}");
            if !pacing.shared {
                for (w, mine) in sent.iter().enumerate() {
                    assert!(mine.iter().all(|&(i, _)| i % n as u64 == w as u64));
                }
            }
        }
    }

    /// For each of `n` workers: the requests it sent, and whether before due.
    async fn sent_by_worker(pacing: Pacing, total: u64, n: usize) -> Vec<Vec<(u64, bool)>> {
        let start = Instant::now() + Duration::from_millis(5);
        let due = move |i: u64| start + Duration::from_micros(37 * i);
        let queues = queues(pacing, n);
        let pacer = tokio::spawn(release(due, total, pacing.tick, queues.clone(), n));
        let workers: Vec<_> = (0..n)
            .map(|w| {
                let queue = queues[w % queues.len()].clone();
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    while let Some(i) = queue.take(total).await {
                        sent.push((i, Instant::now() < due(i)));
                        if w == 0 && sent.len() % 10 == 0 {
                            // Busy past several of its next due times.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    sent
                })
            })
            .collect();
        let all = async {
            let mut sent = Vec::new();
            for w in workers {
                sent.push(w.await.unwrap());
            }
            pacer.await.unwrap();
            sent
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("a worker was left waiting")
    }
}
