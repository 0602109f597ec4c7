-- Projects: the reference API's multi-tenant resource (services/api).
--
-- `id` is a UUIDv7 made by the API, so ids grow with time and the primary key doubles as
-- the cursor of the list endpoint. `version` starts at 1 and grows by one with every
-- write, deletion included: it is the version the cache stores with each entry and the
-- one EntityChanged carries, so a stale fill can always be told from a fresh one.
--
-- Deletion is soft (`deleted_at`, version bumped): a deleted project still has a
-- version, so its "not found" can be cached at that version instead of at 0, which any
-- pending tombstone would refuse.
CREATE TABLE IF NOT EXISTS projects (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 4000),
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    version     bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- The list endpoint: live projects of one tenant in id order, after a cursor.
CREATE INDEX IF NOT EXISTS projects_live_by_id
    ON projects (tenant_id, id) WHERE deleted_at IS NULL;

-- A live project's name is unique in its tenant (case-insensitively): 409 on a clash.
CREATE UNIQUE INDEX IF NOT EXISTS projects_live_name
    ON projects (tenant_id, lower(name)) WHERE deleted_at IS NULL;
