//! The session settings every service connection gets.

use std::collections::HashMap;

use community_shared::config::Env;
use community_store::DbConfig;
use community_testkit::Postgres;

#[tokio::test]
async fn service_connections_run_without_jit_with_generic_plans_and_timeouts() {
    let pg = Postgres::start().await;
    let vars = HashMap::from([("DATABASE_URL".to_string(), pg.url())]);
    let config = DbConfig::from_env(&Env::new(&vars), "projector").unwrap();
    let pool = config.pool();
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings
          WHERE name IN ('jit', 'statement_timeout', 'idle_in_transaction_session_timeout',
                         'plan_cache_mode')
          ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("idle_in_transaction_session_timeout", "30000"),
            ("jit", "off"),
            ("plan_cache_mode", "force_generic_plan"),
            ("statement_timeout", "10000"),
        ]
    );
}

/// Each service's sessions carry its name, so `pg_stat_activity` and the
/// server log tell command-api from the projector; a name in the URL wins.
#[tokio::test]
async fn sessions_are_named_after_the_service_unless_the_url_names_them() {
    let pg = Postgres::start().await;
    for (url, expected) in [
        (pg.url(), "projector"),
        (
            format!("{}?application_name=reporting", pg.url()),
            "reporting",
        ),
    ] {
        let vars = HashMap::from([("DATABASE_URL".to_string(), url)]);
        let pool = DbConfig::from_env(&Env::new(&vars), "projector")
            .unwrap()
            .pool();
        let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(name, expected);
    }
}
