-- Raw analytics events, and hourly counts per tenant x event name maintained in the same
-- transaction as the batch (only rows that were new are counted, so replays add nothing).
CREATE TABLE IF NOT EXISTS analytics_events (
    event_id        uuid        PRIMARY KEY,
    occurred_at     timestamptz NOT NULL,
    tenant_id       text        NOT NULL CHECK (tenant_id <> ''),
    producer        text        NOT NULL,
    name            text        NOT NULL CHECK (name <> ''),
    user_id         text,
    session_id      text,
    properties      jsonb       NOT NULL DEFAULT '{}',
    value           double precision,
    platform        text        NOT NULL DEFAULT 'unknown',
    schema_version  int         NOT NULL,
    kafka_partition int         NOT NULL,
    kafka_offset    bigint      NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS analytics_events_by_tenant_time
    ON analytics_events (tenant_id, occurred_at DESC);

CREATE TABLE IF NOT EXISTS analytics_hourly (
    tenant_id   text        NOT NULL,
    name        text        NOT NULL,
    hour        timestamptz NOT NULL,
    events      bigint      NOT NULL,
    value_sum   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, name, hour)
);
