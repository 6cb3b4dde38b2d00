"""GET /metrics: every answer counted by route and status (the middleware's 413s and validation 422s too), a
latency histogram by route, tokens issued, and label values that no URL can add to."""

from __future__ import annotations

import secrets

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from token_server.app import create_app
from token_server.metrics import ROUTES
from token_server.settings import TokenServerSettings

LABELLED = ("token_server_requests_total", "token_server_request_duration_seconds_count")


@pytest.fixture
def client() -> TestClient:
    settings = TokenServerSettings(livekit_api_key="testkey", livekit_api_secret="test-secret-with-at-least-32-chars!")
    return TestClient(create_app(settings), raise_server_exceptions=False)


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: dict) -> set[tuple[str, frozenset]]:
    return {key for key in samples if key[0] in LABELLED}


def test_answers_are_counted_by_route_and_status(client):
    assert client.post("/api/token", json={"room_name": "kitchen"}).status_code == 201
    assert client.post("/api/token", json={"room_name": 42}).status_code == 422  # validation error
    huge = client.post("/api/token", content=b"x" * 100_000, headers={"content-type": "application/json"})
    assert huge.status_code == 413  # answered by the body-limit middleware, before the app
    refused = client.post("/api/token", json={"room_config": {"agents": [{"agent_name": "other"}]}})
    assert refused.status_code == 403
    assert client.get("/healthz").status_code == 200
    assert client.get("/no-such-page").status_code == 404

    samples = scrape(client)
    requests = "token_server_requests_total"
    for status in ("201", "422", "413", "403"):
        assert value(samples, requests, route="/api/token", status=status) == 1, status
    assert value(samples, requests, route="/healthz", status="200") == 1
    assert value(samples, requests, route="other", status="404") == 1
    assert value(samples, "token_server_tokens_issued_total") == 1  # only the 201 signed a token

    histogram = "token_server_request_duration_seconds"
    assert value(samples, f"{histogram}_count", route="/api/token") == 4
    assert value(samples, f"{histogram}_bucket", route="/api/token", le="+Inf") == 4
    assert 0 < value(samples, f"{histogram}_sum", route="/api/token") < 10
    assert value(samples, f"{histogram}_count", route="/metrics") == 0  # a scrape is counted once it is answered
    assert value(samples, "process_cpu_seconds_total") > 0

    again = scrape(client)
    assert value(again, requests, route="/metrics", status="200") == 1
    assert value(again, f"{histogram}_count", route="/metrics") == 1


def test_unknown_paths_add_no_label_values(client):
    def noise() -> None:
        tag = secrets.token_hex(8)
        for path in (
            f"/api/../etc?x={tag}",
            f"/api/token/{tag}",
            f"/healthz/{tag}",
            f"/{tag}",
            f"/assets/{tag}.js",
            f"/%2e%2e/{tag}%00",
            f"/metrics{tag}",
        ):
            client.get(path)
        client.post(f"/api/{tag}", json={})

    noise()
    first = scrape(client)
    noise()
    noise()
    second = scrape(client)
    routes = {dict(labels)["route"] for name, labels in series(second)}
    assert routes <= {*ROUTES, "other"}, routes
    # More requests to new paths raise the counts of the same series, and add none.
    first_scrape = ("token_server_requests_total", frozenset({"route": "/metrics", "status": "200"}.items()))
    assert series(second) - series(first) == {first_scrape}
    assert value(second, "token_server_requests_total", route="other", status="404") > value(
        first, "token_server_requests_total", route="other", status="404"
    )


def test_an_unhandled_error_is_counted_as_500(client):
    async def boom() -> None:
        raise RuntimeError("bug")

    client.app.router.routes.insert(0, APIRoute("/api/boom", boom))  # ahead of the web page's catch-all mount
    assert client.get("/api/boom").status_code == 500
    assert value(scrape(client), "token_server_requests_total", route="other", status="500") == 1
