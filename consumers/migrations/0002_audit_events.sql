-- Append-only audit trail, partitioned by month on occurred_at. Monthly partitions are
-- created ahead by sidestream_ensure_monthly_partitions(); anything outside them lands in
-- the default partition instead of failing.
CREATE TABLE IF NOT EXISTS audit_events (
    event_id        uuid        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    tenant_id       text        NOT NULL CHECK (tenant_id <> ''),
    producer        text        NOT NULL,
    actor_id        text        NOT NULL,
    action          text        NOT NULL CHECK (action <> ''),
    resource_type   text        NOT NULL,
    resource_id     text        NOT NULL,
    outcome         text        NOT NULL,
    ip              text,
    details         jsonb       NOT NULL DEFAULT '{}',
    schema_version  int         NOT NULL,
    kafka_partition int         NOT NULL,
    kafka_offset    bigint      NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    -- A unique key on a partitioned table must include the partition key; occurred_at is
    -- part of the event, so (event_id, occurred_at) still identifies a replayed event.
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE TABLE IF NOT EXISTS audit_events_default PARTITION OF audit_events DEFAULT;

CREATE INDEX IF NOT EXISTS audit_events_by_tenant_time
    ON audit_events (tenant_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS audit_events_by_actor
    ON audit_events (tenant_id, actor_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS audit_events_by_resource
    ON audit_events (tenant_id, resource_type, resource_id, occurred_at DESC);

CREATE OR REPLACE FUNCTION sidestream_ensure_monthly_partitions(
    parent regclass, first_month date, months int
) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    created int := 0;
    month date;
    child text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        month := date_trunc('month', first_month)::date + make_interval(months => i);
        child := format('%s_%s', parent::text, to_char(month, 'YYYY_MM'));
        IF to_regclass(child) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                child, parent, month, month + interval '1 month'
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

SELECT sidestream_ensure_monthly_partitions('audit_events', now()::date - 31, 5);
