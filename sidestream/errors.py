"""How every ``sidestream`` command fails: one line, the right exit code, no traceback.

:class:`App` (the ``typer.Typer`` every CLI module builds) runs its commands under
:func:`reported_errors`, which turns what goes wrong into one line on stderr:

========================================================  ====  ==============================
what happened                                              exit  line
========================================================  ====  ==============================
a bad setting, an unknown librdkafka property, a bad      2     ``error: <what> — <fix>``
option value (e.g. ``--port 99999``, ``--schema 'a b'``,
``--from-time yesterday``) or options that contradict
each other
Kafka, Postgres or Redis cannot be reached                 1     ``error: cannot reach <server>
                                                                 at <address> (<reason>) —
                                                                 <fix>``
Postgres answered but refused (auth, missing database,     1     ``error: Postgres at <address>:
missing table)                                                   <its message> — <fix>``
an operator mistake or refusal (``OpsError``,              1     ``error: <message>``
``ValueError``), any other ``SidestreamError`` (a worker
finding its table or topic missing)
Ctrl-C                                                     130   (nothing)
========================================================  ====  ==============================

Anything else is a bug and keeps its traceback. User input is never read as rich markup
(lines are built as :class:`rich.text.Text`). One-shot commands quieten the Kafka log
(they end with their own line); long-running ones (workers, the API) call
:func:`keep_kafka_log` so an outage is reported while they retry.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import psycopg
import redis.exceptions
import typer
from confluent_kafka import KafkaError, KafkaException
from psycopg_pool import PoolTimeout
from rich.markup import escape
from rich.text import Text

# typer (>= 0.29) vendors click: its usage errors are these, not the click package's.
from typer._click import exceptions as click_errors

from consumers.ops import OpsError
from runtime import RuntimeSetupError, Settings, SidestreamError
from runtime.clients import check_schema
from runtime.outages import KAFKA_LOGGER, UNREACHABLE_CODES, fix_hint
from sidestream.context import err_console, settings

__all__ = [
    "App",
    "CliError",
    "SchemaOption",
    "UsageError",
    "checked",
    "explain",
    "keep_kafka_log",
    "reported_errors",
    "safe",
    "schema_option",
    "schema_typed",
    "warn",
]

#: Exit code of a configuration or usage error (click's own for usage errors).
CONFIG_EXIT = 2
#: Exit code of a server that is away, or an operator error.
FAILURE_EXIT = 1

#: Options that contradict each other (or one missing that another needs): exit 2, one
#: line ending with where to read the usage.
UsageError = click_errors.UsageError


class CliError(Exception):
    """A failure the CLI reports as one line with an exit code."""

    def __init__(self, line: str, code: int = FAILURE_EXIT) -> None:
        super().__init__(line)
        self.line = line
        self.code = code


def safe(value: object) -> str:
    """``value`` as text that rich prints literally (for user input inside markup)."""
    return escape(str(value))


def _print_error(line: str) -> None:
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True
    )


def warn(line: str) -> None:
    """One yellow ``warning:`` line on stderr; ``line`` is printed literally."""
    err_console.print(
        Text.assemble(("warning:", "bold yellow"), " ", line), highlight=False, soft_wrap=True
    )


# --- recognising a server that is away -------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _probe(host: str, port: int, timeout_s: float = 1.0) -> str | None:
    """Why a TCP connection to ``host:port`` fails (``None``: it connects)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror:
        return "cannot resolve host"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)


def _unreachable(server: str, address: str, reason: str, config: Settings, setting: str) -> str:
    return f"cannot reach {server} at {address} ({reason}) — {fix_hint(config.profile, setting)}"


def _kafka_line(config: Settings) -> str:
    first = config.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    reason = _probe(host, int(port)) or "no broker answered in time"
    return _unreachable(
        "Kafka",
        config.kafka_bootstrap_servers,
        reason,
        config,
        "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS",
    )


def _postgres_address(config: Settings) -> tuple[str, int]:
    parts = urlsplit(config.postgres_dsn.get_secret_value())
    return parts.hostname or "localhost", parts.port or 5432


def _postgres_line(exc: BaseException, config: Settings) -> str:
    host, port = _postgres_address(config)
    address = f"{host}:{port}"
    reason = _probe(host, port)
    if reason is not None:
        return _unreachable("Postgres", address, reason, config, "SIDESTREAM_POSTGRES_DSN")
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), str(exc))
    # libpq prefixes "connection failed: connection to server at …, port … failed: ".
    detail = first.rpartition(" failed: ")[2] if " failed: " in first else first
    detail = " ".join(detail.removeprefix("FATAL:").split())
    if isinstance(exc, PoolTimeout):
        return _unreachable(
            "Postgres",
            address,
            "no connection within the timeout",
            config,
            "SIDESTREAM_POSTGRES_DSN",
        )
    return f"Postgres at {address}: {detail} — check SIDESTREAM_POSTGRES_DSN"


def _redis_line(config: Settings) -> str:
    parts = urlsplit(config.redis_url.get_secret_value())
    host, port = parts.hostname or "localhost", parts.port or 6379
    reason = _probe(host, port) or "no answer in time"
    return _unreachable("Redis", f"{host}:{port}", reason, config, "SIDESTREAM_REDIS_URL")


def _config() -> Settings | None:
    try:
        return settings()
    except RuntimeSetupError:
        return None


def explain(exc: BaseException) -> CliError | None:
    """The one line and exit code for ``exc``, or ``None`` when it is not a failure the CLI
    knows (a bug: it keeps its traceback)."""
    chain = list(_chain(exc))
    for error in chain:
        if isinstance(error, CliError):
            return error
        if isinstance(error, RuntimeSetupError):
            return CliError(str(error), CONFIG_EXIT)
        if isinstance(error, KafkaException) and error.args:
            kafka_error = error.args[0]
            if isinstance(kafka_error, KafkaError):
                if kafka_error.code() == KafkaError._INVALID_ARG:
                    return CliError(
                        f"invalid Kafka client configuration: {kafka_error.str()} — check "
                        "SIDESTREAM_KAFKA_EXTRA",
                        CONFIG_EXIT,
                    )
                config = _config()
                if kafka_error.code() in UNREACHABLE_CODES and config is not None:
                    return CliError(_kafka_line(config))
    for error in chain:
        config = _config()
        if config is None:
            break
        if isinstance(error, psycopg.errors.UndefinedTable):
            first = str(error).splitlines()[0]
            return CliError(f"Postgres: {first} — run `sidestream db migrate`")
        if isinstance(error, psycopg.OperationalError | PoolTimeout):
            return CliError(_postgres_line(error, config))
        if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return CliError(_redis_line(config))
    if isinstance(exc, OpsError):
        # The operator tools wrap broker failures (BrokerError, ReadTimeoutError): when
        # the broker is simply away, say that instead.
        config = _config()
        if config is not None:
            first = config.kafka_bootstrap_servers.split(",")[0].strip()
            host, _, port = first.rpartition(":")
            if _probe(host, int(port)) is not None:
                return CliError(_kafka_line(config))
        return CliError(str(exc))
    if isinstance(exc, ValueError | SidestreamError):
        # SidestreamError: raised on purpose, its message is one readable line with the
        # fix (a missing table or topic a worker found at start, ...).
        return CliError(" ".join(str(exc).split()))
    return None


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Failures the CLI knows become one line and ``SystemExit``; bugs propagate."""
    try:
        yield
    except SystemExit:
        raise
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except typer.Abort:
        _print_error("aborted")
        raise SystemExit(FAILURE_EXIT) from None
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()
        raise SystemExit(CONFIG_EXIT) from None
    except click_errors.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _print_error(" ".join(exc.format_message().split()) + where)
        raise SystemExit(exc.exit_code) from None
    except click_errors.ClickException as exc:
        _print_error(" ".join(exc.format_message().split()))
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        failure = explain(exc)
        if failure is None:
            raise
        _print_error(failure.line)
        raise SystemExit(failure.code) from None


def _quiet_kafka_log() -> None:
    # A one-shot command ends with its own line; librdkafka's retries in the meantime
    # would only repeat it. Errors (fatal ones) still show.
    logging.getLogger(KAFKA_LOGGER).setLevel(logging.ERROR)


def keep_kafka_log() -> None:
    """For long-running commands: report Kafka outages while retrying (one line each,
    rate-limited by :mod:`runtime.outages`)."""
    logging.getLogger(KAFKA_LOGGER).setLevel(logging.NOTSET)


class App(typer.Typer):
    """``typer.Typer`` whose commands fail as :func:`reported_errors` says.

    Calling the app (``app()``, as ``sidestream`` and ``python -m sidestream`` do) runs
    the command in click's non-standalone mode, so usage errors come back as exceptions
    and are reported in one line too.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        _quiet_kafka_log()
        with reported_errors():
            result = super().__call__(*args, **kwargs)
            sys.stdout.flush()
            raise SystemExit(result if isinstance(result, int) else 0)


def checked(parse: Callable[[str], object]) -> Callable[[Any], Any]:
    """typer callback: the option's value (or each value of a repeatable option), unchanged,
    when ``parse`` accepts it; else a usage error naming the option with ``parse``'s
    ``ValueError`` message — exit 2, before any server is contacted.

    Use as ``typer.Option(callback=checked(parse_time_now))``: the command still parses
    the text itself (where it needs the value), with the same function.
    """

    def check(value: Any) -> Any:
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is None:
                continue
            try:
                parse(item)
            except ValueError as exc:
                raise typer.BadParameter(" ".join(str(exc).split())) from None
        return value

    return check


def schema_option(value: str | None) -> str | None:
    """typer callback: ``--schema`` / ``--target-schema`` follow the setting's pattern."""
    if value is None:
        return None
    try:
        return check_schema(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def schema_typed(help_text: str, *names: str) -> Any:
    """A validated schema option with its own help (and names, e.g. ``--target-schema``):
    use as ``Annotated[str | None, schema_typed("…")]``."""
    return typer.Option(*names, help=help_text, callback=schema_option)


#: ``--schema`` of every command: a plain identifier, like SIDESTREAM_POSTGRES_SCHEMA.
SchemaOption = Annotated[
    str | None, schema_typed("Postgres schema (default: SIDESTREAM_POSTGRES_SCHEMA).")
]
