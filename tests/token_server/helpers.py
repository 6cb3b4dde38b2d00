"""Settings and checks shared by the token server's security tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from livekit import api

from token_server.app import create_app
from token_server.settings import TokenServerSettings

KEY, SECRET = "prodkey", "prod-secret-0123456789-abcdefghij-klmnop"
WEB_KEY = "web-key-0123456789abcdef0123"
KIOSK_KEY = "kiosk-key-0123456789abcdef0123"
JWT_SECRET = "idp-shared-secret-0123456789-abcdefghij"


def dev_settings(**overrides: Any) -> TokenServerSettings:
    values: dict[str, Any] = {"livekit_api_key": KEY, "livekit_api_secret": SECRET}
    return TokenServerSettings(_env_file=None, **(values | overrides))


def prod_settings(**overrides: Any) -> TokenServerSettings:
    """Production mode by TOKEN_AUTH, with two applications' API keys and a shared-secret JWT issuer."""
    values: dict[str, Any] = {
        "token_auth": "api_key,jwt",
        "token_api_keys": f"web:{WEB_KEY},kiosk:{KIOSK_KEY}",
        "token_jwt_secret": JWT_SECRET,
        "livekit_public_url": "wss://voice.example.test",
    }
    return dev_settings(**(values | overrides))


def client_for(settings: TokenServerSettings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def claims(token: str) -> api.Claims:
    """What livekit-server will see: the token verified with the LiveKit key and secret."""
    return api.TokenVerifier(KEY, SECRET).verify(token)


def web(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {WEB_KEY}", **(extra or {})}
