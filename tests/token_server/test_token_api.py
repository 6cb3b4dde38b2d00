"""The standard LiveKit token endpoint: contract, least-privilege grants, and bad input."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from fastapi.testclient import TestClient
from livekit import api

from token_server.app import create_app
from token_server.settings import TokenServerSettings

KEY, SECRET = "testkey", "test-secret-with-at-least-32-characters!"


@pytest.fixture
def settings(tmp_path) -> TokenServerSettings:
    return TokenServerSettings(
        livekit_url="ws://127.0.0.1:7880",
        livekit_public_url="wss://voice.example.test",
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
        agent_name="voice-agent",
        token_ttl_s=600,
    )


@pytest.fixture
def client(settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def claims(token: str) -> api.Claims:
    return api.TokenVerifier(KEY, SECRET).verify(token)


def test_contract_and_grants(client):
    response = client.post(
        "/api/token",
        json={
            "room_name": "kitchen",
            "participant_identity": "ana",
            "participant_name": "Ana María",
            "participant_metadata": '{"plan": "pro"}',
            "participant_attributes": {"language": "es"},
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"server_url", "participant_token"}
    assert body["server_url"] == "wss://voice.example.test"

    c = claims(body["participant_token"])
    assert (c.identity, c.name, c.metadata, c.attributes) == (
        "ana",
        "Ana María",
        '{"plan": "pro"}',
        {"language": "es"},
    )
    video = c.video
    assert video.room == "kitchen" and video.room_join
    assert video.can_publish and video.can_subscribe and video.can_publish_data
    # No administrative powers.
    assert not (video.room_admin or video.room_create or video.room_list or video.room_record)
    assert not video.ingress_admin and not video.hidden and not video.recorder
    assert [a.agent_name for a in c.room_config.agents] == ["voice-agent"]


def test_token_lives_at_most_15_minutes(client):
    token = client.post("/api/token", json={}).json()["participant_token"]
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert payload["exp"] - time.time() <= 15 * 60
    assert payload["exp"] - payload["nbf"] <= 15 * 60


def test_missing_room_and_identity_are_generated(client):
    first = claims(client.post("/api/token").json()["participant_token"])
    second = claims(client.post("/api/token", json={}).json()["participant_token"])
    assert first.video.room and first.identity
    assert first.video.room != second.video.room and first.identity != second.identity


def test_client_may_ask_for_this_agent_with_metadata(client):
    config = {"agents": [{"agentName": "voice-agent", "metadata": '{"persona": "default"}'}]}
    response = client.post("/api/token", json={"room_config": config})
    assert response.status_code == 201
    agent = claims(response.json()["participant_token"]).room_config.agents[0]
    assert (agent.agent_name, agent.metadata) == ("voice-agent", '{"persona": "default"}')


def test_request_as_livekit_js_token_source_sends_it(client):
    # TokenSource.endpoint(url) with {roomName, participantName, agentName, agentMetadata}: snake_case proto JSON.
    body = {
        "room_name": "support-42",
        "participant_name": "Web caller",
        "room_config": {"agents": [{"agent_name": "voice-agent", "metadata": "{}"}]},
    }
    response = client.post("/api/token", json=body)
    assert response.status_code == 201
    c = claims(response.json()["participant_token"])
    assert c.video.room == "support-42" and c.identity and c.name == "Web caller"
    assert [(a.agent_name, a.metadata) for a in c.room_config.agents] == [("voice-agent", "{}")]


def test_unnamed_agent_means_this_deployments_agent(client):
    response = client.post("/api/token", json={"room_config": {"agents": [{"metadata": "x"}]}})
    assert response.status_code == 201
    assert claims(response.json()["participant_token"]).room_config.agents[0].agent_name == "voice-agent"


def test_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"room_name": 42}, 422, "room_name"),
        ({"participant_identity": ["a"]}, 422, "participant_identity"),
        ({"participant_attributes": {"a": 1}}, 422, "participant_attributes"),
        ({"room_name": "x" * 129}, 422, "room_name"),
        ({"participant_identity": "bob smith"}, 422, "participant_identity"),
        ({"room_name": "../../etc"}, 422, "room_name"),
        ({"participant_name": "bad\u0000name"}, 422, "participant_name"),
        ({"participant_metadata": "m" * 5000}, 422, "participant_metadata"),
        ({"participant_attributes": {f"k{i}": "v" for i in range(40)}}, 422, "at most"),
        ({"participant_attributes": {"lk.agent.state": "speaking"}}, 422, "reserved"),
        ({"room_config": {"agents": [{"agent_name": "other"}]}}, 403, "not available"),
        ({"room_config": {"egress": {"room": {}}}}, 403, "egress"),
        ({"room_config": {"agents": "all"}}, 422, "RoomConfiguration"),
        ([1, 2], 422, "body"),
    ],
)
def test_bad_json_input_is_refused_with_a_reason(client, body, status, reason):
    response = client.post("/api/token", json=body)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]


def test_malformed_json(client):
    response = client.post("/api/token", content=b'{"room_name": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]


def test_huge_body_is_refused(client):
    response = client.post("/api/token", content=b"x" * 100_000, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_huge_body_without_length_is_refused(client):
    def chunks():
        for _ in range(100):
            yield b" " * 1024

    response = client.post("/api/token", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_web_page_is_served(client, settings):
    page = client.get("/")
    if not (settings.web_dir / "dist" / "index.html").is_file():
        assert page.status_code == 503 and "scripts/setup" in page.json()["error"]
        return
    assert page.status_code == 200 and "<title>Voice agent</title>" in page.text
    script = re.search(r'src="(/assets/[^"]+\.js)"', page.text).group(1)
    assert client.get(script).status_code == 200
