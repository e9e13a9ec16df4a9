//! The commands, each one Postgres transaction: the state change and its
//! outbox event commit together or not at all.
//!
//! Row locks are taken before the outbox row is written, so two commands on
//! the same post are serialized and their events are ordered like their commits.

use chrono::{DateTime, Utc};
use community_shared::consistency::ConsistencyToken;
use community_shared::events::DomainEvent;
use community_shared::problem::Problem;
use community_shared::views::{AuthorView, PostView, rfc3339};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::ApiResult;
use crate::outbox;
use crate::validate;

/// A profile as returned by `PUT /profile`.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub struct ProfileInput {
    pub username: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

fn profile_from_row(row: &sqlx::postgres::PgRow) -> Result<(Profile, i64), sqlx::Error> {
    let created: DateTime<Utc> = row.try_get("created_at")?;
    let updated: DateTime<Utc> = row.try_get("updated_at")?;
    Ok((
        Profile {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            display_name: row.try_get("display_name")?,
            avatar_url: row.try_get("avatar_url")?,
            created_at: rfc3339(created),
            updated_at: rfc3339(updated),
        },
        row.try_get("version")?,
    ))
}

/// `PUT /profile`: create or replace the caller's profile.
pub async fn put_profile(
    tx: &mut PgConnection,
    user_id: Uuid,
    input: ProfileInput,
) -> ApiResult<(Profile, ConsistencyToken)> {
    // Only a real change bumps the version and emits an event.
    let changed = sqlx::query(
        "INSERT INTO users (id, username, display_name, avatar_url)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE
            SET username = EXCLUDED.username,
                display_name = EXCLUDED.display_name,
                avatar_url = EXCLUDED.avatar_url,
                version = users.version + 1,
                updated_at = now()
          WHERE (users.username, users.display_name, users.avatar_url)
                IS DISTINCT FROM (EXCLUDED.username, EXCLUDED.display_name, EXCLUDED.avatar_url)
         RETURNING id, username, display_name, avatar_url, version, created_at, updated_at",
    )
    .bind(user_id)
    .bind(&input.username)
    .bind(&input.display_name)
    .bind(&input.avatar_url)
    .fetch_optional(&mut *tx)
    .await?;
    let (profile, version) = match changed {
        Some(row) => {
            let out = profile_from_row(&row)?;
            outbox::record(tx, &DomainEvent::ProfileUpdated { user_id }).await?;
            out
        }
        None => {
            let row = sqlx::query(
                "SELECT id, username, display_name, avatar_url, version, created_at, updated_at
                   FROM users WHERE id = $1",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            profile_from_row(&row)?
        }
    };
    Ok((profile, ConsistencyToken::Profile { user_id, version }))
}

/// Makes sure the caller has a profile, creating one from the token if needed.
pub async fn ensure_user(
    tx: &mut PgConnection,
    user_id: Uuid,
    preferred_username: Option<&str>,
) -> ApiResult<AuthorView> {
    let preferred = validate::preferred_username(preferred_username);
    for attempt in 0..6u32 {
        let username = match (&preferred, attempt) {
            (Some(p), 0) => p.clone(),
            (Some(_), n) => validate::generated_username(user_id, n - 1),
            (None, n) => validate::generated_username(user_id, n),
        };
        // One statement: insert if absent, else return the existing row. No row
        // back means the username is taken (or a concurrent insert of this user
        // is not visible to this statement yet): try again.
        let row = sqlx::query(
            "WITH ins AS (
                INSERT INTO users (id, username) VALUES ($1, $2)
                ON CONFLICT DO NOTHING
                RETURNING id, username, display_name, avatar_url)
             SELECT id, username, display_name, avatar_url FROM ins
             UNION ALL
             SELECT id, username, display_name, avatar_url FROM users WHERE id = $1
             LIMIT 1",
        )
        .bind(user_id)
        .bind(&username)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return Ok(author_from_row(&row)?);
        }
    }
    Err(
        Problem::conflict("could not provision a profile for this user; call PUT /profile first")
            .into(),
    )
}

pub(crate) fn author_from_row(row: &sqlx::postgres::PgRow) -> Result<AuthorView, sqlx::Error> {
    Ok(AuthorView {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        avatar_url: row.try_get("avatar_url")?,
    })
}

/// The view and token of a post just inserted (at `version`, `created_at`).
pub(crate) fn new_post(
    post_id: Uuid,
    author: AuthorView,
    content: String,
    version: i64,
    created_at: DateTime<Utc>,
) -> (PostView, ConsistencyToken) {
    (
        PostView {
            id: post_id,
            author,
            content,
            created_at: rfc3339(created_at),
            like_count: 0,
            liked_by_me: false,
        },
        ConsistencyToken::Post { post_id, version },
    )
}

/// `POST /posts`.
pub async fn create_post(
    tx: &mut PgConnection,
    author: AuthorView,
    content: String,
) -> ApiResult<(PostView, ConsistencyToken)> {
    let post_id = Uuid::now_v7();
    let row = sqlx::query(
        "INSERT INTO posts (id, author_id, content) VALUES ($1, $2, $3)
         RETURNING version, created_at",
    )
    .bind(post_id)
    .bind(author.id)
    .bind(&content)
    .fetch_one(&mut *tx)
    .await?;
    outbox::record(
        tx,
        &DomainEvent::PostCreated {
            post_id,
            author_id: author.id,
        },
    )
    .await?;
    Ok(new_post(
        post_id,
        author,
        content,
        row.try_get("version")?,
        row.try_get("created_at")?,
    ))
}

/// `DELETE /posts/{id}`: author only; deleting twice is 404.
pub async fn delete_post(
    tx: &mut PgConnection,
    user_id: Uuid,
    post_id: Uuid,
) -> ApiResult<ConsistencyToken> {
    let row =
        sqlx::query("SELECT author_id FROM posts WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
            .bind(post_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(row) = row else {
        return Err(Problem::not_found("no such post").into());
    };
    let author_id: Uuid = row.try_get("author_id")?;
    if author_id != user_id {
        return Err(Problem::forbidden("only the author can delete this post").into());
    }
    let version: i64 = sqlx::query_scalar(
        "UPDATE posts SET deleted_at = now(), version = version + 1 WHERE id = $1 RETURNING version",
    )
    .bind(post_id)
    .fetch_one(&mut *tx)
    .await?;
    outbox::record(tx, &DomainEvent::PostDeleted { post_id, author_id }).await?;
    Ok(ConsistencyToken::PostDeleted { post_id, version })
}

/// Locks a live post against concurrent likes/deletes and returns its version.
async fn lock_live_post(tx: &mut PgConnection, post_id: Uuid) -> ApiResult<i64> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM posts WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE",
    )
    .bind(post_id)
    .fetch_optional(&mut *tx)
    .await?;
    version.ok_or_else(|| Problem::not_found("no such post").into())
}

/// `POST|DELETE /posts/{id}/like`: idempotent; only a real change counts and emits.
pub async fn set_like(
    tx: &mut PgConnection,
    user_id: Uuid,
    post_id: Uuid,
    liked: bool,
) -> ApiResult<ConsistencyToken> {
    let mut version = lock_live_post(tx, post_id).await?;
    let changed = if liked {
        sqlx::query(
            "INSERT INTO post_likes (post_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
    } else {
        sqlx::query("DELETE FROM post_likes WHERE post_id = $1 AND user_id = $2")
    }
    .bind(post_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if changed {
        version = sqlx::query_scalar(
            "UPDATE posts SET like_count = like_count + $2, version = version + 1
              WHERE id = $1 RETURNING version",
        )
        .bind(post_id)
        .bind(if liked { 1i64 } else { -1 })
        .fetch_one(&mut *tx)
        .await?;
        let event = if liked {
            DomainEvent::PostLiked { post_id, user_id }
        } else {
            DomainEvent::PostUnliked { post_id, user_id }
        };
        outbox::record(tx, &event).await?;
        return Ok(ConsistencyToken::Like {
            post_id,
            user_id,
            version,
        });
    }
    // Nothing changed: the user's state is what an earlier change left, at
    // an earlier version; the view at the current one is all there is to wait for.
    Ok(ConsistencyToken::Post { post_id, version })
}
