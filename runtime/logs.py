"""Process-wide logging: JSON lines for machines, a readable format on a terminal.

Library modules just use ``logging.getLogger(__name__)``; only the process entry point
calls :func:`configure_logging`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

# Anything that looks like a password in a URL or a key=value pair is masked, so a
# DSN or a librdkafka config that ends up in a log line never leaks its secret.
_SECRET_PATTERNS = (
    re.compile(r"(?P<keep>://[^:/@\s]+:)[^@\s]+(?=@)"),
    re.compile(r"(?P<keep>(?:password|passwd|secret|sasl\.password)\s*[=:]\s*)\S+", re.I),
)


def redact(text: str) -> str:
    """Mask secrets (URL passwords, ``password=...``) in a string."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda match: f"{match.group('keep')}***", text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in the rendered message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream it
    was when logging was configured: a command run in-process (a test's CLI runner, an
    embedding application) swaps stderr and closes its replacement afterwards, and a
    handler holding that replacement would fail on every later record ("I/O operation on
    closed file"). The same choice as the standard library's last-resort handler."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Send all logs to stderr as JSON lines, or human-readable lines on a TTY."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = _CurrentStderrHandler()
    if use_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # librdkafka and the HTTP stack are chatty at INFO.
    for noisy in ("urllib3", "httpx", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # faust and mode log every service's start and stop and whole recovery tables at INFO
    # (~165 lines per live-analytics start and stop): kept for DEBUG.
    for chatty in ("faust", "mode"):
        logging.getLogger(chatty).setLevel(
            root.level if root.level < logging.INFO else max(logging.WARNING, root.level)
        )
