"""JWT bearer tokens from an identity provider, next to API keys: a JWKS file or URL,
issuer and audience checked, tenant and scopes from claims."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from runtime import Settings
from schemas import AuditEvent
from services.api import ApiConfig
from tests.services.api.conftest import running_api
from tests.services.api.test_projects import decoded_outbox

ISSUER = "https://idp.example.test/"
AUDIENCE = "sidestream-api"
BASE = "/v1/tenants/acme/projects"


class Idp:
    """A signing key and its JWKS, as an identity provider holds them."""

    def __init__(self, kid: str = "k1") -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwks = {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-7",
            "tenant": "acme",
            "scope": "read write",
            "iat": now,
            "exp": now + 300,
            **overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


def _settings(base: Settings, jwks: str) -> Settings:
    return base.with_overrides(api_jwt_jwks=jwks, api_jwt_issuer=ISSUER, api_jwt_audience=AUDIENCE)


def test_jwt_from_a_jwks_file(
    stack_settings: Settings, api_config: ApiConfig, idp: Idp, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(idp.jwks))
    settings = _settings(stack_settings, str(jwks))
    stranger = Idp("k1")  # same kid, another key: a forged signature

    async def body() -> None:
        async with running_api(settings, api_config) as api:

            async def call(token: str, method: str = "GET", path: str = BASE) -> Any:
                return await api.client.request(
                    method,
                    path,
                    json={"name": f"by jwt {time.monotonic_ns()}"} if method == "POST" else None,
                    headers={"Authorization": f"Bearer {token}"},
                )

            assert (await call(idp.token())).status_code == 200
            created = await call(idp.token(), "POST")
            assert created.status_code == 201
            # API keys keep working beside JWTs.
            assert (await api.client.get(BASE)).status_code == 200

            assert (await call(idp.token(scope="read"), "POST")).status_code == 403
            assert (await call(idp.token(tenant="globex"))).status_code == 403
            for bad in (
                idp.token(aud="another-api"),
                idp.token(iss="https://evil.example/"),
                idp.token(exp=int(time.time()) - 3600),
                idp.token(tenant=None),
                idp.token(tenant="bad tenant!"),
                idp.token(sub=None),
                stranger.token(),
                jwt.encode({"sub": "x"}, "a-shared-secret-of-at-least-32-bytes", algorithm="HS256"),
            ):
                response = await call(bad)
                assert response.status_code == 401, response.text
                assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    asyncio.run(body())


@pytest.fixture
def jwks_url(idp: Idp) -> Iterator[str]:
    """The JWKS served over HTTP on a free local port (http:// is for tests only)."""
    body = json.dumps(idp.jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_jwt_from_a_jwks_url_and_the_audit_actor(
    stack_settings: Settings,
    api_config: ApiConfig,
    idp: Idp,
    jwks_url: str,
    api_schema: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    settings = _settings(stack_settings, jwks_url)

    async def body() -> None:
        async with running_api(settings, api_config) as api:
            response = await api.client.post(
                BASE,
                json={"name": "from the idp"},
                headers={"Authorization": f"Bearer {idp.token(sub='alice')}"},
            )
            assert response.status_code == 201, response.text

    asyncio.run(body())
    [audit] = [e for e in decoded_outbox(pg_conn, api_schema) if isinstance(e, AuditEvent)]
    assert audit.actor_id == "jwt:alice"
    assert audit.details["principal"] == "jwt:alice"


def test_symmetric_algorithms_are_refused_in_settings(stack_settings: Settings) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        stack_settings.with_overrides(api_jwt_algorithms="RS256,HS256")
    with pytest.raises(ValueError, match="ISSUER"):
        stack_settings.with_overrides(api_jwt_jwks="/nonexistent.json")
