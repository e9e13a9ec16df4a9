//! The one error type of command-api's handlers, mapped to problem+json.
//!
//! Client mistakes are built as [`Problem`]s directly. Database errors are
//! classified here: unreachable → 503 with `Retry-After`; a constraint that
//! encodes a contract rule → its 4xx; anything else → a logged 500 whose
//! details never reach the client.

use axum::response::{IntoResponse, Response};
use community_shared::problem::Problem;

#[derive(Debug)]
pub enum ApiError {
    Client(Problem),
    Db(sqlx::Error),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Client(p)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl ApiError {
    pub fn into_problem(self) -> Problem {
        match self {
            Self::Client(p) => p,
            Self::Db(e) => {
                if community_store::is_unavailable(&e) {
                    tracing::warn!(error = %e, "database unavailable");
                    return Problem::unavailable(
                        "the database is unavailable; try again shortly",
                        2,
                    );
                }
                if let sqlx::Error::Database(db) = &e {
                    match db.constraint() {
                        Some("users_username_key") => {
                            return Problem::conflict("this username is taken");
                        }
                        Some("idempotency_keys_pkey") => {
                            return Problem::conflict(
                                "a request with this Idempotency-Key is in progress",
                            );
                        }
                        _ => {}
                    }
                }
                tracing::error!(error = %e, "unexpected database error");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_problem().into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
