use std::process::Command;

use community_testkit::binary;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(binary("command-api"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run command-api");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const OK_ENV: [(&str, &str); 3] = [
    ("DATABASE_URL", "postgres://u@127.0.0.1:1/db"),
    ("REDIS_URL", "redis://127.0.0.1:1/"),
    ("AUTH_JWT_SECRET", "0123456789abcdef0123"),
];

#[test]
fn help_lists_every_variable() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "HTTP_ADDR",
        "ADMIN_ADDR",
        "AUTH_JWT_SECRET",
        "AUTH_JWT_ISSUER",
        "AUTH_JWT_AUDIENCE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "RUST_LOG",
        "LOG_FORMAT",
        "WORKER_THREADS",
        "migrate",
    ] {
        assert!(out.contains(var), "--help does not mention {var}");
    }
}

#[test]
fn a_missing_or_malformed_variable_is_one_clear_line() {
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "DATABASE_URL",
            OK_ENV
                .iter()
                .copied()
                .filter(|(k, _)| *k != "DATABASE_URL")
                .collect(),
        ),
        (
            "REDIS_URL",
            OK_ENV
                .iter()
                .copied()
                .filter(|(k, _)| *k != "REDIS_URL")
                .collect(),
        ),
        (
            "AUTH_JWT_SECRET",
            OK_ENV
                .iter()
                .copied()
                .filter(|(k, _)| *k != "AUTH_JWT_SECRET")
                .collect(),
        ),
        (
            "DATABASE_URL",
            [OK_ENV.to_vec(), vec![("DATABASE_URL", "mysql://x")]].concat(),
        ),
        (
            "REDIS_URL",
            [OK_ENV.to_vec(), vec![("REDIS_URL", "http://x")]].concat(),
        ),
        (
            "HTTP_ADDR",
            [OK_ENV.to_vec(), vec![("HTTP_ADDR", "localhost")]].concat(),
        ),
        (
            "ADMIN_ADDR",
            [OK_ENV.to_vec(), vec![("ADMIN_ADDR", "99999")]].concat(),
        ),
        (
            "LOG_FORMAT",
            [OK_ENV.to_vec(), vec![("LOG_FORMAT", "xml")]].concat(),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            [
                OK_ENV.to_vec(),
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")],
            ]
            .concat(),
        ),
        (
            "DATABASE_MAX_CONNECTIONS",
            [OK_ENV.to_vec(), vec![("DATABASE_MAX_CONNECTIONS", "lots")]].concat(),
        ),
        (
            "AUTH_JWT_SECRET",
            [OK_ENV.to_vec(), vec![("AUTH_JWT_SECRET", "short")]].concat(),
        ),
        // Tokio's own TOKIO_WORKER_THREADS would panic on these.
        (
            "WORKER_THREADS",
            [OK_ENV.to_vec(), vec![("WORKER_THREADS", "two")]].concat(),
        ),
        (
            "WORKER_THREADS",
            [OK_ENV.to_vec(), vec![("WORKER_THREADS", "0")]].concat(),
        ),
    ];
    for (var, env) in cases {
        let (code, _, err) = run(&[], &env);
        assert_eq!(code, 2, "{var}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: expected one line, got {err:?}");
        assert!(lines[0].contains(var), "{var} not named in {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // migrate needs only DATABASE_URL.
    let (code, _, err) = run(&["migrate"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("DATABASE_URL") && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = run(&["frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--help"), "{err}");
}
