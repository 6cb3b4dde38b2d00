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

    @property
    def server_url(self) -> str:
        return self.livekit_public_url or self.livekit_url


@lru_cache(maxsize=1)
def get_settings() -> TokenServerSettings:
    return TokenServerSettings()
