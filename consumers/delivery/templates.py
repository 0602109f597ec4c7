"""Email templates: a small registry keyed by the ``template`` column.

A template has a subject, a plain-text body and an HTML body, each a
:class:`string.Template` (``$name`` / ``${name}``). The notification's ``params`` fill
them, plus ``recipient``, ``tenant_id`` and ``notification_id``. Values are HTML-escaped
in the HTML body only. A missing parameter is an error (a permanent failure), never an
empty hole in a sent email.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from string import Template

from consumers.delivery.errors import TemplateError


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    """One template's three parts, as ``string.Template`` source."""

    subject: str
    text: str
    html: str

    def __post_init__(self) -> None:
        for part in (self.subject, self.text, self.html):
            if not Template(part).is_valid():
                raise ValueError(f"invalid $-placeholder in template part {part[:60]!r}")

    def render(self, name: str, values: Mapping[str, str]) -> RenderedEmail:
        """Fill the three parts.

        Raises:
            TemplateError: a placeholder has no value.
        """
        escaped = {key: html.escape(value) for key, value in values.items()}
        try:
            subject = Template(self.subject).substitute(values)
            text = Template(self.text).substitute(values)
            body = Template(self.html).substitute(escaped)
        except KeyError as exc:
            raise TemplateError(name, f"missing parameter {exc.args[0]!r}") from exc
        # A subject is a header: a line break in it would be refused by the email library.
        return RenderedEmail(subject=" ".join(subject.split()), text=text, html=body)


class TemplateRegistry:
    """Templates by name; :func:`default_templates` returns one with the built-in ones."""

    def __init__(self, templates: Mapping[str, EmailTemplate] | None = None) -> None:
        self._templates: dict[str, EmailTemplate] = dict(templates or {})

    def register(self, name: str, template: EmailTemplate) -> None:
        if not name:
            raise ValueError("a template needs a name")
        self._templates[name] = template

    def render(self, name: str, values: Mapping[str, str]) -> RenderedEmail:
        """Render template ``name`` with ``values``.

        Raises:
            TemplateError: unknown template, or a missing parameter.
        """
        template = self._templates.get(name)
        if template is None:
            known = ", ".join(sorted(self._templates)) or "none"
            raise TemplateError(name, f"unknown template (known: {known})")
        return template.render(name, values)

    def __contains__(self, name: object) -> bool:
        return name in self._templates

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._templates))


_HTML_PAGE = (
    '<!doctype html><html><body style="font-family: sans-serif">{body}'
    '<p style="color: #888; font-size: small">Sent by Sidestream to ${{recipient}}.</p>'
    "</body></html>"
)

_BUILT_IN = {
    "welcome": EmailTemplate(
        subject="Welcome to Sidestream",
        text="Hello ${recipient},\n\nyour account is ready.\n\n-- Sidestream\n",
        html=_HTML_PAGE.format(body="<p>Hello ${recipient},</p><p>your account is ready.</p>"),
    ),
    "password_reset": EmailTemplate(
        subject="Reset your password",
        text="Hello,\n\nreset your password here: ${reset_url}\n"
        "The link expires in ${expires_in}.\n",
        html=_HTML_PAGE.format(
            body='<p>Hello,</p><p><a href="${reset_url}">Reset your password</a>.'
            " The link expires in ${expires_in}.</p>"
        ),
    ),
    "invoice_ready": EmailTemplate(
        subject="Invoice ${invoice_id} is ready",
        text="Hello,\n\ninvoice ${invoice_id} for ${amount} is ready.\n",
        html=_HTML_PAGE.format(
            body="<p>Hello,</p><p>invoice <b>${invoice_id}</b> for ${amount} is ready.</p>"
        ),
    ),
}


def default_templates() -> TemplateRegistry:
    """A fresh registry with the built-in templates (``welcome``, ``password_reset``,
    ``invoice_ready``); register more on it before handing it to a worker."""
    return TemplateRegistry(_BUILT_IN)
