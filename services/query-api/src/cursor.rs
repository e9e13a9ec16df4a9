//! Opaque, stable feed cursors.
//!
//! A cursor is the score (the post's unique sequence number) of the last item
//! of a page; the next page starts strictly below it. Scores never tie and
//! new posts always score higher, so paging while posts arrive never repeats
//! or skips an item.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "f1:";

pub fn encode(score: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{score}"))
}

pub fn decode(cursor: &str) -> Option<i64> {
    if cursor.is_empty() || cursor.len() > 64 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let score: i64 = text.strip_prefix(PREFIX)?.parse().ok()?;
    (score >= 0).then_some(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        for s in [0, 1, 42, 9_007_199_254_740_991] {
            assert_eq!(decode(&encode(s)), Some(s));
        }
        for bad in [
            "",
            "!!",
            "Zm9v",
            &URL_SAFE_NO_PAD.encode("f1:-5"),
            &URL_SAFE_NO_PAD.encode("f1:1.5"),
            &"A".repeat(100),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursors_never_panic_and_round_trip(raw in any::<String>(), score in 0i64..i64::MAX) {
            let _ = super::decode(&raw);
            prop_assert_eq!(super::decode(&super::encode(score)), Some(score));
        }
    }
}
