"""OpenTelemetry traces of the token server (token_server/tracing.py): one server span per request at a real
OTLP/HTTP receiver, when an endpoint is set; nothing at all otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.otlp_receiver import OTLPReceiver, attributes
from token_server import tracing
from token_server.app import create_app
from token_server.settings import TokenServerSettings

SECRET = "sk-otel-test-5b2d9e04"
SETTINGS = TokenServerSettings(livekit_api_key="testkey", livekit_api_secret="test-secret-with-at-least-32-chars!")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> Iterator[None]:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    yield
    tracing.shutdown()


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver().start()
    yield server
    server.stop()


def test_without_an_endpoint_the_app_is_not_instrumented():
    app = create_app(SETTINGS)
    assert tracing.provider() is None
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert TestClient(app).get("/healthz").status_code == 200


def test_requests_become_server_spans(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={SECRET}")
    client = TestClient(create_app(SETTINGS))
    assert client.get("/healthz", headers={"x-api-key": SECRET}).status_code == 200
    assert client.get("/metrics").status_code == 200  # scrapes are not traced
    assert client.post("/api/token", json={"room_name": "traced"}).status_code == 201
    assert tracing.provider().force_flush(10_000)

    spans = receiver.wait_for("POST /api/token")
    by_name = {span.name: (resource, span) for resource, span in spans}
    assert set(by_name) == {"GET /healthz", "POST /api/token"}, set(by_name)
    resource, health = by_name["GET /healthz"]
    assert resource["service.name"] == "voice-agent-token-server"
    assert health.kind == Span.SPAN_KIND_SERVER
    health_attributes = attributes(health)
    assert health_attributes["http.route"] == "/healthz"
    assert health_attributes.get("http.response.status_code", health_attributes.get("http.status_code")) == 200
    assert all(headers.get("x-api-key") == SECRET for headers in receiver.headers)
    for _, span in spans:
        assert SECRET not in repr(attributes(span)), span.name
