"""Settings the stack launcher needs (the services read the rest of the same env themselves)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    livekit_api_key: str = "devkey"
    livekit_api_secret: str = Field(default="devsecret-local-only-change-me-0123456789", repr=False)
    livekit_port: int = 7880
    livekit_rtc_tcp_port: int = 7881
    livekit_rtc_udp_port: int = 7882
    # livekit-server's Prometheus metrics (0: off); livekit.yaml says 6789, the launcher writes this one.
    livekit_prometheus_port: int = 6789
    token_server_port: int = 8080
    agent_http_port: int = 8081
    agent_metrics_port: int = 9464
    # Telephony mode (`scripts/up --telephony` or STACK_TELEPHONY=true): Redis and livekit-sip start too.
    stack_telephony: bool = False
    redis_port: int = 6379
    sip_port: int = 5060
    sip_rtp_port_start: int = 10000
    sip_rtp_port_end: int = 10199
    # The declarative trunks and dispatch rule applied at start-up in telephony mode.
    telephony_config: str = "telephony.yaml"
