"""Redis key names for one cache namespace.

Every name starts with the namespace and a one-letter kind, so kinds can never collide
whatever the caller's keys contain (a caller's key is always the *last* component):

==========================================  ============================================
``<ns>:e:<key>``                            entry (value, negative entry or tombstone)
``<ns>:l:<tenant>:<coll>:<gen>:<query>``    list/query entry, folded with its generation
``<ns>:g:<tenant>:<coll>``                  generation counter of a tenant's collection
``<ns>:lock:<entry name without <ns>:>``    fill lock of one entry
``<ns>:invalidations``                      pub/sub channel of invalidated keys
==========================================  ============================================
"""

from __future__ import annotations

_MAX_NAMESPACE = 200


def _check_name(what: str, name: str, *, allow_colon: bool) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    if any(ch.isspace() for ch in name):
        raise ValueError(f"{what} must not contain whitespace, got {name!r}")
    if not allow_colon and ":" in name:
        # Tenants and collections sit in the middle of a key: a colon would make
        # ("a:b", "c") and ("a", "b:c") the same key.
        raise ValueError(f"{what} must not contain ':', got {name!r}")
    return name


class Keys:
    """Key and channel names of one namespace (pure; no Redis access)."""

    __slots__ = ("_entry_prefix", "_list_prefix", "_lock_prefix", "channel", "namespace")

    def __init__(self, namespace: str) -> None:
        _check_name("namespace", namespace, allow_colon=True)
        if len(namespace) > _MAX_NAMESPACE:
            raise ValueError(f"namespace is longer than {_MAX_NAMESPACE} characters")
        self.namespace = namespace
        #: The pub/sub channel on which invalidated keys are announced.
        self.channel = f"{namespace}:invalidations"
        self._entry_prefix = f"{namespace}:e:"
        self._list_prefix = f"{namespace}:l:"
        self._lock_prefix = f"{namespace}:lock:"

    def entry(self, key: str) -> str:
        """The Redis key holding ``key``'s entry."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"cache key must be a non-empty string, got {key!r}")
        return self._entry_prefix + key

    def lock(self, entry_name: str) -> str:
        """The fill lock of an entry (``entry_name`` from :meth:`entry` or :meth:`list_entry`)."""
        return self._lock_prefix + entry_name[len(self.namespace) + 1 :]

    def generation(self, tenant: str, collection: str) -> str:
        """The generation counter of ``tenant``'s ``collection``."""
        _check_name("tenant", tenant, allow_colon=False)
        _check_name("collection", collection, allow_colon=False)
        return f"{self.namespace}:g:{tenant}:{collection}"

    def list_entry(self, tenant: str, collection: str, generation: int, query: str) -> str:
        """The entry of one list/query result at one generation.

        A bump of the generation makes every older list key unreachable (they expire on
        their own TTL), which is how list caches are invalidated without a SCAN.
        """
        _check_name("tenant", tenant, allow_colon=False)
        _check_name("collection", collection, allow_colon=False)
        if not isinstance(query, str):
            raise ValueError(f"query must be a string, got {query!r}")
        return f"{self._list_prefix}{tenant}:{collection}:{generation}:{query}"
