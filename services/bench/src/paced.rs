//! A constant-rate client (like wrk2): requests are scheduled on a fixed
//! timetable and latency is measured from the scheduled time, so a slow
//! response cannot hide the requests that should have been sent meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Paced {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// GETs `url` (or POSTs a new post when `tokens` is given) at `rate` per second.
pub async fn run(url: String, rate: f64, duration: Duration, tokens: Option<Vec<String>>) -> Paced {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let lat: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0u64));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut i: u64 = 0;
    loop {
        let due = start + interval.mul_f64(i as f64);
        if due.duration_since(start) >= duration {
            break;
        }
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let (client, url, lat, errors) = (client.clone(), url.clone(), lat.clone(), errors.clone());
        let tok = tokens.as_ref().map(|t| t[(i as usize) % t.len()].clone());
        handles.push(tokio::spawn(async move {
            let req = match tok {
                Some(t) => client
                    .post(&url)
                    .bearer_auth(t)
                    .json(&serde_json::json!({"content": format!("paced post {i}")})),
                None => client.get(&url),
            };
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    lat.lock()
                        .unwrap()
                        .push(due.elapsed().as_secs_f64() * 1000.0);
                }
                _ => *errors.lock().unwrap() += 1,
            }
        }));
        i += 1;
    }
    for h in handles {
        let _ = h.await;
    }
    let mut v = lat.lock().unwrap().clone();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Paced {
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        errors: *errors.lock().unwrap(),
    }
}
