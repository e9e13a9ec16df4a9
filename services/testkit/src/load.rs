//! A mixed load of reads and writes against the running system, for the
//! fault, crash and soak tests. Counts every outcome; the tests decide what
//! is acceptable (typically: no 5xx, and only connection errors while a
//! process is down).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::stack::BASE;
use crate::token;

/// Where the load goes; tests swap URLs when they restart a process.
#[derive(Clone)]
pub struct Targets {
    pub command: String,
    pub query: String,
}

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP response (refused, reset, timed out).
    pub transport_errors: u64,
    /// Of those, connections refused (the process was not listening).
    pub refused: u64,
    pub ops: u64,
}

impl Report {
    pub fn server_errors(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    fn merge(&mut self, other: &Report) {
        for (s, n) in &other.by_status {
            *self.by_status.entry(*s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.refused += other.refused;
        self.ops += other.ops;
    }
}

/// xorshift64*: enough randomness for an operation mix, no extra dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self((Uuid::new_v4().as_u128() as u64) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The shape of the load.
#[derive(Clone)]
pub struct Mix {
    pub workers: usize,
    pub users: usize,
    /// Pause between one worker's operations (a steady rate), or none.
    pub pace: Option<Duration>,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            workers: 8,
            users: 24,
            pace: None,
        }
    }
}

/// Runs the mix until `stop` is set, then returns what it saw.
pub async fn run(
    http: reqwest::Client,
    targets: Arc<RwLock<Targets>>,
    mix: Mix,
    stop: Arc<AtomicBool>,
) -> Report {
    let users: Arc<Vec<(Uuid, String)>> = Arc::new(
        (0..mix.users)
            .map(|_| {
                let u = Uuid::new_v4();
                (u, token(u))
            })
            .collect(),
    );
    let posts: Arc<Mutex<Vec<(String, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..mix.workers {
        let (http, targets, users, posts, stop, pace) = (
            http.clone(),
            targets.clone(),
            users.clone(),
            posts.clone(),
            stop.clone(),
            mix.pace,
        );
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new();
            let mut report = Report::default();
            while !stop.load(Ordering::Relaxed) {
                let t = targets.read().unwrap_or_else(|p| p.into_inner()).clone();
                let ui = rng.below(users.len() as u64) as usize;
                let (user, tok) = &users[ui];
                let pick = {
                    let p = posts.lock().unwrap_or_else(|p| p.into_inner());
                    (!p.is_empty()).then(|| p[rng.below(p.len() as u64) as usize].clone())
                };
                let roll = rng.below(100);
                let cmd = |path: &str| format!("{}{BASE}{path}", t.command);
                let qry = |path: &str| format!("{}{BASE}{path}", t.query);
                let req = match (roll, &pick) {
                    (0..=29, _) | (_, None) => http
                        .post(cmd("/posts"))
                        .bearer_auth(tok)
                        .json(&json!({"content": format!("load {}", rng.next())})),
                    (30..=49, Some((id, _))) => http.post(cmd(&format!("/posts/{id}/like"))).bearer_auth(tok),
                    (50..=59, Some((id, _))) => http.delete(cmd(&format!("/posts/{id}/like"))).bearer_auth(tok),
                    (60..=64, Some((id, author))) => {
                        // Only the author may delete; use their token.
                        http.delete(cmd(&format!("/posts/{id}"))).bearer_auth(&users[*author].1)
                    }
                    (65..=69, _) => http
                        .put(cmd("/profile"))
                        .bearer_auth(tok)
                        .json(&json!({"username": format!("u{}_{}", ui, rng.below(1000)), "display_name": format!("User {}", rng.below(100))})),
                    (70..=84, _) => http.get(qry("/feed?limit=20")),
                    (85..=92, Some((id, _))) => http.get(qry(&format!("/feed/posts/{id}"))).bearer_auth(tok),
                    _ => http.get(qry(&format!("/feed/users/{user}"))),
                };
                report.ops += 1;
                match req.send().await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        *report.by_status.entry(status).or_default() += 1;
                        if status == 201
                            && let Ok(v) = res.json::<serde_json::Value>().await
                                && let Some(id) = v["id"].as_str() {
                                    posts.lock().unwrap_or_else(|p| p.into_inner()).push((id.to_string(), ui));
                                }
                    }
                    Err(e) => {
                        report.transport_errors += 1;
                        if e.is_connect() {
                            report.refused += 1;
                        }
                    }
                }
                if let Some(p) = pace {
                    tokio::time::sleep(p).await;
                }
            }
            report
        }));
    }
    let mut total = Report::default();
    for h in handles {
        if let Ok(r) = h.await {
            total.merge(&r);
        }
    }
    total
}

/// Runs the mix for `duration` and returns the report.
pub async fn run_for(
    http: reqwest::Client,
    targets: Arc<RwLock<Targets>>,
    mix: Mix,
    duration: Duration,
) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let started = Instant::now();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
        s.store(true, Ordering::Relaxed);
    });
    let report = run(http, targets, mix, stop).await;
    let _ = timer.await;
    report
}
