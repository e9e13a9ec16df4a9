//! Read-your-writes tokens (ARCHITECTURE §7).
//!
//! Each write returns an opaque token naming the entity it changed and the
//! version it reached. query-api waits (bounded) until the read model holds
//! that version: a post view (or its tombstone) at `post_version >= v`, a
//! like state written from a read at `>= v` (and the view too), or a profile
//! projected at `>= v` into all of a user's posts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsistencyToken {
    /// The post exists (or existed) at this version or later.
    Post { post_id: Uuid, version: i64 },
    /// The post was deleted at this version: satisfied once the view is gone.
    PostDeleted { post_id: Uuid, version: i64 },
    /// A user's like or unlike took the post to this version: satisfied once
    /// the view and the user's like state are both at it or later. The view
    /// alone is not enough: a view can be rewritten from a newer read (a
    /// rename, a batch that lags) before the like's own event writes the
    /// user's state.
    Like {
        post_id: Uuid,
        user_id: Uuid,
        version: i64,
    },
    /// The user's profile at this version is in every view of their posts.
    Profile { user_id: Uuid, version: i64 },
}

impl ConsistencyToken {
    pub fn encode(&self) -> String {
        let raw = match self {
            Self::Post { post_id, version } => format!("p:{post_id}:{version}"),
            Self::PostDeleted { post_id, version } => format!("d:{post_id}:{version}"),
            Self::Like {
                post_id,
                user_id,
                version,
            } => format!("l:{post_id}:{user_id}:{version}"),
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
        let parts: Vec<&str> = raw.split(':').collect();
        let version = |v: &str| v.parse::<i64>().ok().filter(|v| *v >= 0);
        if let ["l", post, user, v] = parts[..] {
            return Some(Self::Like {
                post_id: Uuid::parse_str(post).ok()?,
                user_id: Uuid::parse_str(user).ok()?,
                version: version(v)?,
            });
        }
        let [kind, id, v] = parts[..] else {
            return None;
        };
        let id = Uuid::parse_str(id).ok()?;
        let version = version(v)?;
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
            ConsistencyToken::Like {
                post_id: id,
                user_id: Uuid::now_v7(),
                version: 5,
            },
        ] {
            assert!(t.encode().len() <= 128, "{t:?} makes too long a token");
            assert_eq!(ConsistencyToken::decode(&t.encode()), Some(t));
        }
        for bad in [
            "",
            "!!!",
            "cDp4OjE",
            &URL_SAFE_NO_PAD.encode(format!("p:{id}:-1")),
            &URL_SAFE_NO_PAD.encode(format!("l:{id}:1")),
            &URL_SAFE_NO_PAD.encode(format!("l:{id}:{id}:1:2")),
            &URL_SAFE_NO_PAD.encode(format!("p:{id}:{id}:1")),
        ] {
            assert_eq!(ConsistencyToken::decode(bad), None, "{bad}");
        }
    }
}
