"""Free loopback ports for a test stack, so tests never collide with a running `scripts/up`."""

from __future__ import annotations

from stack.services import free_port
from stack.settings import StackSettings


def loopback_ports() -> StackSettings:
    return StackSettings(
        livekit_port=free_port(),
        livekit_rtc_tcp_port=free_port(),
        livekit_rtc_udp_port=free_port(),
        livekit_prometheus_port=free_port(),
        token_server_port=free_port(),
        agent_http_port=free_port(),
        agent_metrics_port=free_port(),
    )
