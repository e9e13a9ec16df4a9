//! What the three Sparkle Community services agree on, written once.
//!
//! * the wire formats between them: the [`events`] envelope carried from the
//!   outbox through the Redis stream, the Redis [`keys`] of the read model, the
//!   stored [`views`] and the [`consistency`] token handed to clients;
//! * the runtime plumbing each binary needs: [`config`] from the environment,
//!   [`telemetry`], the [`admin`] server (probes and metrics), the HTTP
//!   conventions in [`http`] and [`problem`], bearer [`auth`] and [`shutdown`].
//!
//! It holds no service logic and no SQL driver: query-api depends on it and
//! must stay free of Postgres.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod consistency;
pub mod events;
pub mod http;
pub mod keys;
pub mod logs;
pub mod problem;
pub mod redis_conn;
pub mod shutdown;
pub mod telemetry;
pub mod views;

#[cfg(test)]
mod fuzz_tests;
