-- Delivery workers (consumers/delivery): claims with a lease, a delivery budget that
-- `sidestream notifications retry` can renew, dead-letter bookkeeping, and every attempt.

-- The claim: status = 'sending' by `claimed_by` until `lease_until`; an expired lease
-- (a crashed worker) makes the row claimable again.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS lease_until timestamptz;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS sent_at timestamptz;
-- Why a 'failed' row failed: permanent (the destination refused it), exhausted (max
-- attempts), expired (max age).
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS failure_reason text
    CHECK (failure_reason IN ('permanent', 'exhausted', 'expired'));
-- The delivery budget (max attempts, max age) counts from here; a manual retry starts a
-- new one without renumbering the attempts already recorded.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS budget_started_at timestamptz;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS budget_attempts_base int NOT NULL DEFAULT 0;
-- Failed rows are copied to the dead-letter topic by a sweeper (an outbox of sorts):
-- NULL until the topic acknowledged the copy.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;
-- Where a delivery goes, for per-destination concurrency caps and circuit breakers:
-- host[:port] of a webhook URL (lower case, no user info), 'smtp' for email (every
-- email goes through the one configured relay).
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS destination text
    GENERATED ALWAYS AS (
        CASE WHEN channel = 'WEBHOOK'
             THEN coalesce(
                 lower(substring(recipient FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]+)')),
                 '')
             ELSE 'smtp'
        END
    ) STORED;

CREATE INDEX IF NOT EXISTS notifications_leases
    ON notifications (lease_until) WHERE status = 'sending';
CREATE INDEX IF NOT EXISTS notifications_undelivered
    ON notifications (created_at) WHERE status IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS notifications_to_dead_letter
    ON notifications (updated_at) WHERE status = 'failed' AND dead_lettered_at IS NULL;

-- One row per delivery attempt. An attempt whose worker died before recording it is
-- written as 'abandoned' by the worker that reclaims the expired lease.
CREATE TABLE IF NOT EXISTS notification_attempts (
    notification_id uuid             NOT NULL
                                     REFERENCES notifications (notification_id) ON DELETE CASCADE,
    attempt         int              NOT NULL CHECK (attempt >= 1),
    worker          text             NOT NULL,
    destination     text             NOT NULL,
    started_at      timestamptz      NOT NULL,
    finished_at     timestamptz      NOT NULL,
    latency_ms      double precision,             -- NULL when abandoned
    outcome         text             NOT NULL
                                     CHECK (outcome IN ('sent', 'transient', 'permanent', 'abandoned')),
    status_code     int,                          -- HTTP status or SMTP reply code
    reply           text,                         -- SMTP reply / start of the HTTP body
    error_class     text,                         -- e.g. timeout, connect, http_5xx, smtp_5xx
    error           text,
    PRIMARY KEY (notification_id, attempt)
);
