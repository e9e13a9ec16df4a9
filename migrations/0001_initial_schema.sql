-- Sparkle Community: the source of truth. The rules of CONTRACT §4 hold here
-- too, so no code path (or hand-written SQL) can break them.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL
                  CONSTRAINT users_username_format CHECK (username ~ '^[a-z0-9_]{3,32}$'),
    display_name  text CONSTRAINT users_display_name_length CHECK (char_length(display_name) <= 64),
    avatar_url    text CONSTRAINT users_avatar_url_https
                  CHECK (char_length(avatar_url) <= 2048 AND avatar_url LIKE 'https://%'),
    -- Bumped on every profile change; views carry it so stale renames never win.
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username)
);

CREATE TABLE posts (
    id          uuid PRIMARY KEY,
    -- Unique, increasing: the feed score, so cursors never meet a tie.
    seq         bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT posts_seq_key UNIQUE,
    author_id   uuid NOT NULL REFERENCES users (id),
    content     text NOT NULL CONSTRAINT posts_content_length CHECK (char_length(content) BETWEEN 1 AND 5000),
    like_count  bigint NOT NULL DEFAULT 0 CONSTRAINT posts_like_count_nonnegative CHECK (like_count >= 0),
    -- Bumped on every change to the post (like, unlike, delete).
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

-- An author's live posts, newest first (author feeds, profile re-projection).
CREATE INDEX posts_author_seq_idx ON posts (author_id, seq DESC) WHERE deleted_at IS NULL;

CREATE TABLE post_likes (
    post_id     uuid NOT NULL REFERENCES posts (id),
    user_id     uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- One like per user and post.
    PRIMARY KEY (post_id, user_id)
);

CREATE INDEX post_likes_user_idx ON post_likes (user_id);

-- The transactional outbox: one row per domain event, written in the same
-- transaction as the state change and published to the Redis stream by the
-- relay. `txid` lets the relay publish in a stable order without gaps: a row
-- is released only once no older transaction can still commit.
CREATE TABLE outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid NOT NULL CONSTRAINT outbox_event_id_key UNIQUE,
    event_type     text NOT NULL,
    event_version  smallint NOT NULL,
    aggregate_id   uuid NOT NULL,
    payload        jsonb NOT NULL,
    traceparent    text,
    tracestate     text,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at   timestamptz,
    stream_id      text
);

CREATE INDEX outbox_unpublished_idx ON outbox (txid, id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Idempotency-Key records: the response of the first request, replayed for
-- 24 h to a retry with the same key and body.
CREATE TABLE idempotency_keys (
    user_id           uuid NOT NULL,
    key               text NOT NULL CONSTRAINT idempotency_key_length CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash      bytea NOT NULL,
    response_status   smallint NOT NULL,
    response_body     jsonb NOT NULL,
    location          text,
    consistency_token text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
