-- The transactional outbox: events written in the same transaction as the business rows
-- they describe, published to Kafka by the outbox relay once committed.
--
-- Values are stored already encoded (validated at add time), so a relay never meets an
-- event it cannot send. `sent_at` is set by the relay in the transaction that held the
-- row's lock while it waited for Kafka's acknowledgement; sent rows are pruned after a
-- retention. `attempts` and `last_error` say why a row is stuck.
CREATE TABLE IF NOT EXISTS outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL,
    event_type    text        NOT NULL,
    topic         text        NOT NULL CHECK (topic <> ''),
    key           bytea       NOT NULL,
    value         bytea       NOT NULL,
    header_names  text[]      NOT NULL DEFAULT '{}',
    header_values bytea[]     NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    attempts      int         NOT NULL DEFAULT 0,
    last_error    text,
    CHECK (cardinality(header_names) = cardinality(header_values))
);

-- Pending rows by key, in id order: the relay finds each key's oldest pending row (the
-- head it locks) and the rows that follow it.
CREATE INDEX IF NOT EXISTS outbox_pending_by_key
    ON outbox (topic, key, id) WHERE sent_at IS NULL;

-- Pruning sent rows after the retention.
CREATE INDEX IF NOT EXISTS outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wake the relays when rows are committed: one notification per inserting statement (and
-- Postgres folds identical ones of a transaction into one). The payload is the schema, so
-- a relay ignores wake-ups meant for another schema's outbox.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sidestream_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER outbox_notify
    AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
