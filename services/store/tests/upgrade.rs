//! Upgrading a database that already holds data, one migration at a time.

use community_store::MIGRATOR;
use community_testkit::Postgres;

/// 0002 replaces per-row publish marks by the relay's position: a database
/// migrated from 0001 must resume exactly after the last published row,
/// neither re-sending what was published nor skipping what was not.
#[tokio::test]
async fn the_relay_position_starts_after_the_last_row_marked_published() {
    let pg = Postgres::start().await;
    let pool = pg.pool().await;
    MIGRATOR.run_to(1, &pool).await.unwrap();
    for (n, published) in [(1, true), (2, true), (3, true), (4, false), (5, false)] {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, payload,
                                 published_at, stream_id)
             VALUES (gen_random_uuid(), 'post_created', 1, gen_random_uuid(), '{}',
                     CASE WHEN $1 THEN now() END, CASE WHEN $1 THEN $2 END)",
        )
        .bind(published)
        .bind(format!("{n}-0"))
        .execute(&pool)
        .await
        .unwrap();
    }
    MIGRATOR.run(&pool).await.unwrap();

    let (last_id, last_stream_id): (i64, Option<String>) =
        sqlx::query_as("SELECT last_id, last_stream_id FROM outbox_relay")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((last_id, last_stream_id.as_deref()), (3, Some("3-0")));
    let pending: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox_pending ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(pending, [4, 5]);
}

#[tokio::test]
async fn an_empty_database_starts_at_the_beginning() {
    let pg = Postgres::start().await;
    let pool = pg.pool().await;
    MIGRATOR.run(&pool).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_relay WHERE last_id = 0")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // One row only: the position is a singleton.
    let second = sqlx::query("INSERT INTO outbox_relay (singleton) VALUES (false)")
        .execute(&pool)
        .await;
    assert!(second.is_err());
}
