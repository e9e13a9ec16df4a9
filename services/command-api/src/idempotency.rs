//! `Idempotency-Key` for `POST /posts` (CONTRACT §4).
//!
//! The key row is inserted in the same transaction as the post and holds the
//! response. A retry with the same key and body replays that response and
//! creates nothing; with a different body it is a 422. Two concurrent
//! requests with one key serialize on the primary key: the second waits for
//! the first to commit, then replays its response. Keys expire after 24 h.

use axum::http::StatusCode;
use community_shared::problem::{FieldError, Problem};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::ApiResult;

/// A stored response, replayed as it was.
#[derive(Debug, Clone)]
pub struct SavedResponse {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub location: Option<String>,
    pub consistency_token: Option<String>,
}

/// Hash of the request body, insensitive to whitespace and key order.
pub fn request_hash(body: &serde_json::Value) -> Vec<u8> {
    // serde_json's map is ordered by key, so this serialization is canonical.
    Sha256::digest(body.to_string().as_bytes()).to_vec()
}

pub enum Begin {
    /// First use of the key: go on, then [`save`] the response.
    Fresh,
    /// The key was used with the same body: replay this.
    Replay(SavedResponse),
}

/// Claims the key for this request, or finds the earlier response.
pub async fn begin(
    tx: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    hash: &[u8],
) -> ApiResult<Begin> {
    sqlx::query(
        "DELETE FROM idempotency_keys
          WHERE user_id = $1 AND key = $2 AND created_at < now() - interval '24 hours'",
    )
    .bind(user_id)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT request_hash, response_status, response_body, location, consistency_token
           FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Begin::Fresh);
    };
    let stored_hash: Vec<u8> = row.try_get("request_hash")?;
    if stored_hash != hash {
        return Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "was already used with a different request body",
        )])
        .into());
    }
    let status: i16 = row.try_get("response_status")?;
    Ok(Begin::Replay(SavedResponse {
        status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
        body: row
            .try_get::<sqlx::types::Json<serde_json::Value>, _>("response_body")?
            .0,
        location: row.try_get("location")?,
        consistency_token: row.try_get("consistency_token")?,
    }))
}

/// Stores the response under the key, in the command's transaction.
///
/// If a concurrent request with the same key committed first, the insert
/// fails on the primary key and this request's transaction rolls back: the
/// caller retries once and then replays the winner's response.
pub async fn save(
    tx: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    hash: &[u8],
    response: &SavedResponse,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO idempotency_keys
            (user_id, key, request_hash, response_status, response_body, location, consistency_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user_id)
    .bind(key)
    .bind(hash)
    .bind(response.status.as_u16() as i16)
    .bind(sqlx::types::Json(&response.body))
    .bind(&response.location)
    .bind(&response.consistency_token)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether an error is the unique violation of a concurrent request with the same key.
pub fn is_key_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some("idempotency_keys_pkey"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_formatting_and_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"content":"x","b":1}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str("{ \"b\" : 1, \"content\" : \"x\" }").unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"content":"y","b":1}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
    }
}
