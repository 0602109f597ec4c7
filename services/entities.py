"""Which cache keys an entity owns: shared by the API (reads) and the invalidation
consumer (deletes), so the two can never disagree on a name.

An entity of type ``project``, id ``p1``, of tenant ``acme`` is cached under the item key
``project/acme/p1``; every list/query over a tenant's projects is cached under the
generation counter of collection ``project`` of tenant ``acme`` (see
:meth:`services.cache.VersionedCache.get_or_load_list`). A change to any project of a
tenant bumps that generation: lists show every item's fields, so an update changes them
as much as a creation or a deletion does.
"""

from __future__ import annotations

import re

__all__ = ["collection_of", "item_key"]

# Tenants and entity types sit inside Redis key names (and generation keys forbid ':'):
# keep them to a conservative alphabet.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID = re.compile(r"^\S+$")


def _checked(what: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-64 characters of letters, digits, '_', '.', '-', got {value!r}"
        )
    return value


def item_key(tenant_id: str, entity_type: str, entity_id: str) -> str:
    """The cache key of one entity."""
    if not _ID.fullmatch(entity_id):
        raise ValueError(f"entity_id must be non-empty without whitespace, got {entity_id!r}")
    return f"{_checked('entity_type', entity_type)}/{_checked('tenant_id', tenant_id)}/{entity_id}"


def collection_of(entity_type: str) -> str:
    """The collection (generation counter) whose lists contain entities of this type."""
    return _checked("entity_type", entity_type)
