//! Read-your-writes tokens (ARCHITECTURE §7).
//!
//! Each write returns an opaque token naming the entity it changed and the
//! version it reached. query-api waits (bounded) until the read model holds
//! that version: a post view (or its tombstone) at `post_version >= v`, or a
//! profile projected at `>= v` into all of a user's posts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsistencyToken {
    /// The post exists (or existed) at this version or later.
    Post { post_id: Uuid, version: i64 },
    /// The post was deleted at this version: satisfied once the view is gone.
    PostDeleted { post_id: Uuid, version: i64 },
    /// The user's profile at this version is in every view of their posts.
    Profile { user_id: Uuid, version: i64 },
}

impl ConsistencyToken {
    pub fn encode(&self) -> String {
        let raw = match self {
            Self::Post { post_id, version } => format!("p:{post_id}:{version}"),
            Self::PostDeleted { post_id, version } => format!("d:{post_id}:{version}"),
            Self::Profile { user_id, version } => format!("u:{user_id}:{version}"),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(token: &str) -> Option<Self> {
        if token.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let raw = std::str::from_utf8(&bytes).ok()?;
        let mut parts = raw.split(':');
        let (kind, id, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let id = Uuid::parse_str(id).ok()?;
        let version: i64 = version.parse().ok().filter(|v| *v >= 0)?;
        Some(match kind {
            "p" => Self::Post {
                post_id: id,
                version,
            },
            "d" => Self::PostDeleted {
                post_id: id,
                version,
            },
            "u" => Self::Profile {
                user_id: id,
                version,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let id = Uuid::now_v7();
        for t in [
            ConsistencyToken::Post {
                post_id: id,
                version: 3,
            },
            ConsistencyToken::PostDeleted {
                post_id: id,
                version: 4,
            },
            ConsistencyToken::Profile {
                user_id: id,
                version: 1,
            },
        ] {
            assert_eq!(ConsistencyToken::decode(&t.encode()), Some(t));
        }
        for bad in [
            "",
            "!!!",
            "cDp4OjE",
            &URL_SAFE_NO_PAD.encode(format!("p:{id}:-1")),
        ] {
            assert_eq!(ConsistencyToken::decode(bad), None, "{bad}");
        }
    }
}
