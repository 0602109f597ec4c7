"""Servers that are away, reported as a few readable log lines instead of floods.

Kafka:
Left alone, librdkafka writes every failed connection attempt to stderr: a worker whose
broker is away prints hundreds of ``%3|…|FAIL|…`` lines a minute, and error events are
logged again by whoever set an ``error_cb``. Every client built by
:mod:`runtime.clients` instead hands both to one :class:`KafkaLogReporter` per process,
which

* translates what it recognises into one line that names the server, the address, the
  reason and the likely fix ("cannot reach Kafka at 127.0.0.1:9092 (connection refused);
  retrying — is the stack up? `make up`");
* deduplicates across every client of the process (a worker's consumer, dead-letter
  producer and admin client report one outage once) and rate-limits: a repeat within
  ``interval_s`` is only counted, and the next line after the interval says how many
  were held back;
* remembers when the brokers were last unreachable, so workers can report not ready
  (:meth:`KafkaLogReporter.reachable`).

Lines go to the ``runtime.kafka`` logger; one-shot CLI commands raise its level, since
they end with their own single line.

Postgres: psycopg's pool logs every failed reconnection attempt (two lines each);
:class:`PoolLogFilter`, installed on the ``psycopg.pool`` logger by
:func:`runtime.clients.postgres_pool`, turns them into the same kind of rate-limited line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaError

#: The logger every translated librdkafka line goes to.
KAFKA_LOGGER = "runtime.kafka"

logger = logging.getLogger(KAFKA_LOGGER)

#: Error codes that mean "the brokers cannot be reached right now" (librdkafka retries).
UNREACHABLE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
    }
)

# "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused
# (after 0ms in state CONNECT)", "…: Failed to resolve 'kafka:9092': Name or service not
# known (after …)", "127.0.0.1:9092/1: Disconnected (after 52ms in state UP)".
_BROKER = re.compile(r"(?:\[thrd:[^\]]*\]:\s*)?(?P<broker>[^\s/]+:\d+)/[\w-]+:\s*(?P<what>.*)")
_AFTER = re.compile(r"\s*\(after [^)]*\)\s*$")
_CONNECT_FAILED = re.compile(r"Connect to \S+ failed:\s*(?P<reason>.*)", re.IGNORECASE)
_RESOLVE_FAILED = re.compile(r"Failed to resolve '[^']*':\s*(?P<reason>.*)", re.IGNORECASE)
_BROKERS_DOWN = re.compile(r"\d+/\d+ brokers are down")


def fix_hint(profile: Literal["local", "production"], setting: str) -> str:
    """What to do when a server is away: start the local stack, or check the setting."""
    if profile == "local":
        return "is the stack up? `make up`"
    return f"check {setting} and that the server is up"


class LineLimiter:
    """Lets the first of each kind of line through, then one per ``interval_s`` with the
    number held back in between; thread-safe, bounded."""

    def __init__(self, *, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}  # key -> (logged, held)

    def admit(self, key: tuple[str, ...]) -> str | None:
        """``None``: hold this line back; else the suffix to log it with ("" or a count)."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self._interval_s:
                self._seen[key] = (seen[0], seen[1] + 1)
                return None
            held = seen[1] if seen is not None else 0
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # forget the oldest kinds of line
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
        return f" ({held} more in the last {self._interval_s:.0f}s)" if held else ""

    def recent(self, prefix: str) -> bool:
        """Whether a line whose key starts with ``prefix`` was logged within the interval."""
        now = self._clock()
        with self._lock:
            return any(
                key[0] == prefix and now - seen[0] < self._interval_s
                for key, seen in self._seen.items()
            )


@dataclass(frozen=True, slots=True)
class _Line:
    key: tuple[str, ...]
    level: int
    text: str
    unreachable: bool


class KafkaLogReporter:
    """Receives librdkafka log lines (``logger``) and error events (``error_cb``).

    Args:
        profile: picks the fix named in "cannot reach" lines.
        interval_s: a repeat of the same line within this is counted, not logged.
        down_for_s: :meth:`reachable` is ``False`` until this long after the last
            "unreachable" event (librdkafka retries at least every 10 s while down).
        clock: monotonic seconds (injectable for tests).
        sink: where lines go (default: the ``runtime.kafka`` logger).
    """

    def __init__(
        self,
        *,
        profile: Literal["local", "production"] = "local",
        interval_s: float = 60.0,
        down_for_s: float = 25.0,
        clock: Callable[[], float] = time.monotonic,
        sink: logging.Logger | None = None,
    ) -> None:
        self.profile = profile
        self._down_for_s = down_for_s
        self._clock = clock
        self._sink = sink or logger
        self._limiter = LineLimiter(interval_s=interval_s, clock=clock)
        self._lock = threading.Lock()
        self._last_unreachable: float | None = None

    # --- the two librdkafka entry points ---------------------------------------------
    def log(self, level: int, fmt: str, *args: Any) -> None:
        """confluent-kafka's ``logger`` protocol: ``log(level, "%s [%s] %s", fac, name, msg)``."""
        if len(args) == 3:
            facility, message = str(args[0]), str(args[2])
        else:
            facility, message = "", fmt % args if args else fmt
        self._emit(self._translate(level, facility, message))

    def error(self, error: KafkaError) -> None:
        """confluent-kafka's ``error_cb``."""
        if error.fatal():
            self._emit(_Line(("fatal", error.str()), logging.ERROR, f"Kafka: {error.str()}", False))
            return
        level = logging.WARNING
        facility = "ERROR" if error.code() in UNREACHABLE_CODES else str(error.name())
        self._emit(self._translate(level, facility, error.str()))

    # --- state ------------------------------------------------------------------------
    def reachable(self) -> bool:
        """``False`` while the brokers were reported unreachable in the last ``down_for_s``."""
        with self._lock:
            last = self._last_unreachable
        return last is None or self._clock() - last > self._down_for_s

    # --- internals --------------------------------------------------------------------
    def _translate(self, level: int, facility: str, message: str) -> _Line:
        text = " ".join(message.split())
        match = _BROKER.match(text)
        broker = match.group("broker") if match else None
        what = _AFTER.sub("", match.group("what") if match else text)
        hint = fix_hint(self.profile, "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS")
        if broker is not None:
            failed = _CONNECT_FAILED.search(what) or _RESOLVE_FAILED.search(what)
            if failed is not None or what.lower().startswith("disconnected"):
                reason = failed.group("reason").rstrip(".") if failed else "disconnected"
                reason = reason[:1].lower() + reason[1:]
                if _RESOLVE_FAILED.search(what):
                    reason = f"cannot resolve host: {reason}"
                return _Line(
                    ("unreachable", broker),
                    logging.WARNING,
                    f"cannot reach Kafka at {broker} ({reason}); retrying — {hint}",
                    True,
                )
        if _BROKERS_DOWN.search(what):
            return _Line(
                ("all-down",),
                logging.WARNING,
                f"cannot reach any Kafka broker ({what}); retrying — {hint}",
                True,
            )
        return _Line((facility, what), level, f"Kafka: {what}", False)

    def _emit(self, line: _Line) -> None:
        if line.unreachable:
            with self._lock:
                self._last_unreachable = self._clock()
            if line.key == ("all-down",) and self._limiter.recent("unreachable"):
                return  # the per-broker line already said it
        suffix = self._limiter.admit(line.key)
        if suffix is not None:
            self._sink.log(line.level, "%s%s", line.text, suffix)


# "error connecting in 'audit-sink': connection failed: connection to server at
# "127.0.0.1", port 5432 failed: Connection refused\n\tIs the server running on …"
_POOL_CONNECT = re.compile(r"error connecting in '(?P<pool>[^']*)':\s*(?P<rest>.*)", re.DOTALL)
_POOL_SERVER = re.compile(
    r"server at \"(?P<host>[^\"]*)\"(?:\s*\([^)]*\))?, port (?P<port>\d+) failed:"
    r"\s*(?P<reason>[^\n]*)"
)


def postgres_failure(message: str) -> tuple[str, str] | None:
    """``(address, reason)`` from libpq's "connection to server at "h", port p failed:
    reason" (``None``: the message names no server), for a "cannot reach" line."""
    server = _POOL_SERVER.search(message)
    if server is None:
        return None
    reason = server.group("reason").strip().rstrip(".")
    return f"{server.group('host')}:{server.group('port')}", reason[:1].lower() + reason[1:]


class PoolLogFilter(logging.Filter):
    """Rewrites psycopg pool reconnection warnings into one rate-limited line each.

    A pool retries connecting on its own (with backoff) for as long as the database is
    away; the first failure says so ("cannot reach Postgres at 127.0.0.1:5432 (connection
    refused); retrying — is the stack up? `make up`"), repeats within ``interval_s`` are
    counted and summarised in the next line.
    """

    def __init__(
        self,
        *,
        profile: Literal["local", "production"] = "local",
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.profile = profile
        self._limiter = LineLimiter(interval_s=interval_s, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        match = _POOL_CONNECT.match(record.getMessage())
        if match is None:
            return True
        rest = match.group("rest")
        found = postgres_failure(rest)
        if found is not None:
            where, reason = found
        else:
            where, reason = "the server", rest.splitlines()[0] if rest else "unknown error"
            reason = reason.strip().rstrip(".")
            reason = reason[:1].lower() + reason[1:]
        suffix = self._limiter.admit(("pool", where, reason))
        if suffix is None:
            return False
        hint = fix_hint(self.profile, "SIDESTREAM_POSTGRES_DSN")
        record.msg = "cannot reach Postgres at %s (%s); pool %s retrying — %s%s"
        record.args = (where, reason, match.group("pool"), hint, suffix)
        return True


def install_pool_log_filter(profile: Literal["local", "production"]) -> None:
    """Put one :class:`PoolLogFilter` on the ``psycopg.pool`` logger (idempotent)."""
    pool_logger = logging.getLogger("psycopg.pool")
    if not any(isinstance(f, PoolLogFilter) for f in pool_logger.filters):
        pool_logger.addFilter(PoolLogFilter(profile=profile))


_reporters: dict[str, KafkaLogReporter] = {}
_reporters_lock = threading.Lock()


def reporter_for(profile: Literal["local", "production"]) -> KafkaLogReporter:
    """The process's reporter for ``profile`` (shared by every client, so one outage is
    reported once whichever client sees it)."""
    with _reporters_lock:
        found = _reporters.get(profile)
        if found is None:
            found = _reporters[profile] = KafkaLogReporter(profile=profile)
        return found
