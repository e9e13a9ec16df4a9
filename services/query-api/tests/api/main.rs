//! query-api on its own: parameters, auth on reads, Redis outages, its contract.

use std::time::Duration;

use community_testkit::{Claims, System, TEST_SECRET, binary, eventually, token_with};
use reqwest::StatusCode;

mod backends;

const BASE: &str = "/api/v1/community";

#[tokio::test]
async fn bad_parameters_and_bad_tokens_are_4xx_problems() {
    let sys = System::start().await;
    let q = sys.query_api().await;
    let get = |path: &str| sys.http.get(q.http_url(&format!("{BASE}{path}"))).send();
    for path in [
        "/feed?limit=0",
        "/feed?limit=101",
        "/feed?limit=-3",
        "/feed?limit=ten",
        "/feed?cursor=%%%",
        "/feed?cursor=Zm9vYmFy",
        "/feed?consistency_token=nope",
        "/feed/users/nope",
        "/feed/posts/nope",
    ] {
        let res = get(path).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let res = get("/feed").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page, serde_json::json!({"items": [], "next_cursor": null}));
    let res = get(&format!("/feed/posts/{}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // A read with a bad token is a 401 (the client wants to know); none is anonymous.
    let mut expired = Claims::for_user(uuid::Uuid::new_v4());
    expired.exp = Some(chrono_like_now() - 3600);
    for tok in [token_with(&expired, TEST_SECRET), "garbage".to_string()] {
        let res = sys
            .http
            .get(q.http_url(&format!("{BASE}/feed")))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = sys
        .http
        .post(q.http_url(&format!("{BASE}/feed")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
}

fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn redis_down_means_503_with_retry_after_and_unready_then_recovery() {
    let mut sys = System::start().await;
    let q = sys.query_api().await;
    sys.redis.stop();
    let res = sys
        .http
        .get(q.http_url(&format!("{BASE}/feed")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    eventually("readiness to turn 503", Duration::from_secs(20), || async {
        let r = sys.http.get(q.admin_url("/readyz")).send().await.ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    sys.redis.start_again().await;
    q.wait_ready().await;
    let res = sys
        .http
        .get(q.http_url(&format!("{BASE}/feed")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn openapi_describes_the_queries() {
    let sys = System::start().await;
    let q = sys.query_api().await;
    let doc: serde_json::Value = sys
        .http
        .get(q.http_url(&format!("{BASE}/openapi.json")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/community/feed",
        "/api/v1/community/feed/users/{user_id}",
        "/api/v1/community/feed/posts/{post_id}",
    ] {
        let op = &doc["paths"][path]["get"];
        for status in ["200", "400", "401", "503"] {
            assert!(op["responses"][status].is_object(), "{path} lacks {status}");
        }
    }
}

#[tokio::test]
async fn worker_threads_size_the_runtime() {
    let sys = System::start().await;
    let started = |svc: &community_testkit::Service| -> u64 {
        svc.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "query-api starting")
            .and_then(|v| v["worker_threads"].as_u64())
            .expect("a start line with worker_threads")
    };
    let one = sys
        .service("query-api", &[("WORKER_THREADS", "1")], true)
        .await;
    one.wait_ready().await;
    assert_eq!(started(&one), 1);
    // By default, one per CPU the process may use.
    let default = sys.query_api().await;
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(started(&default), cpus);
}

#[test]
fn query_api_needs_no_database_and_links_no_sql_driver() {
    // Starts without DATABASE_URL; REDIS_URL is the one required variable.
    let out = std::process::Command::new(binary("query-api"))
        .env_clear()
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("REDIS_URL") && !err.contains("DATABASE_URL"),
        "{err}"
    );
    // No SQL crate in its dependency tree.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "query-api",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tree.stdout);
    assert!(
        tree.status.success() && text.contains("redis"),
        "{}",
        String::from_utf8_lossy(&tree.stderr)
    );
    for forbidden in ["sqlx", "tokio-postgres", "postgres ", "community-store"] {
        assert!(
            !text.lines().any(|l| l.starts_with(forbidden)),
            "query-api links {forbidden}"
        );
    }
}
