//! Property tests ("fuzz targets") for everything that decodes client or wire
//! input: request bodies, consistency tokens, stored views, stream entries.
//! They must never panic, and must round-trip what they produce. Run longer
//! campaigns with `PROPTEST_CASES=100000` (scripts/long-tests.sh does).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::Request;
use proptest::prelude::*;
use serde::Deserialize;
use uuid::Uuid;

use crate::consistency::ConsistencyToken;
use crate::events::Envelope;
use crate::http::JsonBody;
use crate::views::{decode_stored, write_personalised};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Body1 {
    content: Option<String>,
    username: Option<String>,
}

fn decode_body(bytes: Vec<u8>, content_type: &str) -> Result<(), u16> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|_| 0u16)?;
    rt.block_on(async {
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", content_type)
            .body(Body::from(bytes))
            .map_err(|_| 0u16)?;
        JsonBody::<Body1>::from_request(req, &())
            .await
            .map(|_| ())
            .map_err(|p| p.status)
    })
}

proptest! {
    #[test]
    fn request_bodies_decode_or_get_a_4xx(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                          ct in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/json; charset=utf-8"), Just("")]) {
        if let Err(status) = decode_body(bytes, ct) {
            prop_assert!((400..500).contains(&status), "status {status}");
        }
    }

    #[test]
    fn json_shaped_bodies_decode_or_get_a_4xx(content in any::<String>(), extra in any::<bool>(), nest in 0usize..300) {
        let mut v = serde_json::json!({"content": content});
        if extra { v["surprise"] = serde_json::json!(1); }
        let body = format!("{}{}{}", "[".repeat(nest), v, "]".repeat(nest));
        if let Err(status) = decode_body(body.into_bytes(), "application/json") {
            prop_assert!((400..500).contains(&status));
        } else {
            prop_assert!(nest == 0 && !extra);
        }
    }

    #[test]
    fn consistency_tokens_never_panic_and_round_trip(raw in any::<String>(), id in any::<u128>(), v in 0i64..i64::MAX, kind in 0u8..4) {
        let _ = ConsistencyToken::decode(&raw);
        let id = Uuid::from_u128(id);
        let t = match kind {
            0 => ConsistencyToken::Post { post_id: id, version: v },
            1 => ConsistencyToken::PostDeleted { post_id: id, version: v },
            2 => ConsistencyToken::Like { post_id: id, user_id: Uuid::from_u128(!id.as_u128()), version: v },
            _ => ConsistencyToken::Profile { user_id: id, version: v },
        };
        prop_assert_eq!(ConsistencyToken::decode(&t.encode()), Some(t));
    }

    #[test]
    fn stored_views_never_panic(raw in any::<String>(), liked in any::<bool>()) {
        if let Some((_, json)) = decode_stored(&raw) {
            let mut out = Vec::new();
            write_personalised(json.as_bytes(), liked, &mut out);
        }
    }

    #[test]
    fn stream_entries_never_panic(fields in proptest::collection::hash_map(
        prop_oneof![Just("event_id".to_string()), Just("type".to_string()), Just("version".to_string()),
                    Just("payload".to_string()), Just("occurred_at_us".to_string()), Just("outbox_id".to_string()), any::<String>()],
        any::<String>(), 0..8)) {
        let fields: HashMap<String, String> = fields;
        let _ = Envelope::from_fields(&fields);
    }
}
