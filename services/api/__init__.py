"""The reference API: a small multi-tenant resource built the Sidestream way.

- ``/v1/tenants/{tenant}/projects`` — CRUD. A write commits the row and its
  ``AuditEvent`` + ``EntityChanged`` in one transaction (the outbox); reads go through
  the versioned cache (Redis + L1), kept honest by the invalidation consumer.
- ``/v1/tenants/{tenant}/notifications`` — 202 Accepted; ``NotificationRequested`` on
  Kafka.
- Authentication (:mod:`services.api.auth`): API keys per tenant with scopes, as
  ``Authorization: Bearer ssk_...``; 401/403 problems.
- Per principal and scope rate limit (429 + ``RateLimit-*``), 503 + ``Retry-After`` when
  Kafka's queue is full, RED metrics on ``/metrics``, ``/healthz``, ``/readyz``, a
  request id on every log line and event.

Run it with :func:`serve` (``sidestream api``), or :class:`ApiServer` on a thread, or
in-process: ``create_app(settings, config=ApiConfig(...))``.
"""

from services.api.app import create_app
from services.api.auth import Principal, Scope, authenticate, require_scope, tenant_router
from services.api.config import ApiConfig
from services.api.deps import RequestContext
from services.api.server import ApiServer, install_request_id_logging, serve

__all__ = [
    "ApiConfig",
    "ApiServer",
    "Principal",
    "RequestContext",
    "Scope",
    "authenticate",
    "create_app",
    "install_request_id_logging",
    "require_scope",
    "serve",
    "tenant_router",
]
