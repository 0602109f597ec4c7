"""The operator console: pipelines, dead letters, replays, schemas and deliveries in a
browser, over the same operator library the CLI uses.

Flow of a page: a GET renders a Jinja2 template from :mod:`consumers.ops` (and friends)
read through :class:`ConsoleResources`; an action is a POST checked by role and CSRF
token, run by the same library call as its CLI command, and recorded as an
:class:`~schemas.AuditEvent` through :class:`AuditTrail`.
"""

from services.console.access import KeyVerifier, Principal, Role, SessionStore, StaticKeyVerifier
from services.console.app import create_app
from services.console.audit import CONSOLE_TENANT, AuditTrail
from services.console.pipelines import Pipeline, default_pipelines
from services.console.resources import ConsoleConfig, ConsoleResources

__all__ = [
    "CONSOLE_TENANT",
    "AuditTrail",
    "ConsoleConfig",
    "ConsoleResources",
    "KeyVerifier",
    "Pipeline",
    "Principal",
    "Role",
    "SessionStore",
    "StaticKeyVerifier",
    "create_app",
    "default_pipelines",
]
