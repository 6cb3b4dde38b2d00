"""token_server.tokens.AccessToken signs exactly what livekit-api's AccessToken signs."""

from __future__ import annotations

import json
from datetime import timedelta

import jwt
import pytest
from livekit import api
from livekit.api.access_token import Claims

from token_server.tokens import AccessToken, FastClaims

SECRET = "test-secret-with-at-least-32-characters!"


def full_claims(cls: type[Claims]) -> Claims:
    return cls(
        identity="ana",
        name="Ana María",
        kind="standard",
        metadata='{"plan": "pro"}',
        video=api.VideoGrants(
            room_join=True,
            room="kitchen",
            can_publish=True,
            can_subscribe=False,
            can_publish_data=True,
            can_publish_sources=["microphone", "camera"],
            hidden=False,
        ),
        sip=api.SIPGrants(admin=False, call=True),
        attributes={"language": "es", "tier": ""},
        sha256="",
        room_config=api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name="voice-agent", metadata='{"persona": "receptionist"}')]
        ),
    )


@pytest.mark.parametrize("make", [full_claims, lambda cls: cls(), lambda cls: cls(name="x", video=api.VideoGrants())])
def test_claims_are_livekit_apis_in_the_same_order(make):
    ours, theirs = make(FastClaims).asdict(), make(Claims).asdict()
    assert json.dumps(ours) == json.dumps(theirs)  # same keys, values and order: the same JWT payload bytes


def test_token_is_the_one_livekit_api_signs():
    def sign(cls: type[api.AccessToken]) -> dict:
        grants = api.VideoGrants(room_join=True, room="kitchen", can_publish=True, can_subscribe=True)
        config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name="voice-agent")])
        token = (
            cls("testkey", SECRET)
            .with_identity("ana")
            .with_name("Ana")
            .with_ttl(timedelta(seconds=600))
            .with_grants(grants)
            .with_room_config(config)
            .with_metadata("m")
            .with_attributes({"a": "b"})
            .to_jwt()
        )
        payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
        return {k: v for k, v in payload.items() if k not in ("nbf", "exp")}

    assert sign(AccessToken) == sign(api.AccessToken)
    assert api.TokenVerifier("testkey", SECRET).verify(AccessToken("testkey", SECRET).with_identity("a").to_jwt())
