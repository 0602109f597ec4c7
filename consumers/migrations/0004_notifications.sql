-- Requested notifications, ready for delivery workers (claimed with FOR UPDATE SKIP LOCKED).
CREATE TABLE IF NOT EXISTS notifications (
    notification_id uuid        PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    tenant_id       text        NOT NULL CHECK (tenant_id <> ''),
    channel         text        NOT NULL CHECK (channel IN ('EMAIL', 'WEBHOOK')),
    recipient       text        NOT NULL CHECK (recipient <> ''),
    template        text        NOT NULL,
    params          jsonb       NOT NULL DEFAULT '{}',
    dedupe_key      text,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    requested_at    timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_due
    ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE UNIQUE INDEX IF NOT EXISTS notifications_dedupe
    ON notifications (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
