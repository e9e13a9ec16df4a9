//! command-api against a real Postgres and Redis, through its real HTTP API.

mod helpers;

mod abuse;
mod auth;
mod config;
mod idempotency;
mod likes;
mod logs;
mod migrate;
mod outbox;
mod posts;
mod probes;
mod profile;
