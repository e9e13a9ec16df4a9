-- The relay remembers how far it has published with one position instead of
-- marking every row: an UPDATE per event doubled the outbox's write cost
-- (a new tuple, index entries, vacuum work) on the hottest table.
--
-- Rows are published in (txid, id) order and only below the xmin horizon, so
-- every row at or below the position is published and none above it is.
CREATE TABLE outbox_relay (
    singleton       boolean PRIMARY KEY DEFAULT true CONSTRAINT outbox_relay_one_row CHECK (singleton),
    last_txid       xid8 NOT NULL DEFAULT '0',
    last_id         bigint NOT NULL DEFAULT 0,
    last_stream_id  text,
    published_at    timestamptz
);

-- Start after the newest row the per-row marking had published.
INSERT INTO outbox_relay (last_txid, last_id, last_stream_id, published_at)
SELECT coalesce(p.txid, '0'), coalesce(p.id, 0), p.stream_id, p.published_at
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
        SELECT txid, id, stream_id, published_at FROM outbox
         WHERE published_at IS NOT NULL
         ORDER BY txid DESC, id DESC LIMIT 1) AS p ON true;

DROP INDEX outbox_unpublished_idx;
DROP INDEX outbox_published_at_idx;
ALTER TABLE outbox DROP COLUMN published_at, DROP COLUMN stream_id;
CREATE INDEX outbox_order_idx ON outbox (txid, id);

-- What is still to be published, for operators, the backlog metric and tests.
CREATE VIEW outbox_pending AS
SELECT o.*
  FROM outbox o, outbox_relay r
 WHERE (o.txid, o.id) > (r.last_txid, r.last_id);
