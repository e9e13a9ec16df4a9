use std::time::{Duration, Instant};

use community_testkit::{System, token};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::assert_problem;

#[tokio::test]
async fn slow_clients_are_cut_off_and_hostile_bodies_are_bounded() {
    let sys = System::start().await;
    assert!(sys.migrate().await.0.success());
    let api = sys
        .command_api_with(&[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "500"),
            ("REQUEST_TIMEOUT_MS", "1000"),
        ])
        .await;
    api.wait_ready().await;
    let addr = api.http_url("").trim_start_matches("http://").to_string();

    // A client that never finishes its request head is disconnected.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/v1/community/openapi.json HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server must hang up");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Either a plain close or a 408 before closing; never a served request.
    let text = String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).to_string();
    assert!(text.is_empty() || text.contains("408"), "{text}");

    // A client that sends its body too slowly gets a 503 at the request deadline.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/community/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"content\":",
        token(Uuid::new_v4())
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            match trickle.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&chunk[..n]);
                    if response.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a trickling body");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");

    // Deeply nested JSON is a 400, and the process lives on.
    let nested = format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000));
    for body in [nested.clone(), format!("{{\"content\": {nested}}}")] {
        let res = sys
            .http
            .post(api.http_url("/api/v1/community/posts"))
            .bearer_auth(token(Uuid::new_v4()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let deep = format!(
        "{{\"content\": {}\"x\"{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let res = sys
        .http
        .post(api.http_url("/api/v1/community/posts"))
        .bearer_auth(token(Uuid::new_v4()))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::BAD_REQUEST).await;

    // Oversized headers are refused.
    let res = sys
        .http
        .get(api.http_url("/api/v1/community/openapi.json"))
        .header("x-junk", "j".repeat(100 * 1024))
        .send()
        .await;
    let outcome = res.map(|r| r.status());
    assert!(
        outcome
            .as_ref()
            .map(|s| s.is_client_error())
            .unwrap_or(true),
        "{outcome:?}"
    );
    let res = sys
        .http
        .get(api.http_url("/api/v1/community/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the server survives all of the above"
    );
}
