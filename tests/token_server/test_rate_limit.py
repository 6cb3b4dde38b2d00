"""Per-client rate limits: a token bucket per API key, JWT subject, or address in development mode; 429 with
Retry-After once it is empty."""

from __future__ import annotations

import time

import jwt

from tests.token_server.helpers import JWT_SECRET, KIOSK_KEY, client_for, dev_settings, prod_settings, web
from token_server.ratelimit import RateLimiter


def test_bucket_allows_a_burst_then_the_rate():
    limiter = RateLimiter(rate_per_s=10, burst=20)
    assert [limiter.take("a", now=100.0) for _ in range(20)] == [0.0] * 20
    wait = limiter.take("a", now=100.0)
    assert abs(wait - 0.1) < 1e-9  # one token comes back every 1/10 s
    assert limiter.take("b", now=100.0) == 0.0  # another client has its own bucket
    assert limiter.take("a", now=100.15) == 0.0 and limiter.take("a", now=100.15) > 0
    assert limiter.take("a", now=110.0) == 0.0  # refilled (to the burst, not beyond)
    assert sum(limiter.take("a", now=110.0) == 0.0 for _ in range(40)) == 19


def test_a_rate_of_zero_turns_it_off():
    limiter = RateLimiter(rate_per_s=0, burst=1)
    assert not limiter.enabled and all(limiter.take("a") == 0.0 for _ in range(1000))


def test_the_table_of_clients_is_bounded():
    limiter = RateLimiter(rate_per_s=1, burst=2, max_keys=100)
    for n in range(1000):
        limiter.take(f"client-{n}", now=float(n) / 1000)
    assert len(limiter) <= 100
    for n in range(1000):  # once their buckets are full again, old clients are forgotten first
        limiter.take(f"late-{n}", now=1000.0 + n)
    assert len(limiter) <= 100


def test_development_mode_limits_each_address_with_retry_after():
    client = client_for(dev_settings(token_rate_per_s=0.5, token_rate_burst=3))
    assert [client.post("/api/token").status_code for _ in range(3)] == [201] * 3
    limited = client.post("/api/token", json={"participant_identity": "someone-else"})
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"  # one token every 2 s
    assert "rate limit" in limited.json()["error"]
    assert client.post("/api/rooms").status_code == 429  # one bucket for the client, whatever it asks for
    assert client.get("/healthz").status_code == 200


def test_the_replayed_flood_gets_only_the_burst_and_the_rate():
    """The attack issued 2000 tokens in 1.03 s; now a client gets its burst plus the rate."""
    client = client_for(dev_settings())  # defaults: 10 tokens/s, bursts of 20
    started = time.monotonic()
    statuses = [client.post("/api/token", json={"room_name": "flood"}).status_code for _ in range(300)]
    elapsed = time.monotonic() - started
    assert set(statuses) == {201, 429}
    assert statuses.count(201) <= 20 + 10 * elapsed + 1, (statuses.count(201), elapsed)


def test_production_limits_each_api_key_and_subject_separately():
    client = client_for(prod_settings(token_rate_per_s=0.1, token_rate_burst=2))
    ana = {"authorization": "Bearer " + jwt.encode({"sub": "ana", "exp": 2**40}, JWT_SECRET, algorithm="HS256")}
    bob = {"authorization": "Bearer " + jwt.encode({"sub": "bob", "exp": 2**40}, JWT_SECRET, algorithm="HS256")}
    for headers in (web(), {"x-api-key": KIOSK_KEY}, ana, bob):
        assert [client.post("/api/token", headers=headers).status_code for _ in range(3)] == [201, 201, 429]
    limited = client.post("/api/token", headers=web())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "10"


def test_failed_authentication_is_limited_per_address():
    client = client_for(prod_settings(token_rate_per_s=0.1, token_rate_burst=3))
    wrong = {"authorization": "Bearer wrong-key-0123456789abcdef"}
    assert [client.post("/api/token", headers=wrong).status_code for _ in range(4)] == [401, 401, 401, 429]
    assert client.post("/api/token", headers=web()).status_code == 201  # a valid key is not held up by them
