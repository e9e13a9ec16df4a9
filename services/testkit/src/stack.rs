//! The whole system: Postgres, Redis, command-api, query-api and a projector.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::services::{Service, System};
use crate::{eventually, token};

pub const BASE: &str = "/api/v1/community";

pub struct Stack {
    pub sys: System,
    pub command: Service,
    pub query: Service,
    pub projector: Option<Service>,
}

/// A write's response: status, body and consistency token.
pub struct Written {
    pub status: StatusCode,
    pub body: Value,
    pub token: Option<String>,
}

impl Stack {
    /// Everything, with one projector replica named `p1`.
    pub async fn start() -> Self {
        Self::start_with(|_| Vec::new()).await
    }

    /// Everything, with extra environment per service (`env(service name)`).
    pub async fn start_with(env: impl Fn(&str) -> Vec<(String, String)>) -> Self {
        let sys = System::start().await;
        let (status, err) = sys.migrate().await;
        assert!(status.success(), "migrate failed: {err}");
        let (c, q, p) = (env("command-api"), env("query-api"), env("projector"));
        let c: Vec<(&str, &str)> = c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let command = sys.service("command-api", &c, true).await;
        command.wait_ready().await;
        let query = sys.service("query-api", &q, true).await;
        let projector = sys.projector("p1", &p).await;
        query.wait_ready().await;
        Self {
            sys,
            command,
            query,
            projector: Some(projector),
        }
    }

    /// Where a load should go (base URLs, without the API prefix).
    pub fn targets(&self) -> crate::load::Targets {
        crate::load::Targets {
            command: self.command.http_url(""),
            query: self.query.http_url(""),
        }
    }

    /// Waits until the read model matches Postgres (the projector has caught up).
    pub async fn converged(&self) {
        let pool = self.sys.pg.pool().await;
        let url = self.sys.redis.url();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let Err(diff) = crate::compare::read_model_matches(&pool, &url, 10_000, 1_000).await
            else {
                return;
            };
            if tokio::time::Instant::now() >= deadline {
                panic!("the read model never matched Postgres: {diff}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn cmd_url(&self, path: &str) -> String {
        self.command.http_url(&format!("{BASE}{path}"))
    }

    pub fn query_url(&self, path: &str) -> String {
        self.query.http_url(&format!("{BASE}{path}"))
    }

    async fn written(res: reqwest::Response) -> Written {
        let status = res.status();
        let token = res
            .headers()
            .get("x-consistency-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = res.json().await.unwrap_or(Value::Null);
        Written {
            status,
            body,
            token,
        }
    }

    pub async fn post(&self, user: Uuid, content: &str) -> Written {
        let res = self
            .sys
            .http
            .post(self.cmd_url("/posts"))
            .bearer_auth(token(user))
            .json(&json!({ "content": content }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /posts: {e}"));
        let w = Self::written(res).await;
        assert_eq!(w.status, StatusCode::CREATED, "{:?}", w.body);
        w
    }

    pub async fn like(&self, user: Uuid, post: &str, liked: bool) -> Written {
        let url = self.cmd_url(&format!("/posts/{post}/like"));
        let req = if liked {
            self.sys.http.post(url)
        } else {
            self.sys.http.delete(url)
        };
        let w = Self::written(
            req.bearer_auth(token(user))
                .send()
                .await
                .unwrap_or_else(|e| panic!("like: {e}")),
        )
        .await;
        assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
        w
    }

    pub async fn delete(&self, user: Uuid, post: &str) -> Written {
        let res = self
            .sys
            .http
            .delete(self.cmd_url(&format!("/posts/{post}")))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete: {e}"));
        let w = Self::written(res).await;
        assert_eq!(w.status, StatusCode::NO_CONTENT);
        w
    }

    pub async fn put_profile(&self, user: Uuid, body: Value) -> Written {
        let res = self
            .sys
            .http
            .put(self.cmd_url("/profile"))
            .bearer_auth(token(user))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put profile: {e}"));
        let w = Self::written(res).await;
        assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
        w
    }

    /// A GET on query-api, as `reader` when given.
    fn read(&self, path: &str, reader: Option<Uuid>) -> reqwest::RequestBuilder {
        let req = self.sys.http.get(self.query_url(path));
        match reader {
            Some(u) => req.bearer_auth(token(u)),
            None => req,
        }
    }

    /// GET on query-api (optionally as `reader`), returning status and JSON.
    pub async fn get(&self, path: &str, reader: Option<Uuid>) -> (StatusCode, Value) {
        let res = self
            .read(path, reader)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// GET on query-api (optionally as `reader`) that waits for the write
    /// `consistency_token` names (read-your-writes, in the header).
    pub async fn get_after(
        &self,
        path: &str,
        reader: Option<Uuid>,
        consistency_token: &str,
    ) -> reqwest::Response {
        self.read(path, reader)
            .header("X-Consistency-Token", consistency_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Every item of a feed, following cursors to the end.
    pub async fn all_items(&self, feed: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if feed.contains('?') { '&' } else { '?' };
            let path = match &cursor {
                Some(c) => format!("{feed}{sep}limit={limit}&cursor={c}"),
                None => format!("{feed}{sep}limit={limit}"),
            };
            let (status, page) = self.get(&path, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }

    /// Waits until `check` holds for the post view (or its absence: `None`).
    pub async fn until_post(
        &self,
        post: &str,
        what: &str,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        eventually(what, Duration::from_secs(20), || async {
            let (status, body) = self.get(&format!("/feed/posts/{post}"), None).await;
            let view = (status == StatusCode::OK).then_some(body);
            check(view.as_ref()).then_some(view)
        })
        .await
    }
}
