use std::collections::HashMap;
use std::time::Duration;

use community_testkit::otlp::{CLIENT, CONSUMER, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER};
use community_testkit::{Stack, eventually, token};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// A client-side trace: (trace id, the client's span id).
fn client_trace() -> (String, String) {
    let t = Uuid::new_v4().simple().to_string();
    let s = Uuid::new_v4().simple().to_string()[..16].to_string();
    (t, s)
}

async fn post_traced(stack: &Stack, trace: &(String, String)) -> reqwest::Response {
    stack
        .sys
        .http
        .post(stack.cmd_url("/posts"))
        .bearer_auth(token(Uuid::new_v4()))
        .header("traceparent", format!("00-{}-{}-01", trace.0, trace.1))
        .json(&json!({"content": "traced"}))
        .send()
        .await
        .unwrap()
}

/// The spans of one write, from the client's span to the Redis view.
struct WriteTrace {
    server: ReceivedSpan,
    transaction: ReceivedSpan,
    producer: ReceivedSpan,
    consumer: ReceivedSpan,
    reread: ReceivedSpan,
    view_write: ReceivedSpan,
}

async fn write_trace(rx: &OtlpReceiver, trace: &(String, String)) -> WriteTrace {
    eventually(
        "the spans of the write",
        Duration::from_secs(30),
        || async {
            let spans = rx.spans();
            let in_trace = |s: &&ReceivedSpan| s.trace_id == trace.0;
            let server = spans
                .iter()
                .filter(in_trace)
                .find(|s| s.kind == SERVER && s.service == "command-api")?
                .clone();
            let transaction = spans
                .iter()
                .filter(in_trace)
                .find(|s| s.name == "TRANSACTION create_post")?
                .clone();
            let producer = spans
                .iter()
                .filter(in_trace)
                .find(|s| s.kind == PRODUCER && s.attributes.contains_key("messaging.message.id"))?
                .clone();
            // The consumer is the producer's child (one event) or links to it (a batch).
            let consumer = spans
                .iter()
                .find(|s| {
                    s.kind == CONSUMER
                        && ((s.trace_id == trace.0 && s.parent_span_id == producer.span_id)
                            || s.links
                                .contains(&(trace.0.clone(), producer.span_id.clone())))
                })?
                .clone();
            let child_of = |parent: &ReceivedSpan, name: &str| {
                spans
                    .iter()
                    .find(|s| {
                        s.trace_id == parent.trace_id
                            && s.parent_span_id == parent.span_id
                            && s.name == name
                    })
                    .cloned()
            };
            let reread = child_of(&consumer, "SELECT posts")?;
            let view_write = child_of(&consumer, "PIPELINE views")?;
            Some(WriteTrace {
                server,
                transaction,
                producer,
                consumer,
                reread,
                view_write,
            })
        },
    )
    .await
}

fn check(t: &WriteTrace, trace: &(String, String)) {
    // The server span continues the client's trace.
    assert_eq!(t.server.parent_span_id, trace.1);
    assert_eq!(t.server.name, "POST /api/v1/community/posts");
    assert_eq!(t.server.attributes["http.route"], "/api/v1/community/posts");
    assert_eq!(t.server.attributes["http.request.method"], "POST");
    assert_eq!(t.server.attributes["http.response.status_code"], "201");
    assert_eq!(t.transaction.kind, CLIENT);
    assert_eq!(t.transaction.parent_span_id, t.server.span_id);
    assert_eq!(t.transaction.attributes["db.system.name"], "postgresql");
    // The relay's PRODUCER span hangs under the request that wrote the event.
    assert_eq!(t.producer.parent_span_id, t.transaction.span_id);
    assert_eq!(t.producer.service, "command-api");
    assert_eq!(t.producer.attributes["messaging.system"], "redis");
    assert_eq!(
        t.producer.attributes["messaging.destination.name"],
        "sparkle:stream:events"
    );
    assert!(t.producer.attributes["messaging.message.id"].contains('-'));
    assert_eq!(t.consumer.service, "projector");
    assert_eq!(
        t.consumer.attributes["messaging.consumer.group.name"],
        "projector"
    );
    assert_eq!(
        t.consumer.attributes["messaging.destination.name"],
        "sparkle:stream:events"
    );
    assert!(
        t.consumer.attributes["messaging.batch.message_count"]
            .parse::<u32>()
            .unwrap()
            >= 1
    );
    assert_eq!(t.reread.kind, CLIENT);
    assert_eq!(t.reread.attributes["db.system.name"], "postgresql");
    assert_eq!(t.view_write.kind, CLIENT);
    assert_eq!(t.view_write.attributes["db.system.name"], "redis");
}

/// Prints the span tree of a trace (for the record; shown with --nocapture).
fn print_tree(rx: &OtlpReceiver, t: &WriteTrace) {
    let spans = rx.spans();
    let mut children: HashMap<String, Vec<&ReceivedSpan>> = HashMap::new();
    for s in &spans {
        if s.trace_id == t.server.trace_id || s.trace_id == t.consumer.trace_id {
            children
                .entry(s.parent_span_id.clone())
                .or_default()
                .push(s);
        }
    }
    fn walk(children: &HashMap<String, Vec<&ReceivedSpan>>, id: &str, depth: usize) {
        for s in children.get(id).into_iter().flatten() {
            let kind = [
                "unspecified",
                "internal",
                "server",
                "client",
                "producer",
                "consumer",
            ]
            .get(s.kind as usize)
            .copied()
            .unwrap_or("?");
            let links = if s.links.is_empty() {
                String::new()
            } else {
                format!(" links={}", s.links.len())
            };
            eprintln!(
                "{}{} [{}] {} ({}){}",
                "  ".repeat(depth),
                s.name,
                kind,
                s.service,
                &s.span_id[..8],
                links
            );
            walk(children, &s.span_id, depth + 1);
        }
    }
    eprintln!("trace {}", t.server.trace_id);
    walk(&children, &t.server.parent_span_id, 1);
    if t.consumer.trace_id != t.server.trace_id {
        eprintln!("linked consumer trace {}", t.consumer.trace_id);
        walk(&children, &t.consumer.parent_span_id, 1);
    }
}

async fn one_trace_end_to_end(rx: OtlpReceiver) {
    let mut stack = Stack::start_with(|svc| {
        let mut env = rx.env(svc);
        env.push((
            "RUST_LOG".into(),
            "info,community_shared::http=debug".into(),
        ));
        env
    })
    .await;
    let trace = client_trace();
    assert_eq!(
        post_traced(&stack, &trace).await.status(),
        StatusCode::CREATED
    );
    let t = write_trace(&rx, &trace).await;
    check(&t, &trace);
    print_tree(&rx, &t);

    // Log lines inside the request carry its trace id.
    let lines = stack.command.log_lines();
    let with_trace: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("\"trace_id\":\"{}\"", trace.0)))
        .collect();
    assert!(
        !with_trace.is_empty(),
        "no log line carries the request's trace id:\n{}",
        lines.join("\n")
    );
    for l in &with_trace {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["span_id"].as_str().is_some_and(|s| s.len() == 16), "{l}");
    }

    // A write made while Redis is down keeps its trace through the outbox.
    stack.sys.redis.stop();
    let outage = client_trace();
    assert_eq!(
        post_traced(&stack, &outage).await.status(),
        StatusCode::CREATED
    );
    stack.sys.redis.start_again().await;
    let t = write_trace(&rx, &outage).await;
    check(&t, &outage);
    stack.projector.take();
}

#[tokio::test]
async fn one_write_is_one_trace_over_otlp_http() {
    one_trace_end_to_end(OtlpReceiver::http().await).await;
}

#[tokio::test]
async fn one_write_is_one_trace_over_otlp_grpc() {
    one_trace_end_to_end(OtlpReceiver::grpc().await).await;
}
