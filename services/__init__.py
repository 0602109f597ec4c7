"""Sidestream services: what a backend service builds on top of the event platform.

- :mod:`services.cache` — cache-aside on Redis with versioned entries, stampede
  protection and an L1 that every process evicts on invalidation.
- :mod:`services.invalidation_consumer` — the invalidation consumer: ``EntityChanged`` events →
  tombstones, generation bumps and L1 evictions, in the consumers' batch runtime.
- :mod:`services.ratelimit` — a per-subject rate limiter (GCRA, one Lua step); the API
  keys it by authenticated principal and scope.
- :mod:`services.api` — the reference API (FastAPI): projects in Postgres, writes through
  the transactional outbox, reads through the cache.

Flow of one write: ``PUT /projects/{id}`` → row + ``AuditEvent`` + ``EntityChanged`` in
one Postgres transaction → outbox relay → Kafka → invalidation consumer → Redis tombstone
and pub/sub → every process's L1.
"""

from services.entities import collection_of, item_key
from services.migrations_source import MIGRATION_SOURCES, SERVICES_MIGRATIONS

__all__ = ["MIGRATION_SOURCES", "SERVICES_MIGRATIONS", "collection_of", "item_key"]
