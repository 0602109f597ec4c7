"""The fault-injecting TCP proxy, against a tiny echo server: it forwards, delays, cuts
connections (at random with a seed, within a bound, or all at once) and says so."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from devtools.chaos.proxy import FaultProxy, ProxyFaults
from devtools.localstack.kafka import KafkaServer
from runtime.ports import refused_port


class EchoServer:
    """Echoes every byte back, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def _client(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def _round_trip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` and read as many bytes back; b'' if the connection ended first."""
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _is_cut(sock: socket.socket, payload: bytes = b"ping") -> bool:
    """True when the connection was cut: a reset, or the end of the stream."""
    try:
        return _round_trip(sock, payload) != payload
    except (ConnectionResetError, BrokenPipeError):
        return True


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until true or ``timeout`` seconds pass (bounded, no timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def test_forwards_both_ways_and_counts(echo: EchoServer) -> None:
    with FaultProxy(target_port=echo.port) as proxy, _client(proxy) as sock:
        payload = bytes(range(256)) * 1000
        assert _round_trip(sock, payload) == payload
        assert _round_trip(sock, b"again") == b"again"
        expected = 2 * (len(payload) + 5)
        # The proxy counts a chunk after writing it: the client may read the last echo
        # before the count is made, so wait for it (bounded) instead of reading at once.
        assert _eventually(lambda: proxy.stats.bytes_forwarded >= expected)
        stats = proxy.stats
    assert stats.connections == 1
    assert stats.drops == 0
    assert stats.bytes_forwarded == expected


def test_adds_latency_to_every_chunk(echo: EchoServer) -> None:
    faults = ProxyFaults(latency_s=0.05)
    with FaultProxy(target_port=echo.port, faults=faults) as proxy, _client(proxy) as sock:
        started = time.monotonic()
        assert _round_trip(sock, b"x") == b"x"
        elapsed = time.monotonic() - started
        delayed = proxy.stats.delayed_chunks
    assert delayed == 2  # one chunk each way
    # A lower bound only: the proxy sleeps at least the latency on each way.
    assert elapsed >= 0.09


def test_cuts_connections_at_random_up_to_the_bound(echo: EchoServer) -> None:
    faults = ProxyFaults(drop_rate=1.0, max_drops=2)
    with FaultProxy(target_port=echo.port, faults=faults) as proxy:
        outcomes = []
        for _ in range(4):
            with _client(proxy) as sock:
                outcomes.append(_is_cut(sock))
        stats = proxy.stats
    assert outcomes == [True, True, False, False]  # the bound stops the cuts
    assert stats.drops == 2
    assert stats.connections == 4


def test_cut_all_resets_every_open_connection(echo: EchoServer) -> None:
    with FaultProxy(target_port=echo.port) as proxy:
        clients = [_client(proxy) for _ in range(3)]
        try:
            for sock in clients:
                assert _round_trip(sock, b"hello") == b"hello"
            assert proxy.cut_all() == 3
            assert all(_is_cut(sock) for sock in clients)
            assert proxy.stats.drops == 3
            with _client(proxy) as fresh:  # the proxy itself goes on
                assert _round_trip(fresh, b"after") == b"after"
        finally:
            for sock in clients:
                sock.close()


def _first_cut(echo: EchoServer, seed: int) -> int | None:
    """Messages sent one at a time (one chunk each): the index of the one that was cut."""
    faults = ProxyFaults(drop_rate=0.2, max_drops=1)
    with (
        FaultProxy(target_port=echo.port, faults=faults, seed=seed) as proxy,
        _client(proxy) as sock,
    ):
        for index in range(60):
            if _is_cut(sock, f"message {index}".encode()):
                return index
    return None


def test_the_seed_decides_where_connections_are_cut(echo: EchoServer) -> None:
    first = _first_cut(echo, seed=11)
    assert first is not None
    assert _first_cut(echo, seed=11) == first
    others = {_first_cut(echo, seed=seed) for seed in (12, 13, 14, 15)}
    assert others - {first}, "other seeds cut elsewhere"


def test_set_faults_none_makes_it_transparent_again(echo: EchoServer) -> None:
    with FaultProxy(
        target_port=echo.port, faults=ProxyFaults(drop_rate=1.0, max_drops=10)
    ) as proxy:
        with _client(proxy) as sock:
            assert _is_cut(sock)
        proxy.set_faults(None)
        with _client(proxy) as sock:
            assert _round_trip(sock, b"fine") == b"fine"
        assert proxy.stats.drops == 1


def test_an_unreachable_upstream_closes_the_client_connection() -> None:
    with (
        refused_port() as nobody,
        FaultProxy(target_port=nobody, connect_timeout_s=2) as proxy,
        _client(proxy) as sock,
    ):
        assert _is_cut(sock)
        assert _eventually(lambda: proxy.stats.refused == 1)


def test_stop_resets_open_connections_and_frees_the_port(echo: EchoServer) -> None:
    proxy = FaultProxy(target_port=echo.port).start()
    sock = _client(proxy)
    try:
        assert _round_trip(sock, b"hi") == b"hi"
        proxy.stop()
        assert _is_cut(sock)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    finally:
        sock.close()
        proxy.stop()


@pytest.mark.parametrize(
    "options",
    [
        {"latency_s": -1},
        {"jitter_s": -0.1},
        {"latency_s": 6, "jitter_s": 5},
        {"drop_rate": 1.5},
        {"max_drops": -1},
    ],
)
def test_rejects_impossible_faults(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|would"):
        ProxyFaults(**options)  # type: ignore[arg-type]


def test_a_broker_health_check_through_a_cutting_proxy_prints_no_librdkafka_lines(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # What the proxy-faults scenario does to every Kafka client: connections accepted,
    # then closed. librdkafka logs each (FAIL "Disconnected") straight to fd 2 unless the
    # client has the log bridge.
    with refused_port() as dead, FaultProxy(target_port=dead) as proxy:
        broker = KafkaServer(stack_dir=tmp_path, port=proxy.port)
        with pytest.raises(KafkaException):
            broker.is_healthy()
        assert proxy.stats.connections >= 1  # librdkafka did connect through it
    err = capfd.readouterr().err
    assert "|FAIL|" not in err
    assert "%6|" not in err
