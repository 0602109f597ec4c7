"""Email channel: one SMTP conversation per notification through aiosmtplib.

The message has a plain-text and an HTML part rendered from the template registry, and a
``Message-ID`` built from the notification id, the same on every attempt, so a duplicate
caused by a crash mid-send can be recognised downstream. STARTTLS is used when
configured (and then required). The whole conversation is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from consumers.delivery.errors import RecipientError, TemplateError
from consumers.delivery.policy import AttemptResult, Outcome, Stopwatch
from consumers.delivery.store import Notification
from consumers.delivery.templates import TemplateRegistry


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpOptions:
    """Where and how to send email (see :class:`~consumers.delivery.config.DeliveryConfig`)."""

    host: str = "127.0.0.1"
    port: int = 1025
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    sender: str = "Sidestream <notifications@sidestream.local>"
    timeout_s: float = 10.0
    message_id_domain: str = "sidestream.local"


class EmailChannel:
    """Delivers ``EMAIL`` notifications to one SMTP relay."""

    def __init__(self, *, options: SmtpOptions, templates: TemplateRegistry) -> None:
        self._options = options
        self._templates = templates

    @property
    def name(self) -> str:
        return "EMAIL"

    @property
    def deadline_s(self) -> float:
        return self._options.timeout_s

    def build_message(self, notification: Notification) -> EmailMessage:
        """The email for ``notification``.

        Raises:
            RecipientError: not a single plain address.
            TemplateError: unknown template or missing parameter.
        """
        recipient = notification.recipient.strip()
        _name, address = parseaddr(recipient)
        local, at, domain = address.rpartition("@")
        if not at or not local or "." not in domain or address != recipient:
            raise RecipientError(self.name, notification.recipient, "not a plain email address")
        values = {
            **notification.params,
            "recipient": address,
            "tenant_id": notification.tenant_id,
            "notification_id": str(notification.notification_id),
        }
        rendered = self._templates.render(notification.template, values)
        message = EmailMessage()
        message["From"] = self._options.sender
        message["To"] = address
        message["Subject"] = rendered.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = (
            f"<{notification.notification_id}@{self._options.message_id_domain}>"
        )
        message["Sidestream-Notification-Id"] = str(notification.notification_id)
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    async def send(self, notification: Notification) -> AttemptResult:
        watch = Stopwatch()
        result = watch.result
        try:
            message = self.build_message(notification)
        except RecipientError as exc:
            return result(Outcome.PERMANENT, error_class="bad_recipient", error=str(exc))
        except TemplateError as exc:
            return result(Outcome.PERMANENT, error_class="template", error=str(exc))
        except ValueError as exc:  # e.g. a line break in a header value
            return result(Outcome.PERMANENT, error_class="bad_message", error=str(exc))
        options = self._options
        try:
            async with asyncio.timeout(options.timeout_s):
                _refused, reply = await aiosmtplib.send(
                    message,
                    hostname=options.host,
                    port=options.port,
                    username=options.username,
                    password=options.password,
                    start_tls=options.starttls,
                    use_tls=False,
                    timeout=options.timeout_s,
                )
        except TimeoutError as exc:  # aiosmtplib's timeouts are TimeoutErrors too
            return result(
                Outcome.TRANSIENT,
                error_class="timeout",
                error=f"no reply within {options.timeout_s:g} s ({type(exc).__name__})",
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return _reply_result(watch, refused.code, refused.message)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials are wrong: retrying helps once an operator fixes them.
            return result(
                Outcome.TRANSIENT, status_code=exc.code, reply=exc.message, error_class="smtp_auth"
            )
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_result(watch, exc.code, exc.message)
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            return result(Outcome.TRANSIENT, error_class="connect", error=str(exc) or "connect")
        except aiosmtplib.SMTPException as exc:  # e.g. STARTTLS not offered
            return result(
                Outcome.TRANSIENT, error_class="smtp", error=f"{type(exc).__name__}: {exc}"
            )
        return result(Outcome.SENT, status_code=250, reply=reply[:1000])


def _reply_result(watch: Stopwatch, code: int, message: str) -> AttemptResult:
    """A refusal by SMTP reply code: 4xx is temporary, 5xx permanent (RFC 5321)."""
    if 400 <= code < 500:
        return watch.result(
            Outcome.TRANSIENT, status_code=code, reply=message, error_class="smtp_4xx"
        )
    return watch.result(Outcome.PERMANENT, status_code=code, reply=message, error_class="smtp_5xx")
