"""Where the demo's notifications go: a local mail catcher and a local webhook receiver.

No mail or webhook leaves the machine; the receiver counts only requests whose
``Sidestream-Signature`` verifies with the endpoint's secret.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from consumers.delivery import SignatureError, verify


class PortZeroController(Controller):
    """aiosmtpd's threaded SMTP server on ``port=0`` (any free port): :attr:`port` is the
    one it bound. (aiosmtpd itself would connect to port 0 to check the server is up.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # aiosmtpd logs every SMTP command and connection at INFO (~1,500 lines per demo,
        # drowning its summary); warnings and errors still show.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        super().__init__(*args, **kwargs)

    def _trigger_server(self) -> None:
        server = self.server  # bound: aiosmtpd calls _trigger_server after the bind
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


class _HookCatcher:
    """A local webhook receiver that counts requests whose ``Sidestream-Signature``
    verifies with the secret of the tenant's endpoint (``/hooks/<tenant>``)."""

    def __init__(self) -> None:
        catcher = self
        self.secrets: dict[str, str] = {}
        self.verified = 0
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                secret = catcher.secrets.get(self.path.rsplit("/", 1)[-1], "")
                try:
                    verify(secret, self.headers.get("Sidestream-Signature", ""), body)
                except SignatureError:
                    self.send_response(401)
                else:
                    with lock:
                        catcher.verified += 1
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, tenant: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{tenant}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _MailCatcher:
    """An SMTP handler that counts what it receives (aiosmtpd calls handle_DATA)."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.received += 1
        return "250 OK"
