use std::collections::HashMap;
use std::time::Duration;

use community_shared::keys;
use community_testkit::{Service, eventually, metric_sum};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::App;

type Entry = (String, HashMap<String, String>);

async fn stream(app: &App) -> Vec<Entry> {
    let mut conn = app.sys.redis.conn().await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys::STREAM)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    reply
        .ids
        .into_iter()
        .map(|id| {
            let fields = id
                .map
                .iter()
                .filter_map(|(k, v)| {
                    redis::from_redis_value::<String>(v.clone())
                        .ok()
                        .map(|v| (k.clone(), v))
                })
                .collect();
            (id.id, fields)
        })
        .collect()
}

async fn stream_of_len(app: &App, n: usize) -> Vec<Entry> {
    eventually(
        &format!("{n} stream entries"),
        Duration::from_secs(20),
        || async {
            let s = stream(app).await;
            (s.len() >= n).then_some(s)
        },
    )
    .await
}

#[tokio::test]
async fn every_command_reaches_the_stream_in_order_with_its_envelope() {
    let app = App::start().await;
    let (author, fan) = (Uuid::new_v4(), Uuid::new_v4());
    let res = app
        .as_user(app.sys.http.put(app.url("/profile")), author)
        .json(&json!({"username": "writer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let post = app.create_post(author, "hello").await;
    let id = post["id"].as_str().unwrap();
    assert_eq!(app.like(fan, id, true).await.status(), StatusCode::OK);
    assert_eq!(app.like(fan, id, false).await.status(), StatusCode::OK);
    let res = app
        .as_user(
            app.sys.http.delete(app.url(&format!("/posts/{id}"))),
            author,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let entries = stream_of_len(&app, 5).await;
    let kinds: Vec<&str> = entries.iter().map(|(_, f)| f["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "profile_updated",
            "post_created",
            "post_liked",
            "post_unliked",
            "post_deleted"
        ]
    );
    for (_, f) in &entries {
        let env = community_shared::events::Envelope::from_fields(f).expect("a decodable envelope");
        assert!(env.occurred_at_us > 0);
    }
    let liked = community_shared::events::Envelope::from_fields(&entries[2].1).unwrap();
    assert_eq!(
        liked.event,
        community_shared::events::DomainEvent::PostLiked {
            post_id: id.parse().unwrap(),
            user_id: fan
        }
    );
    // The relay's position has moved past every row, to the last stream entry.
    // (It moves right after the XADDs, so wait for it.)
    let pool = app.sys.pg.pool().await;
    let last = eventually("nothing pending", Duration::from_secs(10), || async {
        let (pending, last): (i64, Option<String>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox_pending), last_stream_id FROM outbox_relay",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (pending == 0).then_some(last)
    })
    .await;
    assert_eq!(last.as_deref(), entries.last().map(|(id, _)| id.as_str()));
}

#[tokio::test]
async fn with_redis_down_writes_succeed_and_every_event_arrives_once_in_order_later() {
    let mut app = App::start().await;
    let author = Uuid::new_v4();
    app.create_post(author, "before the outage").await;
    stream_of_len(&app, 1).await;

    app.sys.redis.stop();
    // The 25 writes below cross a power of ten in transaction ids (999 →
    // 1000), where text order and numeric order part: the relay must order
    // and resume by the number.
    let pool = app.sys.pg.pool().await;
    advance_to_just_below_a_power_of_ten(&pool, 12).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let post = app
            .create_post(author, &format!("during the outage {i}"))
            .await;
        ids.push(post["id"].as_str().unwrap().to_string());
    }
    let backlog = pending(&pool).await.unwrap();
    assert_eq!(
        backlog, 25,
        "nothing can have been published while Redis is down"
    );

    // Redis comes back empty (no persistence): the relay republishes nothing old,
    // and publishes the 25 pending events exactly once, in commit order.
    app.sys.redis.start_again().await;
    stream_of_len(&app, 25).await;
    // Once the position is past every row nothing can be sent again, so the
    // stream's final content can be counted.
    eventually(
        "the relay's position past every outbox row",
        Duration::from_secs(20),
        || async { (pending(&pool).await.ok()? == 0).then_some(()) },
    )
    .await;
    let entries = stream(&app).await;
    assert_eq!(entries.len(), 25, "an event was published twice");
    let seen: Vec<String> = entries
        .iter()
        .map(|(_, f)| {
            let v: serde_json::Value = serde_json::from_str(&f["payload"]).unwrap();
            v["post_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn two_replicas_elect_one_relay_leader_and_fail_over() {
    let app = App::start().await;
    let second: Service = app.sys.command_api_with(&[]).await;
    second.wait_ready().await;
    let leaders = || async { Some(leads(&app.api).await as u8 + leads(&second).await as u8) };
    eventually(
        "exactly one relay leader",
        Duration::from_secs(10),
        || async { (leaders().await == Some(1)).then_some(()) },
    )
    .await;

    // Writes through both replicas are all published, once each.
    let author = Uuid::new_v4();
    for i in 0..10 {
        let url = if i % 2 == 0 {
            app.url("/posts")
        } else {
            second.http_url("/api/v1/community/posts")
        };
        let res = app
            .as_user(app.sys.http.post(url), author)
            .json(&json!({"content": format!("p{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let entries = stream_of_len(&app, 10).await;
    assert_eq!(entries.len(), 10);

    // Whoever leads, kill it: the survivor takes over and publishes new writes.
    let first_leads = leads(&app.api).await;
    let App { sys, api } = app;
    let (mut dead, alive) = if first_leads {
        (api, second)
    } else {
        (second, api)
    };
    dead.kill9();
    let res = sys
        .http
        .post(alive.http_url("/api/v1/community/posts"))
        .bearer_auth(community_testkit::token(author))
        .json(&json!({"content": "after failover"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let mut conn = sys.redis.conn().await;
    eventually("the survivor to publish", Duration::from_secs(20), || {
        let mut conn = conn.clone();
        async move {
            let n: usize = redis::cmd("XLEN")
                .arg(keys::STREAM)
                .query_async(&mut conn)
                .await
                .ok()?;
            (n == 11).then_some(())
        }
    })
    .await;
    let n: usize = redis::cmd("XLEN")
        .arg(keys::STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 11);
}

/// An operator looking at `pg_stat_activity` sees which sessions are
/// command-api's and which one is the relay holding the leader lock.
#[tokio::test]
async fn postgres_sessions_name_the_service_and_the_relay_leader() {
    let app = App::start().await;
    let res = app
        .as_user(app.sys.http.put(app.url("/profile")), Uuid::new_v4())
        .json(&json!({"username": "named"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pool = app.sys.pg.pool().await;
    let leader: String = eventually("a relay leader", Duration::from_secs(10), || async {
        sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    assert_eq!(leader, "command-api relay");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT application_name FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND application_name <> 'testkit'
          ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(names, ["command-api", "command-api relay"]);
}

/// Events the relay has not published yet.
async fn pending(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox_pending")
        .fetch_one(pool)
        .await
}

/// Consumes transaction ids until the next power of ten is `margin` away, so
/// the next writes get ids on both sides of it (999 → 1000), where their text
/// and numeric orders part.
async fn advance_to_just_below_a_power_of_ten(pool: &sqlx::PgPool, margin: i64) {
    let start: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut boundary = 10i64.pow(start.to_string().len() as u32);
    if boundary - start <= margin {
        boundary *= 10;
    }
    for _ in start..boundary - margin {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn leads(svc: &Service) -> bool {
    metric_sum(&svc.metrics().await, "outbox_relay_leader ") == Some(1.0)
}

/// Scans of the outbox as Postgres counts them (sequential, index).
async fn outbox_scans(pool: &sqlx::PgPool) -> (i64, i64) {
    let mut conn = pool.acquire().await.unwrap();
    // A fresh read of the shared statistics, not this session's cached one.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'outbox'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// Statistics taken while the outbox was empty make a sequential scan look
/// free; the relay must still walk its index, batch after batch, or every
/// batch reads the whole table.
#[tokio::test]
async fn the_relay_reads_the_outbox_by_index_even_when_statistics_say_empty() {
    let app = App::start().await;
    let pool = app.sys.pg.pool().await;
    sqlx::query("ANALYZE outbox").execute(&pool).await.unwrap();
    let (seq_before, idx_before) = outbox_scans(&pool).await;
    // 20 000 pending events: 40 batches, enough for Postgres to switch the
    // relay's prepared statement to a generic plan (after 5 executions).
    let last: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, payload)
         SELECT gen_random_uuid(), 'post_created', 1, gen_random_uuid(), '{}'
           FROM generate_series(1, 20000)
         RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .max()
    .unwrap();
    eventually("every event published", Duration::from_secs(60), || async {
        let at: i64 = sqlx::query_scalar("SELECT last_id FROM outbox_relay")
            .fetch_one(&pool)
            .await
            .ok()?;
        (at >= last).then_some(())
    })
    .await;
    // The relay's statistics reach the shared view within about a second of
    // its work; wait until they show its 40 batches, then look at the scans.
    let (seq_after, _) = eventually(
        "the relay's scans counted",
        Duration::from_secs(20),
        || async {
            let scans = outbox_scans(&pool).await;
            (scans.1 - idx_before >= 40).then_some(scans)
        },
    )
    .await;
    assert_eq!(
        seq_after - seq_before,
        0,
        "the outbox was scanned sequentially"
    );
}

/// Statements of the relay's trim that are waiting for a lock.
async fn trims_waiting(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM idempotency_keys%'",
    )
    .fetch_one(pool)
    .await
    .ok()
}

/// The trim takes only published rows past the retention, and runs beside
/// publishing: a trim stuck behind a lock holds up neither the backlog nor new
/// writes on their way to the stream.
#[tokio::test]
async fn the_trim_takes_only_old_published_rows_and_never_holds_up_publishing() {
    let app = App::start().await;
    let pool = app.sys.pg.pool().await;
    let author = Uuid::new_v4();
    for i in 0..3 {
        app.create_post(author, &format!("published {i}")).await;
    }
    stream_of_len(&app, 3).await;
    eventually(
        "three events published",
        Duration::from_secs(20),
        || async { (pending(&pool).await.ok()? == 0).then_some(()) },
    )
    .await;

    // With the service and Redis down: one more event, not published, and
    // all four rows two hours old (the retention is one hour).
    let App { mut sys, mut api } = app;
    api.sigterm();
    api.wait_exit(Duration::from_secs(30)).await;
    sys.redis.stop();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, payload)
         VALUES (gen_random_uuid(), 'post_created', 1, gen_random_uuid(), '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE outbox SET created_at = now() - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    // The trim's second statement (expired idempotency keys) will wait on
    // this. SHARE mode, because it takes no transaction id: one would hold
    // the relay's xmin horizon, and so every newer event, back.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE idempotency_keys IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    // A new leader trims at once: the three published rows go, the pending
    // one stays, then the trim waits on the lock.
    let api = sys.command_api_with(&[]).await;
    api.wait_ready().await;
    eventually(
        "the trim waiting on the lock",
        Duration::from_secs(20),
        || async { (trims_waiting(&pool).await? == 1).then_some(()) },
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "the trim must take the published old rows only");
    assert_eq!(pending(&pool).await.unwrap(), 1);

    // Redis back (empty): the old pending event and a new write are both
    // published while the trim still waits.
    sys.redis.start_again().await;
    let app = App { sys, api };
    app.create_post(author, "written during the trim").await;
    let entries = stream_of_len(&app, 2).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].1["payload"], "{}", "the backlog goes first");
    assert!(entries[1].1["payload"].contains("post_id"));
    assert_eq!(
        trims_waiting(&pool).await,
        Some(1),
        "the trim finished early"
    );

    // Released, the trim completes, and the relay keeps leading.
    blocker.rollback().await.unwrap();
    eventually("the trim to finish", Duration::from_secs(20), || async {
        (trims_waiting(&pool).await? == 0).then_some(())
    })
    .await;
    assert!(leads(&app.api).await);
}
