"""The console's sign-in over the API's key store: an API key with the ``admin`` scope
makes an operator, ``read`` a read-only user (``sidestream keys create --scope ...``).

The same :class:`services.api.auth.ApiKeyAuthenticator` the API uses checks the key
(keyed hash, constant time, revocation and expiry, a short cache), so the console holds
no second copy of any of it. Its pool is opened on the first sign-in, inside the
console's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from runtime import Settings
from runtime.clients import check_schema
from services.api.auth import ApiKeyAuthenticator
from services.api.errors import UnauthorizedError
from services.console.access import Principal

__all__ = ["ApiKeyVerifier"]


class ApiKeyVerifier:
    """:class:`services.console.access.KeyVerifier` over the API's ``api_keys`` table in
    ``schema`` (default: the configured one)."""

    def __init__(self, settings: Settings, *, schema: str | None = None) -> None:
        self._settings = settings
        self._schema = check_schema(schema or settings.postgres_schema)
        self._authenticator: ApiKeyAuthenticator | None = None
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._lock = asyncio.Lock()

    async def _opened(self) -> ApiKeyAuthenticator:
        async with self._lock:
            if self._authenticator is None:
                self._pool = AsyncConnectionPool(
                    self._settings.postgres_dsn.get_secret_value(),
                    min_size=0,
                    max_size=2,
                    kwargs={"autocommit": True, "options": f"-c search_path={self._schema}"},
                    timeout=5.0,
                    name="console-keys",
                    open=False,
                )
                await self._pool.open()
                self._authenticator = ApiKeyAuthenticator(
                    pool=self._pool,
                    hash_key=self._settings.api_key_hash_secret.get_secret_value().encode(),
                    cache_ttl_s=self._settings.api_key_cache_ttl_s,
                )
            return self._authenticator

    async def verify(self, key: str) -> Principal | None:
        """The console principal of ``key``; None when the API would answer 401."""
        authenticator = await self._opened()
        try:
            found = await authenticator.authenticate(key)
        except UnauthorizedError:
            return None
        return Principal(
            found.id, frozenset(scope.value for scope in found.scopes), tenant=found.tenant
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
