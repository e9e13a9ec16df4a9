//! The read model's view types and how they are stored in Redis.
//!
//! A post view is stored as one string, `"<post_version>.<author_version>|<json>"`:
//! the version prefix lets the projector refuse to overwrite a newer state with
//! an older one (a Lua compare-and-set), and lets query-api check a
//! read-your-writes token, without parsing the JSON. The JSON is the public
//! [`PostView`] with `liked_by_me` last and `false`, so query-api can answer
//! anonymous readers with the stored bytes as they are. An empty JSON part is
//! a tombstone: the post was deleted at that version.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorView {
    pub id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A post as clients see it (CONTRACT §4, PostView).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostView {
    pub id: Uuid,
    pub author: AuthorView,
    pub content: String,
    pub created_at: String,
    pub like_count: i64,
    /// Must stay the last field: see the module docs.
    pub liked_by_me: bool,
}

/// RFC 3339, UTC, microsecond precision: how every timestamp is rendered.
pub fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The state version a stored view was built from; both parts only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ViewVersion {
    pub post: i64,
    pub author: i64,
}

/// Encodes a view for storage (`None` = tombstone).
pub fn encode_stored(version: ViewVersion, view: Option<&PostView>) -> String {
    let json = view
        .and_then(|v| serde_json::to_string(v).ok())
        .unwrap_or_default();
    format!("{}.{}|{}", version.post, version.author, json)
}

/// Splits a stored view into its version and JSON (empty JSON = tombstone).
pub fn decode_stored(raw: &str) -> Option<(ViewVersion, &str)> {
    let (version, json) = decode_stored_bytes(raw.as_bytes())?;
    // The split is at an ASCII '|', so the rest is still valid UTF-8.
    Some((version, raw.get(raw.len() - json.len()..)?))
}

/// [`decode_stored`] on raw bytes, as read from Redis without a UTF-8 pass.
pub fn decode_stored_bytes(raw: &[u8]) -> Option<(ViewVersion, &[u8])> {
    let bar = raw.iter().position(|b| *b == b'|')?;
    let head = std::str::from_utf8(&raw[..bar]).ok()?;
    let (p, a) = head.split_once('.')?;
    Some((
        ViewVersion {
            post: p.parse().ok()?,
            author: a.parse().ok()?,
        },
        &raw[bar + 1..],
    ))
}

const LIKED_FALSE_TAIL: &[u8] = b"\"liked_by_me\":false}";

/// Appends a stored view's JSON to `out` with `liked_by_me` set for this reader.
pub fn write_personalised(json: &[u8], liked_by_me: bool, out: &mut Vec<u8>) {
    match json.strip_suffix(LIKED_FALSE_TAIL) {
        Some(head) if liked_by_me => {
            out.extend_from_slice(head);
            out.extend_from_slice(b"\"liked_by_me\":true}");
        }
        _ => out.extend_from_slice(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PostView {
        PostView {
            id: Uuid::nil(),
            author: AuthorView {
                id: Uuid::nil(),
                username: "ann".into(),
                display_name: Some("Ann | \"A\"".into()),
                avatar_url: None,
            },
            content: "hello|world liked_by_me\":false}".into(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            like_count: 3,
            liked_by_me: false,
        }
    }

    #[test]
    fn stored_view_round_trips_and_personalises() {
        let v = view();
        let raw = encode_stored(ViewVersion { post: 7, author: 2 }, Some(&v));
        let (ver, json) = decode_stored(&raw).unwrap();
        assert_eq!(ver, ViewVersion { post: 7, author: 2 });
        let mut anon = Vec::new();
        write_personalised(json.as_bytes(), false, &mut anon);
        assert_eq!(serde_json::from_slice::<PostView>(&anon).unwrap(), v);
        let mut mine = Vec::new();
        write_personalised(json.as_bytes(), true, &mut mine);
        let liked: PostView = serde_json::from_slice(&mine).unwrap();
        assert!(liked.liked_by_me);
        assert_eq!(liked.content, v.content);
    }

    #[test]
    fn tombstones_and_garbage() {
        let raw = encode_stored(ViewVersion { post: 9, author: 1 }, None);
        assert_eq!(
            decode_stored(&raw),
            Some((ViewVersion { post: 9, author: 1 }, ""))
        );
        assert_eq!(decode_stored("nonsense"), None);
        assert_eq!(decode_stored("x.1|{}"), None);
    }
}
