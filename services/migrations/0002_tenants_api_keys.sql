-- Tenants and their API keys: who may call the reference API (services/api/auth.py).
--
-- A key is shown once, as `ssk_<key_id>_<secret>`; only `key_id` (public: it names the
-- key in logs and in `sidestream keys list`) and an HMAC-SHA256 of the secret under the
-- server's key-hashing secret (SIDESTREAM_API_KEY_HASH_SECRET) are stored here. Nothing
-- in this table lets anyone call the API without also holding that server secret.
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id   text        PRIMARY KEY
                            CHECK (tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name        text        NOT NULL DEFAULT '' CHECK (char_length(name) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id      text        PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    -- read | write | notify | admin | act-as (see services/api/auth.py for what each allows)
    scopes      text[]      NOT NULL CHECK (cardinality(scopes) >= 1),
    secret_hash bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant_id, created_at);
