"""Optional OpenTelemetry traces of the agent, on when an OTLP endpoint is configured.

Configured with the standard OpenTelemetry variables, read by the SDK itself: OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_EXPORTER_OTLP_HEADERS (which may carry an API key: it is never logged),
OTEL_SERVICE_NAME (default "voice-agent"), OTEL_RESOURCE_ATTRIBUTES. Spans go over OTLP/HTTP protobuf through a
BatchSpanProcessor, and the provider is handed to livekit-agents only (the global OpenTelemetry provider is left
alone), which then traces each session and turn: agent_session, agent_turn, user_turn, llm_node, llm_request,
function_tool, tts_node... LIVEKIT_TELEMETRY_ALLOW_PII=0 keeps the conversation's text out of the spans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from livekit.agents import telemetry
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import AttributeValue

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_SERVICE_NAME = "voice-agent"

logger = logging.getLogger("agent.tracing")

_provider: TracerProvider | None = None
_previous: trace.TracerProvider | None = None


def endpoint() -> str | None:
    """The configured OTLP endpoint (the traces one first), or None when traces are off."""
    return next((value.strip() for var in ENDPOINT_VARS if (value := os.environ.get(var, "")).strip()), None)


def describe(url: str) -> str:
    """Scheme, host and port only: a URL may carry credentials in its user info or query."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}" if parts.scheme else "(endpoint)"


def setup(metadata: Mapping[str, AttributeValue] | None = None) -> bool:
    """Sends livekit-agents' spans to the configured OTLP endpoint; False (and nothing done) when none is set.

    Idempotent: a second call keeps the first provider. `metadata` is stamped on every span.
    """
    global _provider, _previous
    url = endpoint()
    if url is None:
        return False
    if _provider is not None:
        return True
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))  # flushed at exit by the SDK
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint and headers from the env
    _previous = telemetry.tracer._tracer_provider  # restored by shutdown(); livekit keeps no public getter
    telemetry.set_tracer_provider(provider, metadata=dict(metadata) if metadata else None)
    _provider = provider
    logger.info("OpenTelemetry traces on: service %s, OTLP/HTTP to %s", service, describe(url))
    return True


def flush(timeout_s: float = 10.0) -> bool:
    """Exports the spans ended so far; True when all were sent (or traces are off)."""
    return _provider.force_flush(int(timeout_s * 1000)) if _provider is not None else True


def shutdown() -> None:
    """Flushes and stops the exporter, and gives livekit-agents back the provider it had before setup()."""
    global _provider, _previous
    if _provider is None:
        return
    provider, _provider = _provider, None
    if _previous is not None:
        telemetry.tracer.set_provider(_previous)
    _previous = None
    provider.shutdown()
