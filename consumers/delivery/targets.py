"""Webhook targets: which URLs may be called, and a transport that only connects to
addresses it has vetted (the SSRF guard).

A webhook URL is checked twice: when an endpoint is registered (:meth:`TargetGuard.vet`,
so a tenant hears at once that ``http://169.254.169.254/`` will never work) and again at
every new connection of the notify worker (:class:`PinnedTransport`), because what a name
resolves to can change after registration (DNS rebinding).

Rules (:meth:`TargetGuard.parse` and :func:`refusal_of`):

* scheme ``https`` (``http`` too unless ``require_https``); no user info in the URL;
* the host is a name or a canonical address: IPv4 spelled in any other way than dotted
  decimal (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) is refused as ambiguous — parsers
  disagree on what it means — and one trailing dot is dropped (``localhost.``);
* every address the name resolves to must be public: loopback, private (10/8, 172.16/12,
  192.168/16), shared/CGNAT (100.64/10), link-local (169.254/16 with the cloud metadata
  address, fe80::/10), multicast, reserved, unspecified, IPv6 unique-local (fc00::/7) and
  anything else Python's ``ipaddress`` does not call global are refused, also when
  embedded in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``,
  6to4, NAT64, Teredo). One refused address refuses the name: a resolver that mixes
  public and private answers cannot steer us to the private one.

Pinning: :class:`PinnedTransport` is an httpx transport over an
``httpcore.AsyncConnectionPool`` with a custom *network backend*
(:class:`PinnedBackend`). httpcore calls ``connect_tcp(host, port)`` with the URL's host
name for every new connection; the backend resolves that name itself, vets every answer,
and opens the socket to a vetted address — the address that was checked is the address
that is connected to, so a rebinding between check and connect has nothing to switch.
httpcore then starts TLS on that stream with ``server_hostname`` = the URL's host, so SNI
and certificate verification use the original name, and the ``Host`` header comes from
the URL as usual; connections are pooled per name, never shared between two names that
happen to share an address. Network backends are public httpcore API
(https://www.encode.io/httpcore/network-backends/, encode/httpcore#699, whose stated uses
include custom DNS handling); httpx 0.28's ``AsyncHTTPTransport`` cannot take one
(encode/httpx#3749 proposes it), so :class:`PinnedTransport` is the small mapping
between the two that ``httpx.AsyncHTTPTransport`` itself does. We preferred this to
rewriting the URL to the IP with the ``sni_hostname`` request extension: that pools
connections by IP, so a TLS connection verified for one name could be reused for
another name on the same address.

Redirects are never followed (the client is built with ``follow_redirects=False``), no
proxy is taken from the environment, and Unix sockets are refused.

``allow_private`` (``SIDESTREAM_DELIVERY_ALLOW_PRIVATE_TARGETS``) turns the address
checks off — for local development and tests only; the scheme and spelling rules stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from consumers.delivery.errors import DeliveryError

__all__ = [
    "IPAddress",
    "PinnedBackend",
    "PinnedTransport",
    "Resolver",
    "Target",
    "TargetGuard",
    "TargetRefusedError",
    "redact_url",
    "refusal_of",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port)`` → the addresses (as text) the host resolves to."""

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_ULA = ipaddress.IPv6Network("fc00::/7")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
# The last label decides whether a host is an IPv4 address (as in the WHATWG URL parser):
# digits, or 0x and hex digits.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


class TargetRefusedError(DeliveryError):
    """A webhook URL, or an address its host resolves to, is not an allowed target.

    Attributes:
        url: the URL, query string redacted.
        reason: why, in words fit for the tenant (the address class, never the address).
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"webhook target {redact_url(url)} refused: {reason}")
        self.url = redact_url(url)
        self.reason = reason


def redact_url(url: str) -> str:
    """``url`` without user info, query string or fragment, for logs and errors (tokens
    often travel in query strings)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def refusal_of(address: IPAddress) -> str | None:
    """Why ``address`` may not be called (its class, e.g. ``"loopback"``), or ``None``
    when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "link-local (scoped) address"
        if address.is_unspecified:
            return "unspecified address"
        if address.is_loopback:
            return "loopback address"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal_of(embedded)
            # An address that embeds IPv4 is only as good as the IPv4 address.
            return f"IPv6 form of {inner}" if inner else None
        if address in _ULA:
            return "unique-local (private) address"
    return _refusal_of_class(address)


def _refusal_of_class(address: IPAddress) -> str | None:
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "unspecified address"),
        (address.is_loopback, "loopback address"),
        (address.is_link_local, "link-local address (incl. cloud metadata)"),
        (address.is_multicast, "multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "shared (CGNAT)"),
        (address.is_private, "private address"),
        (address.is_reserved, "reserved address"),
        (not address.is_global, "non-public address"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0:  # IPv4-compatible ::a.b.c.d (deprecated, still routed by some)
        return ipaddress.IPv4Address(value)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), TCP addresses only."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed, well-formed webhook URL (not yet resolved)."""

    url: str
    scheme: str
    host: str
    """Lower case, no trailing dot, IDNA (ASCII) for names; canonical text for addresses."""
    port: int
    address: IPAddress | None
    """The address when the host is one (then no resolution happens)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetGuard:
    """The webhook target policy; one instance serves registration and delivery."""

    allow_private: bool = False
    """Skip the address checks (local development and tests only)."""
    require_https: bool = False
    resolver: Resolver = field(default=system_resolver, compare=False)
    resolve_timeout_s: float = 5.0

    def parse(self, url: str) -> Target:
        """Check scheme, user info and host spelling (no network).

        Raises:
            TargetRefusedError: with the reason.
        """
        if any(ord(c) < 0x21 or c in "\x7f\\" for c in url):
            # Parsers disagree on spaces, control characters and backslashes in URLs.
            raise TargetRefusedError(url, "spaces, control characters and \\ are not allowed")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefusedError(url, f"not a valid URL ({exc})") from None
        allowed = ("https",) if self.require_https else ("https", "http")
        if parts.scheme not in allowed:
            raise TargetRefusedError(url, f"the scheme must be {' or '.join(allowed)}")
        if "@" in parts.netloc:
            raise TargetRefusedError(url, "user info (user:password@) is not allowed")
        raw = parts.hostname or ""
        host = raw[:-1] if raw.endswith(".") else raw
        if not host or host.endswith(".") or "%" in host:
            raise TargetRefusedError(url, "no valid host")
        address = _literal(url, host)
        if address is None:
            try:
                host = host.encode("idna").decode("ascii").lower()
            except UnicodeError:
                raise TargetRefusedError(url, "the host name is not valid") from None
        default_port = 443 if parts.scheme == "https" else 80
        return Target(
            url=url,
            scheme=parts.scheme,
            host=str(address) if address is not None else host,
            port=port if port is not None else default_port,
            address=address,
        )

    async def resolve(self, host: str, port: int, *, url: str | None = None) -> list[IPAddress]:
        """Resolve ``host`` and vet every answer; the vetted addresses, in resolver order.

        Raises:
            TargetRefusedError: an answer is not allowed, or there is none.
            ConnectionError: the name could not be resolved (transient).
        """
        shown = url or host
        literal = _literal(shown, host.removesuffix("."))
        if literal is not None:
            answers: Sequence[str] = [str(literal)]
        else:
            try:
                async with asyncio.timeout(self.resolve_timeout_s):
                    answers = await self.resolver(host, port)
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"could not resolve {host} ({type(exc).__name__})") from exc
            except (UnicodeError, ValueError):  # a name the resolver cannot even look up
                raise TargetRefusedError(shown, "the host name is not valid") from None
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(answer)
            except ValueError:
                raise TargetRefusedError(shown, "the host resolved to something odd") from None
            reason = None if self.allow_private else refusal_of(address)
            if reason is not None:
                subject = (
                    "not" if literal is not None else "the host resolves to something that is not"
                )
                raise TargetRefusedError(shown, f"{subject} a public address ({reason})")
            addresses.append(address)
        if not addresses:
            raise TargetRefusedError(shown, "the host has no address")
        return addresses

    async def vet(self, url: str) -> Target:
        """:meth:`parse` then :meth:`resolve`: the registration-time check.

        Raises:
            TargetRefusedError: not an allowed target.
            ConnectionError: the host could not be resolved now.
        """
        target = self.parse(url)
        await self.resolve(target.host, target.port, url=url)
        return target


def _literal(url: str, host: str) -> IPAddress | None:
    """The address ``host`` spells, ``None`` for a name; odd IPv4 spellings refused."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetRefusedError(url, "not a valid IPv6 address") from None
    if not _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        return None
    try:
        # inet_aton accepts exactly the legacy forms (decimal, octal, hex, 1-4 parts)
        # that some resolvers and HTTP stacks still honour.
        address = ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        raise TargetRefusedError(
            url, "the host looks like an IPv4 address but is not one"
        ) from None
    if str(address) != host:
        raise TargetRefusedError(url, "IPv4 addresses must be written in dotted decimal (a.b.c.d)")
    return address


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses ``guard`` allows,
    resolving each new connection's host itself (see the module docstring)."""

    def __init__(
        self, guard: TargetGuard, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._guard = guard
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._guard.resolve(host, port)
        except ConnectionError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve() returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefusedError(f"unix:{path}", "Unix sockets are never webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore → httpx exceptions, most specific first (what httpx's own transport does).
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection goes through :class:`PinnedBackend`."""

    def __init__(
        self,
        guard: TargetGuard,
        *,
        max_connections: int = 64,
        max_keepalive_connections: int = 32,
        keepalive_expiry_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        inner_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry_s,
            network_backend=PinnedBackend(guard, inner_backend),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
