//! The domain event envelope, as written to the outbox and carried by the stream.
//!
//! Events are deliberately thin (ids only): the projector re-reads current
//! state from Postgres, so re-delivery and reordering do no harm. Each carries
//! a type and a schema version so the format can evolve and old rows stay
//! readable, plus the W3C trace context of the request that caused it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Schema version of the payloads below; bump when a payload changes shape.
pub const SCHEMA_VERSION: u16 = 1;

/// Field names of a stream entry.
pub mod field {
    pub const EVENT_ID: &str = "event_id";
    pub const TYPE: &str = "type";
    pub const VERSION: &str = "version";
    pub const PAYLOAD: &str = "payload";
    /// Commit time of the event, microseconds since the Unix epoch.
    pub const OCCURRED_AT_US: &str = "occurred_at_us";
    pub const OUTBOX_ID: &str = "outbox_id";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// What happened, with the ids the projector needs to re-read state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    PostCreated { post_id: Uuid, author_id: Uuid },
    PostDeleted { post_id: Uuid, author_id: Uuid },
    PostLiked { post_id: Uuid, user_id: Uuid },
    PostUnliked { post_id: Uuid, user_id: Uuid },
    ProfileUpdated { user_id: Uuid },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostPayload {
    post_id: Uuid,
    author_id: Uuid,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LikePayload {
    post_id: Uuid,
    user_id: Uuid,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilePayload {
    user_id: Uuid,
}

/// Why an event could not be decoded (a poison entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("unsupported schema version {0:?}")]
    UnsupportedVersion(String),
    #[error("bad payload for {kind}: {reason}")]
    BadPayload { kind: String, reason: String },
    #[error("bad field {field}: {reason}")]
    BadField { field: &'static str, reason: String },
}

impl DomainEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::PostCreated { .. } => "post_created",
            Self::PostDeleted { .. } => "post_deleted",
            Self::PostLiked { .. } => "post_liked",
            Self::PostUnliked { .. } => "post_unliked",
            Self::ProfileUpdated { .. } => "profile_updated",
        }
    }

    /// The entity the event is about (used as the outbox row's aggregate id).
    pub fn aggregate_id(&self) -> Uuid {
        match self {
            Self::PostCreated { post_id, .. }
            | Self::PostDeleted { post_id, .. }
            | Self::PostLiked { post_id, .. }
            | Self::PostUnliked { post_id, .. } => *post_id,
            Self::ProfileUpdated { user_id } => *user_id,
        }
    }

    pub fn payload(&self) -> serde_json::Value {
        let v = match self {
            Self::PostCreated { post_id, author_id } | Self::PostDeleted { post_id, author_id } => {
                serde_json::to_value(PostPayload {
                    post_id: *post_id,
                    author_id: *author_id,
                })
            }
            Self::PostLiked { post_id, user_id } | Self::PostUnliked { post_id, user_id } => {
                serde_json::to_value(LikePayload {
                    post_id: *post_id,
                    user_id: *user_id,
                })
            }
            Self::ProfileUpdated { user_id } => {
                serde_json::to_value(ProfilePayload { user_id: *user_id })
            }
        };
        // Serializing plain structs of UUIDs cannot fail.
        v.unwrap_or(serde_json::Value::Null)
    }

    /// Decodes a payload of the given type and schema version.
    pub fn decode(kind: &str, version: &str, payload: &str) -> Result<Self, EventError> {
        if version != SCHEMA_VERSION.to_string() {
            return Err(EventError::UnsupportedVersion(version.to_string()));
        }
        let bad = |e: serde_json::Error| EventError::BadPayload {
            kind: kind.to_string(),
            reason: e.to_string(),
        };
        Ok(match kind {
            "post_created" | "post_deleted" => {
                let p: PostPayload = serde_json::from_str(payload).map_err(bad)?;
                if kind == "post_created" {
                    Self::PostCreated {
                        post_id: p.post_id,
                        author_id: p.author_id,
                    }
                } else {
                    Self::PostDeleted {
                        post_id: p.post_id,
                        author_id: p.author_id,
                    }
                }
            }
            "post_liked" | "post_unliked" => {
                let p: LikePayload = serde_json::from_str(payload).map_err(bad)?;
                if kind == "post_liked" {
                    Self::PostLiked {
                        post_id: p.post_id,
                        user_id: p.user_id,
                    }
                } else {
                    Self::PostUnliked {
                        post_id: p.post_id,
                        user_id: p.user_id,
                    }
                }
            }
            "profile_updated" => {
                let p: ProfilePayload = serde_json::from_str(payload).map_err(bad)?;
                Self::ProfileUpdated { user_id: p.user_id }
            }
            other => return Err(EventError::UnknownType(other.to_string())),
        })
    }
}

/// One event as carried by a stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event_id: Uuid,
    pub event: DomainEvent,
    pub occurred_at_us: i64,
    pub outbox_id: i64,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Envelope {
    /// Decodes the field/value pairs of a stream entry.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, EventError> {
        let get = |name: &'static str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or(EventError::MissingField(name))
        };
        let event_id =
            Uuid::parse_str(get(field::EVENT_ID)?).map_err(|e| EventError::BadField {
                field: field::EVENT_ID,
                reason: e.to_string(),
            })?;
        let event = DomainEvent::decode(
            get(field::TYPE)?,
            get(field::VERSION)?,
            get(field::PAYLOAD)?,
        )?;
        let int = |name: &'static str| -> Result<i64, EventError> {
            get(name)?
                .parse()
                .map_err(|e: std::num::ParseIntError| EventError::BadField {
                    field: name,
                    reason: e.to_string(),
                })
        };
        Ok(Self {
            event_id,
            event,
            occurred_at_us: int(field::OCCURRED_AT_US)?,
            outbox_id: int(field::OUTBOX_ID)?,
            traceparent: fields.get(field::TRACEPARENT).cloned(),
            tracestate: fields.get(field::TRACESTATE).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: &str, payload: &str) -> HashMap<String, String> {
        [
            (field::EVENT_ID, Uuid::nil().to_string()),
            (field::TYPE, kind.to_string()),
            (field::VERSION, "1".to_string()),
            (field::PAYLOAD, payload.to_string()),
            (field::OCCURRED_AT_US, "1700000000000000".to_string()),
            (field::OUTBOX_ID, "42".to_string()),
            (
                field::TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn every_event_round_trips_through_its_payload() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for ev in [
            DomainEvent::PostCreated {
                post_id: a,
                author_id: b,
            },
            DomainEvent::PostDeleted {
                post_id: a,
                author_id: b,
            },
            DomainEvent::PostLiked {
                post_id: a,
                user_id: b,
            },
            DomainEvent::PostUnliked {
                post_id: a,
                user_id: b,
            },
            DomainEvent::ProfileUpdated { user_id: b },
        ] {
            let payload = ev.payload().to_string();
            let back = DomainEvent::decode(ev.type_name(), "1", &payload).unwrap();
            assert_eq!(back, ev);
        }
    }

    #[test]
    fn poison_entries_are_errors() {
        assert!(matches!(
            Envelope::from_fields(&fields("post_created", "{not json")),
            Err(EventError::BadPayload { .. })
        ));
        assert!(matches!(
            Envelope::from_fields(&fields("post_exploded", "{}")),
            Err(EventError::UnknownType(_))
        ));
        let mut f = fields(
            "profile_updated",
            &format!("{{\"user_id\":\"{}\"}}", Uuid::nil()),
        );
        assert!(Envelope::from_fields(&f).is_ok());
        f.insert(field::VERSION.into(), "9".into());
        assert!(matches!(
            Envelope::from_fields(&f),
            Err(EventError::UnsupportedVersion(_))
        ));
        f.remove(field::VERSION);
        assert_eq!(
            Envelope::from_fields(&f),
            Err(EventError::MissingField(field::VERSION))
        );
    }
}
