//! Shared helpers of the command-api tests.

use community_testkit::{Service, System, token};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

pub const BASE: &str = "/api/v1/community";

/// A running command-api with its backing servers.
pub struct App {
    pub sys: System,
    pub api: Service,
}

impl App {
    pub async fn start() -> Self {
        let sys = System::start().await;
        let api = sys.command_api().await;
        Self { sys, api }
    }

    pub fn url(&self, path: &str) -> String {
        self.api.http_url(&format!("{BASE}{path}"))
    }

    pub fn as_user(&self, req: RequestBuilder, user: Uuid) -> RequestBuilder {
        req.bearer_auth(token(user))
    }

    pub async fn create_post(&self, user: Uuid, content: &str) -> Value {
        let res = self
            .as_user(self.sys.http.post(self.url("/posts")), user)
            .json(&json!({ "content": content }))
            .send()
            .await
            .expect("POST /posts");
        assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
        res.json().await.expect("post JSON")
    }

    pub async fn like(&self, user: Uuid, post: &str, liked: bool) -> Response {
        let url = self.url(&format!("/posts/{post}/like"));
        let req = if liked {
            self.sys.http.post(url)
        } else {
            self.sys.http.delete(url)
        };
        self.as_user(req, user).send().await.expect("like request")
    }
}

/// Asserts a problem+json response with `status`, returning the body.
pub async fn assert_problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

/// The field names of a 422's `errors`.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
