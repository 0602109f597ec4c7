"""Request and response bodies (and the OpenAPI schemas they generate)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas import NotificationChannel

__all__ = [
    "EmailNotification",
    "NotificationAccepted",
    "NotificationCreate",
    "Problem",
    "Project",
    "ProjectCreate",
    "ProjectPage",
    "ProjectPatch",
    "ProjectReplace",
    "ProjectStatus",
    "WebhookNotification",
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=4000)]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(_Strict):
    """A new project (``POST``)."""

    name: Name
    description: Description = ""
    status: ProjectStatus = ProjectStatus.ACTIVE


class ProjectReplace(ProjectCreate):
    """A project's full new state (``PUT``); omitted fields take their defaults."""


class ProjectPatch(_Strict):
    """Fields to change (``PATCH``); at least one."""

    name: Name | None = None
    description: Description | None = None
    status: ProjectStatus | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.changes():
            raise ValueError("give at least one of name, description, status (not null)")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given, with their values (``null`` means "not given")."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items()}


class Project(BaseModel):
    """A project as the API returns it. ``version`` grows by one with every write; it is
    also the ``ETag``."""

    id: UUID
    name: str
    description: str
    status: ProjectStatus
    version: int
    created_at: datetime
    updated_at: datetime


class ProjectPage(BaseModel):
    """One page of a tenant's projects, in id (creation) order."""

    items: list[Project]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class _NotificationBase(_Strict):
    template: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    params: dict[str, str] = Field(default_factory=dict)
    dedupe_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class EmailNotification(_NotificationBase):
    """An email to ``recipient``; links in ``params`` must point to the tenant's link
    hosts (``/v1/tenants/{tenant}/link-hosts``)."""

    channel: Literal[NotificationChannel.EMAIL]
    recipient: Annotated[
        str, StringConstraints(min_length=3, max_length=2000, pattern=_EMAIL.pattern)
    ]


class WebhookNotification(_NotificationBase):
    """A signed POST to one of the tenant's registered webhook endpoints (never a raw
    URL: register it with ``POST /v1/tenants/{tenant}/webhook-endpoints``)."""

    channel: Literal[NotificationChannel.WEBHOOK]
    endpoint_id: UUID = Field(description="Id of one of the tenant's webhook endpoints.")


#: A notification to send (by ``channel``); delivered at most once per ``dedupe_key``
#: (or ``Idempotency-Key`` header, or the notification id).
NotificationCreate = Annotated[
    EmailNotification | WebhookNotification, Field(discriminator="channel")
]


class NotificationAccepted(BaseModel):
    """The request was queued for delivery."""

    id: UUID
    status: Literal["accepted"] = "accepted"


class Problem(BaseModel):
    """An error (RFC 9457 problem details), served as ``application/problem+json``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Validation errors (422 only): location, message, type."
    )
