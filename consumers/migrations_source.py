"""The consumers package's SQL migrations (offsets table and sink tables)."""

from runtime.migrations import MigrationSource

CONSUMER_MIGRATIONS = MigrationSource("consumers")
