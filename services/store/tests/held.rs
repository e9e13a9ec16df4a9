//! `HeldConnection`: one connection, statement after statement, replaced only
//! when it is gone.

use std::collections::HashMap;

use community_shared::config::Env;
use community_store::{DbConfig, HeldConnection, is_unavailable};
use community_testkit::Postgres;

async fn backend_pid(held: &mut HeldConnection) -> i32 {
    held.run(async |c| {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(c)
            .await
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn keeps_its_connection_through_statement_errors_and_replaces_a_dead_one() {
    let pg = Postgres::start().await;
    let vars = HashMap::from([("DATABASE_URL".to_string(), pg.url())]);
    let pool = DbConfig::from_env(&Env::new(&vars), "command-api")
        .unwrap()
        .pool();
    let mut held = HeldConnection::new(pool.clone());

    // The same backend answers every statement, while others use the pool.
    let first = backend_pid(&mut held).await;
    let other: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(other, first, "the held connection is not lent out");
    assert_eq!(backend_pid(&mut held).await, first);

    // A statement's own error (division by zero) leaves the connection held.
    let err = held
        .run(async |c| sqlx::query("SELECT 1 / 0").execute(c).await)
        .await
        .unwrap_err();
    assert!(!is_unavailable(&err), "{err}");
    assert_eq!(backend_pid(&mut held).await, first);

    // Killed from outside: the next statement fails as unavailable (the 503
    // the caller answers), and the one after runs on a fresh connection.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(killed);
    let err = held
        .run(async |c| sqlx::query("SELECT 1").execute(c).await)
        .await
        .unwrap_err();
    assert!(is_unavailable(&err), "{err}");
    let second = backend_pid(&mut held).await;
    assert_ne!(second, first);
    assert_eq!(backend_pid(&mut held).await, second);
}
