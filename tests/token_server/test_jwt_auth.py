"""Production mode with an identity provider's JWTs: HS256 by a shared secret, and RS256/ES256 by the provider's
JWKS, served here by a loopback HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.token_server.helpers import JWT_SECRET, claims, client_for, prod_settings
from token_server.auth import ConfigError, Security

ISSUER, AUDIENCE = "https://idp.example.test/", "voice-agent"


class JWKSServer:
    """A loopback identity provider's /.well-known/jwks.json, whose keys a test can change or take away."""

    def __init__(self) -> None:
        self.jwks: dict = {"keys": []}
        self.fetches = 0
        self.down = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.fetches += 1
                if server.down or self.path != "/.well-known/jwks.json":
                    self.send_response(503 if server.down else 404)
                    self.end_headers()
                    return
                body = json.dumps(server.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def add(self, kid: str, public_key, alg: str) -> None:
        algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(public_key))
        self.jwks["keys"].append({**jwk, "kid": kid, "alg": alg, "use": "sig"})


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def idp(rsa_key, ec_key) -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.add("rsa-1", rsa_key.public_key(), "RS256")
    server.add("ec-1", ec_key.public_key(), "ES256")
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def client(idp):
    settings = prod_settings(
        token_auth="jwt",
        token_jwt_secret="",  # only the provider's keys
        token_jwks_url=idp.url,
        token_jwt_issuer=ISSUER,
        token_jwt_audience=AUDIENCE,
    )
    return client_for(settings)


def sign(key, alg: str, kid: str | None, **overrides) -> str:
    payload = {"sub": "ana-42", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "name": "Ana"}
    payload = {k: v for k, v in (payload | overrides).items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "rsa-1"), ("ES256", "ec-1")])
def test_a_providers_token_gives_its_subject_as_identity(client, rsa_key, ec_key, alg, kid):
    key = rsa_key if alg == "RS256" else ec_key
    response = client.post("/api/token", json={"participant_name": "Ana M."}, headers=bearer(sign(key, alg, kid)))
    assert response.status_code == 201, response.text
    c = claims(response.json()["participant_token"])
    assert (c.identity, c.name) == ("user:ana-42", "Ana M.")
    assert c.video.room.startswith("call-")
    token = client.post("/api/token", headers=bearer(sign(key, alg, kid))).json()["participant_token"]
    assert claims(token).name == "Ana"  # the provider's name claim when the request gives none


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "another-app"}, "audience"),
        ({"aud": None}, "aud"),
        ({"iss": "https://evil.example.test/"}, "issuer"),
        ({"iss": None}, "iss"),
        ({"exp": lambda: int(time.time()) - 120}, "expired"),
        ({"exp": None}, "exp"),
        ({"sub": None}, "sub"),
        ({"nbf": lambda: int(time.time()) + 600}, "not yet valid"),
    ],
)
def test_tokens_for_another_audience_issuer_or_time_are_refused(client, rsa_key, overrides, reason):
    # Times are taken when the test runs, not when it is collected (the suite runs for many minutes).
    overrides = {k: v() if callable(v) else v for k, v in overrides.items()}
    response = client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", "rsa-1", **overrides)))
    assert response.status_code == 401, response.text
    assert reason in response.json()["error"].lower()


def unsigned(header: dict, payload: dict, key: bytes = b"") -> str:
    """A JWT built by hand (anything in its header), with an HMAC signature under `key`."""
    head = jwt.utils.base64url_encode(json.dumps(header).encode())
    body = jwt.utils.base64url_encode(json.dumps(payload).encode())
    signature = jwt.utils.base64url_encode(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return b".".join((head, body, signature)).decode()


def test_a_key_the_provider_does_not_list_is_refused(client, idp):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert client.post("/api/token", headers=bearer(sign(stranger, "RS256", "rsa-1"))).status_code == 401
    assert client.post("/api/token", headers=bearer(sign(stranger, "RS256", "rsa-9"))).status_code == 401
    # ES256 header on the RSA key's id, and a kid that is not a string.
    ec_other = ec.generate_private_key(ec.SECP256R1())
    assert client.post("/api/token", headers=bearer(sign(ec_other, "ES256", "rsa-1"))).status_code == 401
    for kid in (["rsa-1"], {"a": 1}, 7):
        odd = unsigned({"alg": "ES256", "kid": kid}, {"sub": "x", "exp": 2**40})
        assert client.post("/api/token", headers=bearer(odd)).status_code == 401


def test_algorithm_confusion_is_refused(client, rsa_key):
    """An HS256 token "signed" with the provider's public key must not pass as its signature."""
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = {"sub": "ana", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    forged = unsigned({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, payload, key=pem)
    response = client.post("/api/token", headers=bearer(forged))
    assert response.status_code == 401 and "algorithm" in response.json()["error"]
    none = jwt.encode(payload, None, algorithm="none")
    assert client.post("/api/token", headers=bearer(none)).status_code == 401


def test_key_rotation_is_followed_but_unknown_kids_do_not_hammer_the_provider(client, idp, rsa_key):
    assert client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", "rsa-1"))).status_code == 201
    assert idp.fetches == 1
    for n in range(20):  # made-up key ids: at most one refetch per min_refresh_s (30 s)
        client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", f"made-up-{n}")))
    assert idp.fetches == 1

    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.add("rsa-2", rotated.public_key(), "RS256")
    jwks = client.app.state.authenticator.jwks
    jwks.min_refresh_s = 0.0  # as if 30 s had passed
    assert client.post("/api/token", headers=bearer(sign(rotated, "RS256", "rsa-2"))).status_code == 201
    assert idp.fetches == 2


def test_an_unreachable_provider(client, idp, rsa_key):
    jwks = client.app.state.authenticator.jwks
    idp.down = True
    for _ in range(3):  # tried once, then not again for min_refresh_s (30 s): the provider is not hammered
        response = client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", "rsa-1")))
        assert response.status_code == 503 and "TOKEN_JWKS_URL" in response.json()["error"]
    assert idp.fetches == 1
    idp.down = False
    jwks._retry_at = 0.0  # as if 30 s had passed
    assert client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", "rsa-1"))).status_code == 201
    assert idp.fetches == 2
    idp.down, jwks.ttl_s = True, 0.0  # keys already fetched keep working while the provider is down
    assert client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", "rsa-1"))).status_code == 201
    assert client.post("/api/token", headers=bearer(sign(rsa_key, "RS256", "rsa-1"))).status_code == 201
    assert idp.fetches == 3


def test_shared_secret_tokens():
    client = client_for(prod_settings(token_auth="jwt", token_jwt_audience="voice-agent"))
    good = jwt.encode({"sub": "ana", "aud": "voice-agent", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256")
    assert claims(client.post("/api/token", headers=bearer(good)).json()["participant_token"]).identity == "user:ana"
    wrong = jwt.encode({"sub": "ana", "aud": "voice-agent", "exp": int(time.time()) + 60}, "x" * 40, "HS256")
    assert client.post("/api/token", headers=bearer(wrong)).status_code == 401
    other_aud = jwt.encode({"sub": "ana", "aud": "other", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256")
    assert client.post("/api/token", headers=bearer(other_aud)).status_code == 401
    # With only jwt enabled, API keys are not accepted even if configured.
    assert client.post("/api/token", headers={"x-api-key": "web-key-0123456789abcdef0123"}).status_code == 401


def test_jwks_settings_are_checked_at_start_up(idp):
    with pytest.raises(ConfigError, match="TOKEN_JWT_AUDIENCE"):
        Security.from_settings(prod_settings(token_auth="jwt", token_jwt_secret="", token_jwks_url=idp.url))
    with pytest.raises(ConfigError, match="https"):
        Security.from_settings(
            prod_settings(token_jwks_url="http://idp.example.test/jwks.json", token_jwt_audience=AUDIENCE)
        )
    with pytest.raises(ConfigError, match="TOKEN_JWT_SECRET must be at least 32"):
        Security.from_settings(prod_settings(token_jwt_secret="short"))
