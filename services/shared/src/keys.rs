//! The Redis key schema of the read model and the event stream.
//!
//! Written with Redis Cluster in mind (ARCHITECTURE §8): the part in braces is
//! the hash tag, so everything about one post shares a slot, everything about
//! one user's likes shares a slot, and no command we issue spans two slots
//! except pipelines (which the cluster client splits per slot) and MGET
//! (which it splits per slot too).

use uuid::Uuid;

/// The event stream the outbox relay appends to.
pub const STREAM: &str = "sparkle:stream:events";
/// Entries the projector gave up on, with the reason.
pub const DEAD_LETTER_STREAM: &str = "sparkle:stream:dead";
/// The projector's consumer group on [`STREAM`].
pub const CONSUMER_GROUP: &str = "projector";
/// The global feed: post ids scored by their global sequence number.
pub const GLOBAL_FEED: &str = "sparkle:feed:global";
/// Marks a read model that has been built (absent = Redis lost its data).
pub const READ_MODEL_MARKER: &str = "sparkle:meta:read-model";

/// A post view's key is its id between these (the braces make it the hash tag).
const POST_VIEW_PREFIX: &str = "sparkle:post:{";
const POST_VIEW_SUFFIX: &str = "}";

/// One post's stored view (see [`crate::views`]).
pub fn post_view(post_id: Uuid) -> String {
    post_view_str(
        post_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    )
}

/// [`post_view`] for an id already in text form (as read from a feed).
pub fn post_view_str(post_id: &str) -> String {
    [POST_VIEW_PREFIX, post_id, POST_VIEW_SUFFIX].concat()
}

/// [`post_view`] as its three parts, for a client that writes them straight
/// into a command: a feed page names 20 views, and building each key as a
/// string first took 3.5% of query-api's CPU on the feed (perf).
pub fn post_view_parts(post_id: &[u8]) -> [&[u8]; 3] {
    [
        POST_VIEW_PREFIX.as_bytes(),
        post_id,
        POST_VIEW_SUFFIX.as_bytes(),
    ]
}

/// One author's feed.
pub fn author_feed(user_id: Uuid) -> String {
    format!("sparkle:feed:user:{{{user_id}}}")
}

/// The posts one user likes: hash post id → signed state version.
pub fn user_likes(user_id: Uuid) -> String {
    format!("sparkle:likes:{{{user_id}}}")
}

/// The newest profile version projected into a user's post views.
pub fn profile_version(user_id: Uuid) -> String {
    format!("sparkle:profile:{{{user_id}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_id_as_hash_tag() {
        let id = Uuid::nil();
        assert_eq!(
            post_view(id),
            "sparkle:post:{00000000-0000-0000-0000-000000000000}"
        );
        assert!(user_likes(id).ends_with("{00000000-0000-0000-0000-000000000000}"));
        let text = id.to_string();
        assert_eq!(post_view_str(&text), post_view(id));
        assert_eq!(
            post_view_parts(text.as_bytes()).concat(),
            post_view(id).into_bytes()
        );
    }
}
