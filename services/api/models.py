"""Request and response bodies (and the OpenAPI schemas they generate)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

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

# Every string is checked with Python's `re` (regex_engine below), the engine that also
# reads the patterns from the OpenAPI document (e.g. schemathesis): the schema and the
# server cannot disagree on what a pattern means.
#
# Postgres refuses NUL in text: the patterns exclude it, so it is a 422, not a 500.
_TEXT = r"^[^\x00]*$"
# A name: no control characters, no leading or trailing whitespace (so `maxLength` is
# the length stored; names are not silently stripped).
_EDGE = r"[^\x00-\x20\x7f]"
_NAME = rf"^{_EDGE}(?:[^\x00-\x1f\x7f]*{_EDGE})?$"
_PARAM_KEY = r"^[A-Za-z0-9_.-]{1,64}$"
# Explicit classes, not \s: Python's and ECMA-262's \s differ (e.g. on \x1c-\x1f).
_EMAIL = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+\.[^@\x00-\x20\x7f]+$"


def _encodable(value: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``), which no UTF-8 encoder accepts
    (Postgres, Kafka): refuse them here. Not a pattern: JSON Schema tools cannot express
    surrogates, and they never generate them."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("the text contains a lone surrogate (invalid Unicode)") from None
    return value


_Encodable = AfterValidator(_encodable)


def no_final_newline(value: str) -> str:
    """Python's ``$`` also matches before a final newline, ECMA-262's (JSON Schema's)
    does not: for a pattern that excludes newlines, refuse that one too, so the server
    and the schema agree."""
    if value.endswith("\n"):
        raise ValueError("must not end with a newline")
    return value


#: Goes with every pattern that excludes ``\n``.
NoFinalNewline = AfterValidator(no_final_newline)

#: Limits of a notification's template parameters.
MAX_PARAMS = 50
MAX_PARAM_VALUE = 2000

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=_NAME),
    _Encodable,
    NoFinalNewline,
]
Description = Annotated[str, StringConstraints(max_length=4000, pattern=_TEXT), _Encodable]
Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_TEXT), _Encodable]
ParamKey = Annotated[str, StringConstraints(pattern=_PARAM_KEY)]
ParamValue = Annotated[
    str, StringConstraints(max_length=MAX_PARAM_VALUE, pattern=_TEXT), _Encodable
]
Params = Annotated[
    dict[ParamKey, ParamValue],
    Field(
        max_length=MAX_PARAMS,
        # Keys outside the pattern are refused: say so, or the schema would allow them.
        json_schema_extra={"additionalProperties": False},
        description=f"Template parameters: at most {MAX_PARAMS}, keys 1-64 of A-Z a-z 0-9 _ . -,"
        f" values up to {MAX_PARAM_VALUE} characters.",
    ),
]


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


def _refuse_nulls(data: Any) -> None:
    """Optional fields are documented as "leave it out", not nullable: an explicit null
    is refused like any other wrong type."""
    if isinstance(data, dict):
        nulls = sorted(str(k) for k, v in data.items() if v is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)}: null is not a value (leave it out)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


class ProjectCreate(_Strict):
    """A new project (``POST``)."""

    name: Name
    description: Description = ""
    status: ProjectStatus = ProjectStatus.ACTIVE


class ProjectReplace(ProjectCreate):
    """A project's full new state (``PUT``); omitted fields take their defaults."""


class ProjectPatch(_Strict):
    """Fields to change (``PATCH``): at least one; ``null`` is not a value."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Name | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    status: ProjectStatus | SkipJsonSchema[None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        # {} is refused by minProperties in the schema, and here.
        if isinstance(data, dict) and not data:
            raise ValueError("give at least one of name, description, status")
        _refuse_nulls(data)
        return data

    def changes(self) -> dict[str, Any]:
        """The fields given, with their values."""
        return self.model_dump(mode="json", exclude_unset=True)


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
    template: Text200
    params: Params = Field(default_factory=dict)
    dedupe_key: Text200 | SkipJsonSchema[None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        _refuse_nulls(data)
        return data

    @model_validator(mode="after")
    def _keys_end_cleanly(self) -> Self:
        for key in self.params:
            no_final_newline(key)
        return self


class EmailNotification(_NotificationBase):
    """An email to ``recipient``; links in ``params`` must point to the tenant's link
    hosts (``/v1/tenants/{tenant}/link-hosts``)."""

    channel: Literal[NotificationChannel.EMAIL]
    recipient: Annotated[
        str,
        StringConstraints(min_length=3, max_length=2000, pattern=_EMAIL),
        _Encodable,
        NoFinalNewline,
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
