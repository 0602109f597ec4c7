-- Webhook endpoints (consumers/delivery/endpoints.py): registered by the API, read by the
-- notify worker when it claims a notification. Notifications now name an endpoint
-- (`notifications.endpoint_id`) instead of carrying a raw URL.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    tenant_id   text        NOT NULL CHECK (tenant_id <> ''),
    id          uuid        NOT NULL,
    url         text        NOT NULL CHECK (char_length(url) BETWEEN 8 AND 2000),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 4000),
    -- Templates this endpoint accepts; empty = all.
    event_types text[]      NOT NULL DEFAULT '{}',
    enabled     boolean     NOT NULL DEFAULT true,
    -- The signing secret, AES-256-GCM sealed (never stored in the clear; see
    -- consumers/delivery/endpoints.py); the previous one stays valid until its expiry
    -- after a rotation.
    secret_sealed              bytea       NOT NULL,
    previous_secret_sealed     bytea,
    previous_secret_expires_at timestamptz,
    version     bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE notifications ADD COLUMN IF NOT EXISTS endpoint_id uuid;

-- Circuits and concurrency caps now go per endpoint ('endpoint:<id>'); rows written
-- before (a raw URL in `recipient`) keep host[:port] of that URL. A generated column's
-- expression cannot be changed before PostgreSQL 17, so it is dropped and added again.
ALTER TABLE notifications DROP COLUMN IF EXISTS destination;
ALTER TABLE notifications ADD COLUMN destination text
    GENERATED ALWAYS AS (
        CASE WHEN channel = 'WEBHOOK' AND endpoint_id IS NOT NULL
             THEN 'endpoint:' || endpoint_id::text
             WHEN channel = 'WEBHOOK'
             THEN coalesce(
                 lower(substring(recipient FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]+)')),
                 '')
             ELSE 'smtp'
        END
    ) STORED;
