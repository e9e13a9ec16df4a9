//! The REST queries (CONTRACT §4 Queries): feeds and post views, from Redis only.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use community_shared::auth::{HasVerifier, JwtVerifier, MaybeAuthUser};
use community_shared::consistency::ConsistencyToken;
use community_shared::http::{PathParam, QueryParams};
use community_shared::keys;
use community_shared::problem::Problem;
use serde::Deserialize;
use uuid::Uuid;

use crate::cursor;
use crate::read_model::{Freshness, PageOf, ReadModel};

pub const BASE: &str = "/api/v1/community";
const CONSISTENCY_TOKEN: &str = "x-consistency-token";
const CONSISTENCY: HeaderName = HeaderName::from_static("x-consistency");
const OPENAPI: &str = include_str!("../openapi.json");
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// What the handlers share, behind one `Arc`: every request clones it.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub read_model: ReadModel,
    pub verifier: Option<Arc<JwtVerifier>>,
    pub consistency_wait: Duration,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl HasVerifier for AppState {
    fn verifier(&self) -> Option<&Arc<JwtVerifier>> {
        self.verifier.as_ref()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(&format!("{BASE}/openapi.json"), get(openapi))
        .route(&format!("{BASE}/feed"), get(global_feed))
        .route(&format!("{BASE}/feed/users/{{user_id}}"), get(author_feed))
        .route(&format!("{BASE}/feed/posts/{{post_id}}"), get(post))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Query parameters, taken as text so each gets a precise 400.
#[derive(Deserialize, Default)]
pub struct Params {
    limit: Option<String>,
    cursor: Option<String>,
    consistency_token: Option<String>,
}

fn parse_limit(raw: Option<&str>) -> Result<usize, Problem> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| Problem::bad_request("limit must be an integer from 1 to 100")),
    }
}

fn parse_cursor(raw: Option<&str>) -> Result<Option<i64>, Problem> {
    raw.map(|c| cursor::decode(c).ok_or_else(|| Problem::bad_request("cursor is not valid")))
        .transpose()
}

/// The `X-Consistency-Token` header, taken alone (a `HeaderMap` extractor
/// would copy every header of every request).
pub struct TokenHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for TokenHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(CONSISTENCY_TOKEN).cloned()))
    }
}

/// The read-your-writes token from the header or the query parameter.
fn parse_token(
    header: &TokenHeader,
    param: Option<&str>,
) -> Result<Option<ConsistencyToken>, Problem> {
    let raw = match &header.0 {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Problem::bad_request("X-Consistency-Token is not valid"))?,
        ),
        None => param,
    };
    raw.map(|t| {
        ConsistencyToken::decode(t)
            .ok_or_else(|| Problem::bad_request("consistency token is not valid"))
    })
    .transpose()
}

fn unavailable(e: crate::resp::Error) -> Problem {
    tracing::warn!(error = %e, "Redis unavailable");
    Problem::unavailable("the read model is unavailable; try again shortly", 1)
}

async fn wait(
    state: &AppState,
    token: Option<ConsistencyToken>,
) -> Result<Option<Freshness>, Problem> {
    match token {
        None => Ok(None),
        Some(t) => state
            .read_model
            .wait_for(&t, state.consistency_wait)
            .await
            .map(Some)
            .map_err(unavailable),
    }
}

fn json_response(body: impl Into<axum::body::Body>, freshness: Option<Freshness>) -> Response {
    let mut res = ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response();
    if let Some(f) = freshness {
        let v = match f {
            Freshness::Consistent => "consistent",
            Freshness::Stale => "stale",
        };
        res.headers_mut()
            .insert(CONSISTENCY, HeaderValue::from_static(v));
    }
    res
}

async fn feed(
    state: AppState,
    key: String,
    reader: Option<Uuid>,
    token_header: TokenHeader,
    params: Params,
) -> Result<Response, Problem> {
    let limit = parse_limit(params.limit.as_deref())?;
    let before = parse_cursor(params.cursor.as_deref())?;
    let token = parse_token(&token_header, params.consistency_token.as_deref())?;
    let freshness = wait(&state, token).await?;
    let page = state
        .read_model
        .page(PageOf {
            feed: &key,
            limit,
            before,
            reader,
        })
        .await
        .map_err(unavailable)?;
    tracing::debug!(items = page.items, "feed page");
    Ok(json_response(page.json, freshness))
}

async fn global_feed(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    token_header: TokenHeader,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, Problem> {
    feed(
        state,
        keys::GLOBAL_FEED.to_string(),
        user.map(|u| u.id),
        token_header,
        params,
    )
    .await
}

async fn author_feed(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    PathParam(author): PathParam<Uuid>,
    token_header: TokenHeader,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, Problem> {
    feed(
        state,
        keys::author_feed(author),
        user.map(|u| u.id),
        token_header,
        params,
    )
    .await
}

async fn post(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    PathParam(post_id): PathParam<Uuid>,
    token_header: TokenHeader,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, Problem> {
    let token = parse_token(&token_header, params.consistency_token.as_deref())?;
    let freshness = wait(&state, token).await?;
    match state
        .read_model
        .post(post_id, user.map(|u| u.id))
        .await
        .map_err(unavailable)?
    {
        Some(json) => Ok(json_response(json, freshness)),
        None => Err(Problem::not_found("no such post")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "abc", "", "1.5"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
