"""Development and production modes: which one runs, what each serves, and the refusal to start in production
mode with the development keys or without authentication (one line, exit code 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stack.services import free_port
from tests.token_server.helpers import (
    KEY,
    SECRET,
    WEB_KEY,
    claims,
    client_for,
    dev_settings,
    prod_settings,
    web,
)
from token_server.auth import ConfigError, Security, parse_api_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("overrides", "production", "why"),
    [
        ({}, False, "loopback"),
        ({"token_server_host": "::1"}, False, "loopback"),
        ({"token_server_host": "localhost"}, False, "loopback"),
        ({"token_auth": "api_key", "token_api_keys": f"web:{WEB_KEY}"}, True, "TOKEN_AUTH is set"),
        ({"token_api_keys": f"web:{WEB_KEY}"}, True, "authentication is configured"),
        ({"token_jwt_secret": "s" * 32}, True, "authentication is configured"),
        ({"token_server_host": "0.0.0.0", "token_api_keys": f"web:{WEB_KEY}"}, True, "0.0.0.0 is not loopback"),
        ({"token_server_host": "::", "token_jwt_secret": "s" * 32}, True, "is not loopback"),
        ({"token_server_host": "192.0.2.10", "token_jwt_secret": "s" * 32}, True, "is not loopback"),
    ],
)
def test_which_mode_runs(overrides, production, why):
    security = Security.from_settings(dev_settings(**overrides))
    assert security.production is production and why in security.why


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"token_server_host": "0.0.0.0"}, "needs authentication"),
        ({"token_auth": "api_key"}, "TOKEN_API_KEYS is empty"),
        ({"token_auth": "jwt"}, "neither TOKEN_JWT_SECRET nor TOKEN_JWKS_URL"),
        ({"token_auth": "password", "token_api_keys": f"web:{WEB_KEY}"}, "unknown method 'password'"),
        ({"token_api_keys": f"web:{WEB_KEY}", "livekit_api_key": "devkey"}, "development LiveKit keys"),
        ({"token_api_keys": f"web:{WEB_KEY}", "livekit_api_secret": "secret"}, "development LiveKit keys"),
        (
            {"token_api_keys": f"web:{WEB_KEY}", "livekit_api_secret": "devsecret-local-only-change-me-0123456789"},
            "development LiveKit keys",
        ),
        ({"token_api_keys": f"web:{WEB_KEY}", "livekit_api_secret": "short-but-not-dev"}, "at least 32"),
        ({"token_api_keys": f"web:{WEB_KEY}", "token_metrics_port": 8080}, "TOKEN_METRICS_PORT"),
        ({"token_api_keys": "web:short"}, "20-256 printable"),
        ({"token_api_keys": "Web App:" + "k" * 24}, "application name"),
        ({"token_api_keys": "k" * 24}, "name:key"),
        ({"token_api_keys": f"a:{WEB_KEY},b:{WEB_KEY}"}, "share one key"),
        ({"token_api_keys": f"a:{WEB_KEY},a:{'z' * 24}"}, "listed twice"),
        ({"token_api_keys": '{"web": '}, "not valid JSON"),
        ({"token_api_keys": '{"web": 5}'}, "map application names"),
    ],
)
def test_production_refuses_unsafe_configurations(overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        Security.from_settings(dev_settings(**overrides))
    assert "\n" not in str(refused.value)
    assert WEB_KEY not in str(refused.value)  # secrets never appear in the message


def test_api_keys_as_json_or_a_list():
    assert parse_api_keys(f'{{"web": "{WEB_KEY}", "ios": "{"i" * 24}"}}') == {"web": WEB_KEY, "ios": "i" * 24}
    assert parse_api_keys(f" web:{WEB_KEY} , ios:{'i' * 24} ") == {"web": WEB_KEY, "ios": "i" * 24}
    assert parse_api_keys("") == {}


def test_development_mode_keeps_livekits_contract_and_its_tools():
    client = client_for(dev_settings())
    body = {"room_name": "kitchen", "participant_identity": "ana", "participant_name": "Ana"}
    response = client.post("/api/token", json=body)
    assert response.status_code == 201 and set(response.json()) == {"server_url", "participant_token"}
    c = claims(response.json()["participant_token"])
    assert (c.identity, c.video.room) == ("ana", "kitchen")
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200 and client.get("/api/docs").status_code == 200


def test_development_group_rooms_by_name_with_a_moderator_invite():
    """What an e2e test (or the page's ?room=) does: a named room, its creator made moderator by invite."""
    client = client_for(dev_settings())
    made = client.post("/api/rooms", json={"room_name": "support-call", "participant_identity": "maria"}).json()
    assert made["room_name"] == "support-call" and made["expires_at"] > time.time() + 86000
    maria = client.post("/api/token", json={"participant_identity": "maria", "invite": made["moderator_invite"]})
    assert claims(maria.json()["participant_token"]).attributes == {"role": "moderator"}
    assert claims(maria.json()["participant_token"]).video.room == "support-call"
    pat = client.post("/api/token", json={"participant_identity": "pat", "invite": made["moderator_invite"]})
    assert pat.status_code == 403
    pat = client.post("/api/token", json={"participant_identity": "pat", "room_name": "support-call"})
    assert pat.status_code == 201 and not claims(pat.json()["participant_token"]).attributes


def test_production_serves_the_same_contract_to_authenticated_clients():
    client = client_for(prod_settings())
    response = client.post("/api/token", json={"participant_name": "Ana"}, headers=web())
    assert response.status_code == 201 and set(response.json()) == {"server_url", "participant_token"}
    assert response.json()["server_url"] == "wss://voice.example.test"
    assert client.get("/healthz").json() == {"status": "ok"}


def env_for(tmp_path: Path, **values: str) -> dict[str, str]:
    """A clean environment: no .env (the working directory is tmp_path) and only these settings."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {**keep, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **values}


def test_start_up_is_refused_with_one_line_and_exit_code_2(tmp_path):
    cases = {
        "exposed without authentication": ({"TOKEN_SERVER_HOST": "0.0.0.0"}, "needs authentication"),
        "authentication with the dev keys": ({"TOKEN_AUTH": "api_key", "TOKEN_API_KEYS": f"web:{WEB_KEY}"}, "dev"),
        "exposed with the dev secret": (
            {"TOKEN_SERVER_HOST": "0.0.0.0", "TOKEN_JWT_SECRET": "s" * 40, "LIVEKIT_API_KEY": KEY},
            "development LiveKit keys",
        ),
        "a bad setting": ({"TOKEN_RATE_PER_S": "-1"}, "TOKEN_RATE_PER_S"),
    }
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "token_server"],
            cwd=tmp_path,
            env=env_for(tmp_path, TOKEN_SERVER_PORT=str(free_port()), **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (env, _) in cases.items()
    }
    for name, process in started.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (name, out, err)
        assert out == "" and err.count("\n") == 1 and err.startswith("token server: "), (name, err)
        assert cases[name][1] in err, (name, err)


def test_a_production_server_keeps_metrics_and_docs_on_its_loopback_port(tmp_path):
    port, metrics_port = free_port(), free_port()
    env = env_for(
        tmp_path,
        TOKEN_SERVER_PORT=str(port),
        TOKEN_METRICS_PORT=str(metrics_port),
        TOKEN_API_KEYS=f"web:{WEB_KEY}",
        LIVEKIT_API_KEY=KEY,
        LIVEKIT_API_SECRET=SECRET,
        LIVEKIT_PUBLIC_URL="wss://voice.example.test",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "token_server"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    public, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{admin}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        assert httpx.post(f"{public}/api/token").status_code == 401
        issued = httpx.post(f"{public}/api/token", headers={"x-api-key": WEB_KEY})
        assert issued.status_code == 201 and claims(issued.json()["participant_token"]).identity.startswith("app:web:")
        for path in ("/metrics", "/api/docs", "/api/openapi.json"):
            assert httpx.get(f"{public}{path}").status_code == 404, path
        scrape = httpx.get(f"{admin}/metrics").text
        assert 'token_server_requests_total{route="/api/token",status="401"} 1.0' in scrape
        assert "token_server_tokens_issued_total 1.0" in scrape
        schema = httpx.get(f"{admin}/api/openapi.json").json()
        assert {"/api/token", "/api/rooms"} <= set(schema["paths"])
        assert "swagger" in httpx.get(f"{admin}/api/docs").text.lower()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "production mode" in err and f"127.0.0.1:{metrics_port}" in err
    assert WEB_KEY not in err and SECRET not in err
