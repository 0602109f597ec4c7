"""The webhook SSRF guard: URL and address rules (pure), and the pinned transport against
a real local HTTP receiver with an injected resolver."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx
import pytest

from consumers.delivery import (
    PinnedTransport,
    TargetGuard,
    TargetRefusedError,
    redact_url,
    refusal_of,
)
from tests.consumers.delivery.support import WebhookReceiver

PUBLIC = "93.184.215.14"  # a public unicast address (never connected to here)


def resolver_of(answers: dict[str, Sequence[Sequence[str]]]) -> Callable[..., Any]:
    """A resolver answering from a script: one list of addresses per call, per name,
    the last repeated (so ``[[PUBLIC], ["127.0.0.1"]]`` rebinds on the second call)."""
    calls: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[str]:
        script = answers.get(host)
        if script is None:
            raise OSError(f"no such name {host}")
        n = calls.get(host, 0)
        calls[host] = n + 1
        return list(script[min(n, len(script) - 1)])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1./hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::127.0.0.1]/hook",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[ff02::1]/",
    "http://[::]/",
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://loopback.test/",
    "http://localhost/",
    "http://api.payments-partner.com/hooks",
    "http://mixed.example.com/",
    "http://metadata.example.com/",
    "http://v6-mapped.example.com/",
    "ftp://public.example.com/",
    "http://user:pw@public.example.com/",
    "http:///nohost",
    "http://public.example.com\\@127.0.0.1/",
    "http://public.example.com /",
    "http://[::1/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_registration_refuses(url: str) -> None:
    guard = TargetGuard(resolver=resolver_of({**_names(), "localhost": [["127.0.0.1"]]}))
    with pytest.raises(TargetRefusedError) as refused:
        asyncio.run(guard.vet(url))
    assert "refused" in str(refused.value)


def _names() -> dict[str, Sequence[Sequence[str]]]:
    return {
        "loopback.test": [["127.0.0.1"]],
        "public.example.com": [[PUBLIC]],
        "api.payments-partner.com": [["10.20.30.40"]],
        "mixed.example.com": [[PUBLIC, "192.168.1.10"]],
        "metadata.example.com": [["169.254.169.254"]],
        "v6-mapped.example.com": [["::ffff:127.0.0.1"]],
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://public.example.com/hooks?x=1",
        f"http://{PUBLIC}:8443/",
        "https://PUBLIC.example.com./",
    ],
)
def test_registration_accepts_public_targets(url: str) -> None:
    target = asyncio.run(TargetGuard(resolver=resolver_of(_names())).vet(url))
    assert target.host in ("public.example.com", PUBLIC)


def test_https_is_required_when_asked() -> None:
    guard = TargetGuard(require_https=True, resolver=resolver_of(_names()))
    with pytest.raises(TargetRefusedError, match="scheme must be https"):
        guard.parse("http://public.example.com/")
    assert guard.parse("https://public.example.com/").port == 443


def test_odd_ipv4_spellings_are_refused_even_with_private_targets_allowed() -> None:
    guard = TargetGuard(allow_private=True)
    for url in ("http://2130706433/", "http://0x7f.1/", "http://017700000001/"):
        with pytest.raises(TargetRefusedError, match="dotted decimal"):
            guard.parse(url)
    assert guard.parse("http://127.0.0.1:8080/").address == ipaddress.ip_address("127.0.0.1")


def test_the_refusal_names_the_class_not_the_address() -> None:
    guard = TargetGuard(resolver=resolver_of(_names()))
    with pytest.raises(TargetRefusedError) as refused:
        asyncio.run(guard.vet("http://api.payments-partner.com/x?token=s3cret"))
    message = str(refused.value)
    assert "private" in message
    assert "10.20.30.40" not in message
    assert "s3cret" not in message


def test_refusal_classes() -> None:
    cases = {
        "127.0.0.1": "loopback",
        "169.254.169.254": "link-local",
        "100.64.0.1": "CGNAT",
        "10.0.0.1": "private",
        "::ffff:10.0.0.1": "IPv6 form of private",
        "fc00::1": "unique-local",
        PUBLIC: None,
        "2606:4700:4700::1111": None,
    }
    for text, expected in cases.items():
        reason = refusal_of(ipaddress.ip_address(text))
        assert (reason is None) == (expected is None), text
        if expected is not None:
            assert expected in (reason or ""), (text, reason)


def test_redact_url_drops_query_fragment_and_user_info() -> None:
    assert (
        redact_url("https://u:p@h.example:8443/a/b?token=x#frag") == "https://h.example:8443/a/b?…"
    )
    assert redact_url("http://[::1]/x") == "http://[::1]/x"


def test_a_resolution_failure_is_transient() -> None:
    guard = TargetGuard(resolver=resolver_of({}))
    with pytest.raises(ConnectionError, match="could not resolve"):
        asyncio.run(guard.vet("https://unknown.example.com/"))


# --- the pinned transport ---------------------------------------------------------------
class _Recording(httpcore.AsyncNetworkBackend):
    """The network below the pinned backend: records where it was asked to connect and
    refuses (nothing listens at the public test address)."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        raise httpcore.ConnectError("refused (test network)")


async def _post(transport: httpx.AsyncBaseTransport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
        return await client.post(url, content=b"{}")


def test_the_connection_goes_to_the_vetted_address_not_a_re_resolved_name() -> None:
    resolve = resolver_of({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
    network = _Recording()
    transport = PinnedTransport(TargetGuard(resolver=resolve), inner_backend=network)
    with pytest.raises(httpx.ConnectError):
        asyncio.run(_post(transport, "http://rebind.example.com:8080/hook"))
    # Resolved once, checked, and the socket opened to that very address: there is no
    # second lookup a rebinding DNS server could answer differently.
    assert network.connects == [(PUBLIC, 8080)]
    assert resolve.calls == {"rebind.example.com": 1}  # type: ignore[attr-defined]


def test_a_name_that_rebinds_to_loopback_before_connect_is_refused(
    receiver: Callable[..., WebhookReceiver],
) -> None:
    server = receiver()
    resolve = resolver_of({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
    guard = TargetGuard(resolver=resolve)
    url = f"http://rebind.example.com:{server.port}/hook"
    asyncio.run(guard.vet(url))  # registration: the name was public then
    with pytest.raises(TargetRefusedError, match="loopback"):
        asyncio.run(_post(PinnedTransport(guard), url))
    assert server.snapshot() == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::ffff:127.0.0.1]", "loopback.test", "api.payments-partner.com"],
)
def test_the_transport_refuses_private_targets_at_connect(
    receiver: Callable[..., WebhookReceiver], host: str
) -> None:
    server = receiver()
    guard = TargetGuard(resolver=resolver_of(_names()))
    with pytest.raises(TargetRefusedError):
        asyncio.run(_post(PinnedTransport(guard), f"http://{host}:{server.port}/hook"))
    assert server.snapshot() == []


def test_with_private_targets_allowed_a_local_receiver_gets_the_original_host_name(
    receiver: Callable[..., WebhookReceiver],
) -> None:
    server = receiver()
    guard = TargetGuard(
        allow_private=True, resolver=resolver_of({"hooks.example.test": [["127.0.0.1"]]})
    )
    url = f"http://hooks.example.test:{server.port}/hook"
    response = asyncio.run(_post(PinnedTransport(guard), url))
    assert response.status_code == 200
    [request] = server.snapshot()
    # Connected to the pinned 127.0.0.1, but Host (and SNI, for https) is the name.
    assert request.headers["host"] == f"hooks.example.test:{server.port}"


def test_redirects_are_not_followed(receiver: Callable[..., WebhookReceiver]) -> None:
    from tests.consumers.delivery.support import Reply

    server = receiver(lambda _req, _n: Reply(302, {"Location": "http://169.254.169.254/"}))
    guard = TargetGuard(allow_private=True)
    response = asyncio.run(_post(PinnedTransport(guard), server.url("/redirect")))
    assert response.status_code == 302
    assert len(server.snapshot()) == 1


# --- TLS: SNI and certificate checks use the URL's name, the socket the pinned address ---
def _self_signed(name: str, directory: Any) -> tuple[str, str]:
    """A certificate for ``name`` (and its key) as PEM files in ``directory``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_through_the_pinned_address_keeps_sni_and_verification_on_the_name(
    tmp_path: Any,
) -> None:
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    name = "hooks.example.test"
    cert, key = _self_signed(name, tmp_path)
    seen: dict[str, Any] = {"sni": [], "host": []}
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_context.sni_callback = lambda _sock, sni, _ctx: seen["sni"].append(sni)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen["host"].append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    trust = ssl.create_default_context(cafile=cert)
    guard = TargetGuard(
        allow_private=True,
        resolver=resolver_of({name: [["127.0.0.1"]], "other.example.test": [["127.0.0.1"]]}),
    )
    try:
        ok = asyncio.run(
            _post(PinnedTransport(guard, ssl_context=trust), f"https://{name}:{port}/hook")
        )
        assert ok.status_code == 204
        assert seen["sni"] == [name]  # SNI is the name, though the socket went to 127.0.0.1
        assert seen["host"] == [f"{name}:{port}"]
        # Same address, a name the certificate does not cover: verification fails, so it
        # is checked against the URL's name and not against the pinned address.
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            asyncio.run(
                _post(
                    PinnedTransport(guard, ssl_context=trust),
                    f"https://other.example.test:{port}/hook",
                )
            )
    finally:
        server.shutdown()
        server.server_close()
