//! The REST commands (CONTRACT §4), thin: parse, validate, run one command
//! transaction, answer. Every write carries `X-Consistency-Token`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use community_shared::auth::{AuthUser, HasVerifier, JwtVerifier};
use community_shared::consistency::ConsistencyToken;
use community_shared::http::{JsonBody, PathParam};
use community_shared::postgres_span;
use community_shared::problem::{FieldError, Problem};
use community_shared::views::PostView;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::commands::{self, ProfileInput};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::{self, Begin, SavedResponse};
use crate::post_batch::PostWriter;
use crate::validate;

pub const BASE: &str = "/api/v1/community";
pub const CONSISTENCY_HEADER: HeaderName = HeaderName::from_static("x-consistency-token");
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const OPENAPI: &str = include_str!("../openapi.json");

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<JwtVerifier>,
    /// Wakes the outbox relay right after a commit.
    pub relay_wake: Arc<Notify>,
    /// Writes posts of existing authors in batches.
    pub posts: PostWriter,
}

impl HasVerifier for AppState {
    fn verifier(&self) -> Option<&Arc<JwtVerifier>> {
        Some(&self.verifier)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(&format!("{BASE}/openapi.json"), get(openapi))
        .route(&format!("{BASE}/profile"), put(put_profile))
        .route(&format!("{BASE}/posts"), post(create_post))
        .route(
            &format!("{BASE}/posts/{{post_id}}"),
            axum::routing::delete(delete_post),
        )
        .route(
            &format!("{BASE}/posts/{{post_id}}/like"),
            post(like).delete(unlike),
        )
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn with_token(mut res: Response, token: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(token) {
        res.headers_mut().insert(CONSISTENCY_HEADER, v);
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    username: Option<String>,
    display_name: Option<String>,
    avatar_url: Option<String>,
}

async fn put_profile(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body, _): JsonBody<ProfileBody>,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let mut keep = |r: Result<_, FieldError>| r.map_err(|e| errors.push(e)).ok();
    let username = keep(validate::username(body.username.as_deref()).map(Some));
    let display_name = keep(validate::display_name(body.display_name.as_deref()));
    let avatar_url = keep(validate::avatar_url(body.avatar_url.as_deref()));
    let (Some(Some(username)), Some(display_name), Some(avatar_url)) =
        (username, display_name, avatar_url)
    else {
        return Err(Problem::validation(errors).into());
    };
    let input = ProfileInput {
        username,
        display_name,
        avatar_url,
    };
    let (profile, token) = async {
        let mut tx = state.pool.begin().await?;
        let out = commands::put_profile(&mut tx, user.id, input).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(out)
    }
    .instrument(postgres_span!("TRANSACTION put_profile", "users"))
    .await?;
    state.relay_wake.notify_one();
    Ok(with_token(Json(profile).into_response(), &token.encode()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePostBody {
    content: Option<String>,
}

async fn create_post(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(body, raw): JsonBody<CreatePostBody>,
) -> ApiResult<Response> {
    let key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                Problem::validation(vec![FieldError::new(
                    "Idempotency-Key",
                    "must be printable ASCII without spaces",
                )])
            })?;
            Some(
                validate::idempotency_key(s)
                    .map_err(|e| Problem::validation(vec![e]))?
                    .to_string(),
            )
        }
    };
    let content =
        validate::content(body.content.as_deref()).map_err(|e| Problem::validation(vec![e]))?;
    // The body's fingerprint matters only with a key (a retry must repeat it).
    let key = key.map(|k| (k, idempotency::request_hash(&raw)));

    create_post_tx(&state, &user, key, content)
        .instrument(postgres_span!("TRANSACTION create_post", "posts"))
        .await
}

async fn create_post_tx(
    state: &AppState,
    user: &AuthUser,
    key: Option<(String, Vec<u8>)>,
    content: String,
) -> ApiResult<Response> {
    // The common case: no Idempotency-Key and an existing author — one
    // statement, shared with the other posts being written at the same time.
    if key.is_none()
        && let Some((post, token)) = state.posts.create(user.id, &content).await?
    {
        state.relay_wake.notify_one();
        return Ok(created(&post, &token));
    }
    // At most two rounds: the second only after losing a race on the same key.
    for round in 0..2 {
        let mut tx = state.pool.begin().await?;
        if let Some((key, hash)) = &key
            && let Begin::Replay(saved) = idempotency::begin(&mut tx, user.id, key, hash).await?
        {
            return Ok(replay(saved));
        }
        let author =
            commands::ensure_user(&mut tx, user.id, user.preferred_username.as_deref()).await?;
        let (post, token) = commands::create_post(&mut tx, author, content.clone()).await?;
        let saved = SavedResponse {
            status: StatusCode::CREATED,
            body: serde_json::to_value(&post).map_err(|_| Problem::internal())?,
            location: Some(post_location(post.id)),
            consistency_token: Some(token.encode()),
        };
        if let Some((key, hash)) = &key {
            match idempotency::save(&mut tx, user.id, key, hash, &saved).await {
                Ok(()) => {}
                Err(e) if idempotency::is_key_race(&e) && round == 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        state.relay_wake.notify_one();
        return Ok(replay(saved));
    }
    Err(ApiError::Client(Problem::conflict(
        "a request with this Idempotency-Key is in progress",
    )))
}

/// Where a created post can be read (the query API).
fn post_location(id: Uuid) -> String {
    format!("{BASE}/feed/posts/{id}")
}

/// A write's response: body, optional `Location`, optional consistency token.
fn write_response(
    status: StatusCode,
    body: impl serde::Serialize,
    location: Option<&str>,
    token: Option<&str>,
) -> Response {
    let mut res = (status, Json(body)).into_response();
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    match token {
        Some(t) => with_token(res, t),
        None => res,
    }
}

fn created(post: &PostView, token: &ConsistencyToken) -> Response {
    let location = post_location(post.id);
    write_response(
        StatusCode::CREATED,
        post,
        Some(&location),
        Some(&token.encode()),
    )
}

fn replay(saved: SavedResponse) -> Response {
    write_response(
        saved.status,
        saved.body,
        saved.location.as_deref(),
        saved.consistency_token.as_deref(),
    )
}

async fn delete_post(
    State(state): State<AppState>,
    user: AuthUser,
    PathParam(post_id): PathParam<Uuid>,
) -> ApiResult<Response> {
    let token = async {
        let mut tx = state.pool.begin().await?;
        let token = commands::delete_post(&mut tx, user.id, post_id).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(token)
    }
    .instrument(postgres_span!("TRANSACTION delete_post", "posts"))
    .await?;
    state.relay_wake.notify_one();
    Ok(with_token(
        StatusCode::NO_CONTENT.into_response(),
        &token.encode(),
    ))
}

async fn like(
    State(state): State<AppState>,
    user: AuthUser,
    PathParam(post_id): PathParam<Uuid>,
) -> ApiResult<Response> {
    set_like(state, user, post_id, true).await
}

async fn unlike(
    State(state): State<AppState>,
    user: AuthUser,
    PathParam(post_id): PathParam<Uuid>,
) -> ApiResult<Response> {
    set_like(state, user, post_id, false).await
}

async fn set_like(
    state: AppState,
    user: AuthUser,
    post_id: Uuid,
    liked: bool,
) -> ApiResult<Response> {
    let op = if liked {
        "TRANSACTION like"
    } else {
        "TRANSACTION unlike"
    };
    let token: ConsistencyToken = async {
        let mut tx = state.pool.begin().await?;
        if liked {
            // A like needs the liker's profile row (foreign key); provision it from the token.
            commands::ensure_user(&mut tx, user.id, user.preferred_username.as_deref()).await?;
        }
        let token = commands::set_like(&mut tx, user.id, post_id, liked).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(token)
    }
    .instrument(postgres_span!(op, "post_likes"))
    .await?;
    state.relay_wake.notify_one();
    let body = json!({ "post_id": post_id, "liked": liked });
    Ok(with_token(Json(body).into_response(), &token.encode()))
}
