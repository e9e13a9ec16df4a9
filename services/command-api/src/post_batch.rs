//! `POST /posts` of authors who already have a profile, written in batches.
//!
//! Under load many such requests are in flight at once. Each is its own post
//! and outbox event, but it need not be its own statement: a dispatcher takes
//! whatever requests are waiting and writes them in one statement (one round
//! trip, one commit), up to [`MAX_BATCH`] posts at a time, one statement at a
//! time (see [`dispatch`]). A lone request is written at once, as a batch of one, so
//! batching adds no wait; under load it saves most of Postgres' per-commit
//! and the driver's per-query work (they were two thirds of a write's CPU).
//!
//! Each post and its event still commit together, and posts of one batch
//! commit together too. If a batch fails because the database is unavailable,
//! each request gets that 503; if it fails otherwise, each post is tried
//! alone, so a bad row answers for itself only. A request whose client has
//! gone by the time its batch runs is still written, as when a connection
//! drops right after a commit.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use community_shared::consistency::ConsistencyToken;
use community_shared::events::DomainEvent;
use community_shared::problem::Problem;
use community_shared::views::{AuthorView, PostView};
use community_store::HeldConnection;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::commands::{author_from_row, new_post};
use crate::error::{ApiError, ApiResult};
use crate::outbox::EventRow;

/// Posts per statement at most.
pub const MAX_BATCH: usize = 64;
/// Requests waiting for a batch at most; beyond it senders wait (backpressure).
const QUEUE: usize = 4 * MAX_BATCH;

/// A post as written: its author's profile and its first version.
struct Written {
    author: AuthorView,
    version: i64,
    created_at: DateTime<Utc>,
}

struct Job {
    post_id: Uuid,
    author_id: Uuid,
    content: String,
    event: EventRow,
    done: oneshot::Sender<ApiResult<Option<Written>>>,
}

/// The handle requests use; cheap to clone. The dispatcher stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct PostWriter {
    jobs: mpsc::Sender<Job>,
}

impl PostWriter {
    /// Starts the dispatcher (inside the Tokio runtime).
    pub fn start(pool: PgPool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(pool, queue));
        Self { jobs }
    }

    /// Writes a post and its `post_created` event; `None` when the author has
    /// no profile yet (nothing is written then).
    pub async fn create(
        &self,
        author_id: Uuid,
        content: &str,
    ) -> ApiResult<Option<(PostView, ConsistencyToken)>> {
        let post_id = Uuid::now_v7();
        // Taken here, in the request's task: the event carries its trace context.
        let event = EventRow::new(&DomainEvent::PostCreated { post_id, author_id });
        let (done, result) = oneshot::channel();
        let job = Job {
            post_id,
            author_id,
            content: content.to_owned(),
            event,
            done,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(stopped());
        }
        let written = result.await.unwrap_or_else(|_| Err(stopped()))?;
        Ok(written.map(|w| {
            new_post(
                post_id,
                w.author,
                content.to_owned(),
                w.version,
                w.created_at,
            )
        }))
    }
}

fn stopped() -> ApiError {
    Problem::unavailable("the server is shutting down; try again", 1).into()
}

/// One statement at a time: requests that arrive while it runs form the next
/// batch. With several statements overlapping, each commit waited for the
/// older ones before the relay could publish it (it publishes below the
/// oldest running transaction), and they contended for the same two cores:
/// measured here, one at a time gave 30% more writes/s at half the relay
/// delay of four at a time.
async fn dispatch(pool: PgPool, mut queue: mpsc::Receiver<Job>) {
    // One connection for every batch: a hot backend (see `HeldConnection`).
    let mut conn = HeldConnection::new(pool.clone());
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(job) = queue.try_recv()
        {
            batch.push(job);
        }
        write(&pool, &mut conn, batch).await;
    }
}

async fn write(pool: &PgPool, conn: &mut HeldConnection, batch: Vec<Job>) {
    metrics::histogram!("command_post_batch_size").record(batch.len() as f64);
    match conn.run(async |c| insert(c, &batch).await).await {
        Ok(mut written) => {
            for job in batch {
                let _ = job.done.send(Ok(written.remove(&job.post_id)));
            }
        }
        // The same answer for every request: classified (and logged) once.
        Err(e) if batch.len() == 1 || community_store::is_unavailable(&e) => {
            let problem = ApiError::Db(e).into_problem();
            for job in batch {
                let _ = job.done.send(Err(problem.clone().into()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, posts = batch.len(), "post batch failed; writing its posts one by one");
            for job in batch {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let result = insert(&pool, std::slice::from_ref(&job))
                        .await
                        .map(|mut w| w.remove(&job.post_id))
                        .map_err(ApiError::Db);
                    let _ = job.done.send(result);
                });
            }
        }
    }
}

/// One statement (autocommit) for the whole batch: the posts of authors who
/// exist, and one outbox event per post written.
async fn insert<'c, E>(db: E, batch: &[Job]) -> Result<HashMap<Uuid, Written>, sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    // Every job's event is a post_created of the same schema version.
    let Some(first) = batch.first() else {
        return Ok(HashMap::new());
    };
    let n = batch.len();
    let (mut post_ids, mut authors, mut contents) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut event_ids, mut payloads, mut parents, mut states) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for job in batch {
        post_ids.push(job.post_id);
        authors.push(job.author_id);
        contents.push(job.content.as_str());
        event_ids.push(job.event.event_id);
        payloads.push(job.event.payload.to_string());
        parents.push(job.event.traceparent.as_deref());
        states.push(job.event.tracestate.as_deref());
    }
    let rows = sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[])
                 AS i(post_id, author_id, content, event_id, payload, traceparent, tracestate)
         ), author AS (
             SELECT i.*, u.username, u.display_name, u.avatar_url
               FROM input i JOIN users u ON u.id = i.author_id
         ), post AS (
             INSERT INTO posts (id, author_id, content)
             SELECT post_id, author_id, content FROM author
             RETURNING id, version, created_at
         ), event AS (
             INSERT INTO outbox (event_id, event_type, event_version, aggregate_id, payload, traceparent, tracestate)
             SELECT a.event_id, $8, $9, a.post_id, a.payload::jsonb, a.traceparent, a.tracestate
               FROM author a JOIN post p ON p.id = a.post_id
         )
         SELECT a.post_id, a.author_id AS id, a.username, a.display_name, a.avatar_url, p.version, p.created_at
           FROM author a JOIN post p ON p.id = a.post_id",
    )
    .bind(&post_ids)
    .bind(&authors)
    .bind(&contents)
    .bind(&event_ids)
    .bind(&payloads)
    .bind(&parents)
    .bind(&states)
    .bind(first.event.event_type)
    .bind(first.event.version)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("post_id")?,
                Written {
                    author: author_from_row(row)?,
                    version: row.try_get("version")?,
                    created_at: row.try_get("created_at")?,
                },
            ))
        })
        .collect()
}
