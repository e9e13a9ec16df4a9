//! Bearer authentication: HS256 JWTs signed with `AUTH_JWT_SECRET` (CONTRACT §3).
//!
//! Only HS256 is accepted (so `alg: none` or an RSA/EC header is refused),
//! `sub` must be a UUID and `exp` is required; `nbf`, and `iss`/`aud` when
//! configured, are enforced. Every rejection gets the same 401 body so a
//! caller learns nothing about how close a forged token came.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::{ConfigError, Env};
use crate::problem::Problem;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Verification settings read from the environment.
#[derive(Clone)]
pub struct AuthConfig {
    pub secret: Vec<u8>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl AuthConfig {
    /// `AUTH_JWT_SECRET` (+ optional issuer/audience); `None` when the secret is unset.
    pub fn from_env(env: &Env<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(secret) = env.optional("AUTH_JWT_SECRET") else {
            return Ok(None);
        };
        if secret.len() < 16 {
            return Err(ConfigError {
                var: "AUTH_JWT_SECRET".into(),
                problem: "must be at least 16 bytes long".into(),
            });
        }
        Ok(Some(Self {
            secret: secret.into_bytes(),
            issuer: env.optional("AUTH_JWT_ISSUER"),
            audience: env.optional("AUTH_JWT_AUDIENCE"),
        }))
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    preferred_username: Option<String>,
}

/// Checks tokens; built once at start.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn new(config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        let mut required = vec!["exp", "sub"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            key: DecodingKey::from_secret(&config.secret),
            validation,
        }
    }

    /// Verifies a raw token; the error is for logs only, never for the client.
    pub fn verify(&self, token: &str) -> Result<AuthUser, String> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| e.to_string())?;
        let id = Uuid::parse_str(&data.claims.sub).map_err(|_| "sub is not a UUID".to_string())?;
        Ok(AuthUser {
            id,
            preferred_username: data.claims.preferred_username,
        })
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub preferred_username: Option<String>,
}

/// Implemented by router states that carry a verifier (`None` = auth not configured).
pub trait HasVerifier {
    fn verifier(&self) -> Option<&Arc<JwtVerifier>>;
}

const INVALID: &str = "the bearer token is missing, malformed, expired or not valid";

fn bearer(parts: &Parts) -> Option<Result<&str, ()>> {
    let value = parts.headers.get(AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(()));
    };
    let mut it = value.splitn(2, ' ');
    match (it.next(), it.next()) {
        (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Some(Err(()))
            } else {
                Some(Ok(token))
            }
        }
        _ => Some(Err(())),
    }
}

fn authenticate<S: HasVerifier>(parts: &Parts, state: &S) -> Result<Option<AuthUser>, Problem> {
    let token = match bearer(parts) {
        None => return Ok(None),
        Some(Err(())) => return Err(Problem::unauthorized(INVALID)),
        Some(Ok(t)) => t,
    };
    let Some(verifier) = state.verifier() else {
        // No secret configured: a token cannot be checked, so it personalises nothing.
        return Ok(None);
    };
    match verifier.verify(token) {
        Ok(user) => Ok(Some(user)),
        Err(reason) => {
            tracing::debug!(%reason, "bearer token rejected");
            Err(Problem::unauthorized(INVALID))
        }
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: HasVerifier + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if state.verifier().is_none() {
            return Err(Problem::unauthorized(INVALID));
        }
        authenticate(parts, state)?.ok_or_else(|| {
            Problem::unauthorized("authentication required: send Authorization: Bearer <token>")
        })
    }
}

/// An optional caller: anonymous without a header, 401 with a bad one.
#[derive(Debug, Clone)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl<S> FromRequestParts<S> for MaybeAuthUser
where
    S: HasVerifier + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).map(MaybeAuthUser)
    }
}
