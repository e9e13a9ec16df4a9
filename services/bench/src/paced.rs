//! A constant-rate client (like wrk2): a fixed number of connections share one
//! timetable; each request is sent at its scheduled time (or at once when its
//! worker is late) and its latency is measured from the scheduled time, so a
//! slow response cannot hide the requests that should have been sent meanwhile.

use std::time::{Duration, Instant};

pub struct Paced {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// GETs `url` (or POSTs a new post when `tokens` is given) at `rate` per second
/// over `connections` workers.
pub async fn run(
    url: String,
    rate: f64,
    duration: Duration,
    tokens: Option<Vec<String>>,
    connections: usize,
) -> Paced {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::new();
    for w in 0..connections as u64 {
        let (client, url, tokens) = (client.clone(), url.clone(), tokens.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = w;
            while i < total {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                let req = match &tokens {
                    Some(t) => client
                        .post(&url)
                        .bearer_auth(&t[(i as usize) % t.len()])
                        .json(&serde_json::json!({"content": format!("paced post {i}")})),
                    None => client.get(&url),
                };
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(due.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
                i += connections as u64;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((lat, e)) = w.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Paced {
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        errors,
    }
}
