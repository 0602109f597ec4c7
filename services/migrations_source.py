"""The services package's SQL migrations (the reference API's tables)."""

from runtime.migrations import MigrationSource

#: ``services/migrations/*.sql``; apply after the producers' (the outbox) and consumers'.
SERVICES_MIGRATIONS = MigrationSource("services")
