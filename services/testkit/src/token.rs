use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;
use uuid::Uuid;

/// The HS256 secret the harness configures services with.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef";

/// Claims of a test token; fields left `None` are omitted.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

impl Claims {
    /// A valid subject with an expiry an hour from now.
    pub fn for_user(id: Uuid) -> Self {
        Self {
            sub: Some(id.to_string()),
            exp: Some(chrono::Utc::now().timestamp() + 3600),
            ..Self::default()
        }
    }
}

/// A valid HS256 token for `user` signed with [`TEST_SECRET`].
pub fn token(user: Uuid) -> String {
    token_with(&Claims::for_user(user), TEST_SECRET)
}

/// A token with arbitrary claims and key.
pub fn token_with(claims: &Claims, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("cannot sign a test token: {e}"))
}
