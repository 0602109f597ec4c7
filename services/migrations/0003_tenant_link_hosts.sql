-- Hosts a tenant's email templates may link to (services/api/link_hosts.py): a
-- notification whose params hold a URL to any other host is refused with 422, so a
-- password_reset email cannot carry a link to somewhere the tenant does not own.
-- `host` is a lower-case name without a trailing dot, or `*.` + a domain (its
-- subdomains, not the domain itself).
CREATE TABLE IF NOT EXISTS tenant_link_hosts (
    tenant_id  text        NOT NULL CHECK (tenant_id <> ''),
    host       text        NOT NULL CHECK (host ~ '^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$'
                                           AND char_length(host) <= 253),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, host)
);
