-- Final counts of the live analytics windows (consumers/live_analytics), one row per
-- window x tenant x event type. Written when a window closes, as an upsert of the absolute
-- count: a restart or a replay overwrites a row instead of adding to it. Counts are at
-- least once (a worker crash can over-count); analytics_hourly stays the exact figure.
CREATE TABLE IF NOT EXISTS live_window_counts (
    window_seconds int         NOT NULL CHECK (window_seconds > 0),  -- 60 tumbling, 300 hopping
    window_start   timestamptz NOT NULL,                             -- event time, inclusive
    window_end     timestamptz NOT NULL,                             -- exclusive
    tenant_id      text        NOT NULL,
    event_type     text        NOT NULL,                             -- the event's subject
    events         bigint      NOT NULL CHECK (events >= 0),
    written_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_seconds, tenant_id, event_type, window_start)
);
CREATE INDEX IF NOT EXISTS live_window_counts_by_start
    ON live_window_counts (window_start DESC);
