-- Dead letters sent back to their source topic by `sidestream dlq redrive`, one row per
-- dead-letter record, so that running a redrive again never sends the same record twice.
-- The row is written in the same transaction that waits for the redriven copy's delivery.
-- dlq_timestamp_ms tells records apart should the dead-letter topic be deleted and
-- recreated (offsets start over): a row whose timestamp differs is stale and replaced.
-- The source position and value digest identify a source record dead-lettered twice (by a
-- replay, or a crash between dead-lettering and the offset commit): it is redriven once.
CREATE TABLE IF NOT EXISTS dlq_redrives (
    dlq_topic        text        NOT NULL,
    dlq_partition    int         NOT NULL,
    dlq_offset       bigint      NOT NULL,
    dlq_timestamp_ms bigint      NOT NULL,
    source_topic     text        NOT NULL,
    source_partition int,
    source_offset    bigint,
    value_digest     bytea       NOT NULL,  -- sha256 of the record value
    error_class      text        NOT NULL,
    redrive_count    int         NOT NULL,  -- the sidestream.redrive.count the copy carries
    target_partition int,                   -- where the copy landed
    target_offset    bigint,
    redriven_by      text        NOT NULL,
    redriven_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);

CREATE INDEX IF NOT EXISTS dlq_redrives_by_source
    ON dlq_redrives (source_topic, source_partition, source_offset);
