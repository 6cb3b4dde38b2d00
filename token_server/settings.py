"""Typed settings for the token server, from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parent.parent


class TokenServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    livekit_url: str = "ws://127.0.0.1:7880"
    # What clients are told to connect to; defaults to LIVEKIT_URL.
    livekit_public_url: str | None = None
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = Field(default="devsecret-local-only-change-me-0123456789", repr=False)
    agent_name: str = "voice-agent"
    token_ttl_s: int = Field(default=600, ge=30, le=900)
    token_server_host: str = "127.0.0.1"
    token_server_port: int = 8080
    web_dir: Path = REPO / "web"
    # Comma-separated origins allowed to call the token endpoint from other sites' pages.
    cors_origins: str = ""

    # Production mode (token_server/auth.py): on when TOKEN_AUTH or a credential below is set, or the bind is not
    # loopback. TOKEN_AUTH lists the accepted methods: api_key, jwt (default: those configured).
    token_auth: str = ""
    # API keys, one per client application: JSON {"name": "key"} or "name:key,name2:key2".
    token_api_keys: str = Field(default="", repr=False)
    # JWTs from the application's identity provider: HS256 with a shared secret, or RS256/ES256 keys from a JWKS URL.
    token_jwt_secret: str = Field(default="", repr=False)
    token_jwks_url: str = ""
    token_jwt_issuer: str = ""
    token_jwt_audience: str = ""
    # Per client (API key, JWT subject, or address in development): a token bucket. 0 tokens/s: no limit.
    token_rate_per_s: float = Field(default=10.0, ge=0)
    token_rate_burst: int = Field(default=20, ge=1)
    # Production mode serves /metrics and the API docs on this loopback-only port instead (0: not at all).
    token_metrics_port: int = Field(default=9465, ge=0, le=65535)
    # How long a group room's invite stays valid.
    token_invite_ttl_s: int = Field(default=86400, ge=60, le=30 * 86400)
    # The attribute the agent reads as a participant's role (agent/settings.py): set only from a moderator invite.
    group_role_attribute: str = "role"

    @property
    def server_url(self) -> str:
        return self.livekit_public_url or self.livekit_url


@lru_cache(maxsize=1)
def get_settings() -> TokenServerSettings:
    return TokenServerSettings()
