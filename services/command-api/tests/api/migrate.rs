use community_testkit::System;

#[tokio::test]
async fn migrate_is_idempotent_and_safe_when_two_run_at_once() {
    let sys = System::start().await;
    // Two at once: sqlx serializes them on an advisory lock; both succeed.
    let ((s1, e1), (s2, e2)) = tokio::join!(sys.migrate(), sys.migrate());
    assert!(s1.success(), "{e1}");
    assert!(s2.success(), "{e2}");
    // And again: nothing to do.
    let (s3, e3) = sys.migrate().await;
    assert!(s3.success(), "{e3}");

    let pool = sys.pg.pool().await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<i64> = community_store::MIGRATOR
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, expected);
    for table in ["users", "posts", "post_likes", "outbox", "idempotency_keys"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn the_schema_enforces_the_rules_too() {
    let sys = System::start().await;
    assert!(sys.migrate().await.0.success());
    let pool = sys.pg.pool().await;
    let a = uuid::Uuid::new_v4();
    let ok = |sql: &str| sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&pool);
    ok(&format!(
        "INSERT INTO users (id, username) VALUES ('{a}', 'alice')"
    ))
    .await
    .unwrap();
    for bad in [
        format!(
            "INSERT INTO users (id, username) VALUES ('{}', 'alice')",
            uuid::Uuid::new_v4()
        ),
        format!(
            "INSERT INTO users (id, username) VALUES ('{}', 'No Caps')",
            uuid::Uuid::new_v4()
        ),
        format!("UPDATE users SET avatar_url = 'http://x' WHERE id = '{a}'"),
        format!(
            "INSERT INTO posts (id, author_id, content) VALUES ('{}', '{a}', '')",
            uuid::Uuid::new_v4()
        ),
    ] {
        assert!(ok(&bad).await.is_err(), "accepted: {bad}");
    }
    let p = uuid::Uuid::new_v4();
    ok(&format!(
        "INSERT INTO posts (id, author_id, content) VALUES ('{p}', '{a}', 'x')"
    ))
    .await
    .unwrap();
    ok(&format!(
        "INSERT INTO post_likes (post_id, user_id) VALUES ('{p}', '{a}')"
    ))
    .await
    .unwrap();
    assert!(
        ok(&format!(
            "INSERT INTO post_likes (post_id, user_id) VALUES ('{p}', '{a}')"
        ))
        .await
        .is_err()
    );
}
