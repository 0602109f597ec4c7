"""The services package's SQL migrations (the reference API's tables), and every
package's migrations in the order they apply."""

from consumers.migrations_source import CONSUMER_MIGRATIONS
from producers.outbox import OUTBOX_MIGRATIONS
from runtime.migrations import MigrationSource

#: ``services/migrations/*.sql``; apply after the producers' (the outbox) and consumers'.
SERVICES_MIGRATIONS = MigrationSource("services")

#: Every package's migrations, in dependency order (``sidestream db migrate`` applies them).
MIGRATION_SOURCES: tuple[MigrationSource, ...] = (
    OUTBOX_MIGRATIONS,
    CONSUMER_MIGRATIONS,
    SERVICES_MIGRATIONS,
)
