-- Consumed positions, committed in the same transaction as the rows they produced.
-- `generation` fences a worker that lost a partition: every assignment bumps it, and a
-- commit only succeeds while the worker still holds the generation it claimed.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    next_offset bigint,                   -- NULL: claimed but nothing committed yet
    generation  bigint      NOT NULL DEFAULT 0,
    owner       text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
