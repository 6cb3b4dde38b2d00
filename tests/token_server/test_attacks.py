"""Each attack found against `scripts/up` (issue #21), replayed: it is refused, or the token it gets does no harm.

Where livekit-server's behaviour matters, the issued token is verified with livekit-api's TokenVerifier and its
identity, room, attributes and dispatch are checked: what livekit-server would act on.
"""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.token_server.helpers import JWT_SECRET, claims, client_for, dev_settings, prod_settings, web
from token_server import policy
from token_server.app import create_app


@pytest.fixture
def dev():
    return client_for(dev_settings())


@pytest.fixture
def prod():
    return client_for(prod_settings())


def user_jwt(sub: str, **extra) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300, **extra}, JWT_SECRET, algorithm="HS256")


AGENT_IDENTITIES = ["agent-AJ_8x2kPq3", "AGENT-AJ_8x2kPq3", "Agent_job", "agent-"]
PHONE_IDENTITIES = ["tel:+15551234", "TEL:+15551234", "Tel:+15551234", "sip_+15551234", "SIP_15551234", "sip:ann@pbx"]
LIVEKIT_IDENTITIES = ["lk", "lk-egress", "LK_bot", "lKx", "sips:x@y"]
NAMESPACES = ["app:web:ana", "user:ana", "USER:ana", "userh:ab"]


@pytest.mark.parametrize("identity", AGENT_IDENTITIES + PHONE_IDENTITIES + LIVEKIT_IDENTITIES + NAMESPACES)
@pytest.mark.parametrize("mode", ["dev", "prod"])
def test_reserved_identities_are_refused_in_every_mode(identity, mode, dev, prod):
    client, headers = (dev, {}) if mode == "dev" else (prod, web())
    response = client.post("/api/token", json={"participant_identity": identity}, headers=headers)
    assert response.status_code == 403, response.text
    assert "reserved" in response.json()["error"] and identity in response.json()["error"]


def test_the_agents_identity_cannot_be_had_to_evict_the_real_agent(dev, prod):
    """livekit-server removes an earlier participant with the same identity: no token may carry an agent's."""
    assert dev.post("/api/token", json={"room_name": "r", "participant_identity": "agent-AJ_x"}).status_code == 403
    # An identity provider's subject that looks like one is kept in the user: namespace.
    token = prod.post("/api/token", headers={"authorization": f"Bearer {user_jwt('agent-AJ_x')}"}).json()
    assert claims(token["participant_token"]).identity == "user:agent-AJ_x"


def test_nobody_gets_a_phone_callers_identity_and_so_their_notes(prod):
    for sub in ("tel:+15551234", "TEL:+15551234"):
        token = prod.post("/api/token", headers={"authorization": f"Bearer {user_jwt(sub)}"}).json()
        identity = claims(token["participant_token"]).identity
        assert identity == f"user:{sub}" and not identity.lower().startswith(("tel:", "sip"))
    # Through an application's API key the requested identity is refused, not just prefixed.
    assert prod.post("/api/token", json={"participant_identity": "tel:+15551234"}, headers=web()).status_code == 403


@pytest.mark.parametrize(
    "attributes",
    [
        {"role": "moderator"},
        {"Role": "moderator"},
        {"ROLE": "moderator"},
        {"sip.phoneNumber": "+15551234"},
        {"SIP.phoneNumber": "+15551234"},
        {"sip.callStatus": "active"},
        {"sip.trunkPhoneNumber": "+15550000"},
        {"lk.agent.state": "speaking"},
        {"LK.agent.state": "speaking"},
        {"Lk.publish_on_behalf": "agent-AJ_x"},
        {"agent.muted": "true"},
        {"app.Role": "x"},
        {"app.": "x"},
        {"app.x\n": "x"},
        {"language": "en", "role": "moderator"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("mode", ["dev", "prod"])
def test_clients_cannot_make_themselves_moderators_or_phone_lines(attributes, mode, dev, prod):
    client, headers = (dev, {}) if mode == "dev" else (prod, web())
    response = client.post("/api/token", json={"participant_attributes": attributes}, headers=headers)
    assert response.status_code == 422, response.text
    assert "reserved" in response.json()["error"]


def test_allowed_attributes_reach_the_token(dev):
    attributes = {"language": "pt", "display_color": "#8a2be2", "app.plan": "pro", "app.lk.anything": "x"}
    token = dev.post("/api/token", json={"participant_attributes": attributes}).json()["participant_token"]
    c = claims(token)
    assert c.attributes == attributes
    assert c.kind in ("", "standard", None)  # never SIP: the agent treats SIP participants as phone lines


def test_a_changed_role_attribute_is_still_reserved():
    client = client_for(dev_settings(group_role_attribute="app.role"))
    response = client.post("/api/token", json={"participant_attributes": {"app.role": "moderator"}})
    assert response.status_code == 422 and "app.role" in response.json()["error"]


@pytest.mark.parametrize("count", [2, 5])
@pytest.mark.parametrize("mode", ["dev", "prod"])
def test_one_token_dispatches_at_most_one_agent(count, mode, dev, prod):
    client, headers = (dev, {}) if mode == "dev" else (prod, web())
    agents = [{"agent_name": "voice-agent"} for _ in range(count)]
    response = client.post("/api/token", json={"room_config": {"agents": agents}}, headers=headers)
    assert response.status_code == 422 and "at most one agent" in response.json()["error"]
    # Spelled the other way (camelCase, unnamed) it is the same.
    response = client.post("/api/token", json={"room_config": {"agents": [{}, {"agentName": ""}]}}, headers=headers)
    assert response.status_code == 422


def test_production_refuses_anonymous_and_wrong_credentials(prod):
    for headers in (
        {},
        {"authorization": "Bearer wrong-key-0123456789abcdef"},
        {"authorization": f"Basic {'x' * 20}"},
        {"authorization": "Bearer"},
        {"x-api-key": "wrong-key-0123456789abcdef"},
        {"x-api-key": ""},
        {"authorization": f"Bearer {jwt.encode({'sub': 'ana', 'exp': 2**40}, 'x' * 40, algorithm='HS256')}"},
        {"authorization": f"Bearer {jwt.encode({'sub': 'ana'}, JWT_SECRET, algorithm='HS256')}"},  # no exp
        {"authorization": f"Bearer {user_jwt('ana', exp=int(time.time()) - 600)}"},  # expired
        {"authorization": "Bearer " + jwt.encode({"sub": "ana", "exp": 2**40}, None, algorithm="none")},
    ):
        response = prod.post("/api/token", json={"participant_identity": "ana"}, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]


def test_production_identity_comes_from_the_credential_not_the_body(prod):
    both = {"participant_identity": "ana"}
    app_token = prod.post("/api/token", json=both, headers={"x-api-key": "kiosk-key-0123456789abcdef0123"}).json()
    assert claims(app_token["participant_token"]).identity == "app:kiosk:ana"
    web_token = prod.post("/api/token", json=both, headers=web()).json()
    assert claims(web_token["participant_token"]).identity == "app:web:ana"  # another application's Ana

    signed_in = {"authorization": f"Bearer {user_jwt('u-123', name='Ana')}"}
    token = prod.post("/api/token", headers=signed_in).json()["participant_token"]
    assert (claims(token).identity, claims(token).name) == ("user:u-123", "Ana")
    # Asking for someone else's identity with one's own sign-in is refused; one's own is fine.
    refused = prod.post("/api/token", json={"participant_identity": "u-999"}, headers=signed_in)
    assert refused.status_code == 403 and "sign-in" in refused.json()["error"]
    assert prod.post("/api/token", json={"participant_identity": "u-123"}, headers=signed_in).status_code == 201


def test_unusual_subjects_get_a_stable_safe_identity(prod):
    sub = "auth0|5f7c8ec7 c33c6c004bbafe82"
    first = prod.post("/api/token", headers={"authorization": f"Bearer {user_jwt(sub)}"}).json()
    second = prod.post("/api/token", headers={"authorization": f"Bearer {user_jwt(sub)}"}).json()
    identity = claims(first["participant_token"]).identity
    assert identity == claims(second["participant_token"]).identity
    assert identity.startswith("userh:") and "|" not in identity and " " not in identity


def test_rooms_cannot_be_guessed_in_production(prod):
    refused = prod.post("/api/token", json={"room_name": "kitchen"}, headers=web())
    assert refused.status_code == 403 and "/api/rooms" in refused.json()["error"]
    rooms = {claims(prod.post("/api/token", headers=web()).json()["participant_token"]).video.room for _ in range(5)}
    assert len(rooms) == 5 and all(r.startswith("call-") and len(r) == 29 for r in rooms)


def test_a_group_room_is_joined_only_with_its_invite(prod):
    made = prod.post("/api/rooms", headers=web()).json()
    room, invite = made["room_name"], made["invite"]
    assert room.startswith("group-")
    # Its name alone does not get anyone in.
    assert prod.post("/api/token", json={"room_name": room}, headers=web()).status_code == 403
    token = prod.post("/api/token", json={"invite": invite}, headers=web()).json()["participant_token"]
    assert claims(token).video.room == room
    header = prod.post("/api/token", headers=web({"x-room-invite": invite})).json()["participant_token"]
    assert claims(header).video.room == room

    other = policy.Invites("another-secret-0123456789-abcdefghijkl", 3600).issue(room)[0]
    head, body, signature = invite.split(".")
    for forged in (
        other,
        f"{head}.{body}.{signature[::-1]}",
        invite + "x",
        "not-an-invite",
        invite.replace(".", "", 1),
    ):
        response = prod.post("/api/token", json={"invite": forged}, headers=web())
        assert response.status_code == 403, forged
    expired = policy.Invites(prod_settings().livekit_api_secret, 3600).issue(room, now=time.time() - 7200)[0]
    response = prod.post("/api/token", json={"invite": expired}, headers=web())
    assert response.status_code == 403 and "expired" in response.json()["error"]
    mismatch = prod.post("/api/token", json={"invite": invite, "room_name": "group-other"}, headers=web())
    assert mismatch.status_code == 403


def test_a_livekit_token_is_not_an_invite_and_an_invite_is_not_a_livekit_token(prod):
    token = prod.post("/api/token", headers=web()).json()["participant_token"]
    assert prod.post("/api/token", json={"invite": token}, headers=web()).status_code == 403
    invite = prod.post("/api/rooms", headers=web()).json()["invite"]
    with pytest.raises(jwt.PyJWTError):
        claims(invite)


def test_only_the_creator_becomes_moderator(prod):
    ana = {"authorization": f"Bearer {user_jwt('ana')}"}
    bob = {"authorization": f"Bearer {user_jwt('bob')}"}
    made = prod.post("/api/rooms", headers=ana).json()
    moderator = claims(
        prod.post("/api/token", json={"invite": made["moderator_invite"]}, headers=ana).json()["participant_token"]
    )
    assert (moderator.identity, moderator.attributes) == ("user:ana", {"role": "moderator"})
    # Nobody can change their own attributes after joining (livekit-server checks canUpdateOwnMetadata).
    assert moderator.video.can_update_own_metadata is False
    # Bob holding Ana's moderator invite is refused; with the guest invite he joins without a role.
    stolen = prod.post("/api/token", json={"invite": made["moderator_invite"]}, headers=bob)
    assert stolen.status_code == 403 and "someone else" in stolen.json()["error"]
    guest = claims(prod.post("/api/token", json={"invite": made["invite"]}, headers=bob).json()["participant_token"])
    assert guest.identity == "user:bob" and "role" not in (guest.attributes or {})
    assert guest.video.room == moderator.video.room == made["room_name"]
    # The group room's default dispatch asks the agent for group handling.
    assert [(a.agent_name, a.metadata) for a in guest.room_config.agents] == [("voice-agent", '{"mode": "group"}')]


def test_an_application_names_the_rooms_moderator(prod):
    made = prod.post("/api/rooms", json={"participant_identity": "maria"}, headers=web()).json()
    own = prod.post(
        "/api/token", json={"invite": made["moderator_invite"], "participant_identity": "maria"}, headers=web()
    )
    assert claims(own.json()["participant_token"]).attributes == {"role": "moderator"}
    # The same user name in another application is another identity.
    kiosk = {"x-api-key": "kiosk-key-0123456789abcdef0123"}
    other = prod.post(
        "/api/token", json={"invite": made["moderator_invite"], "participant_identity": "maria"}, headers=kiosk
    )
    assert other.status_code == 403
    # Without an identity there is no one to make moderator.
    assert "moderator_invite" not in prod.post("/api/rooms", headers=web()).json()
    assert prod.post("/api/rooms", json={"room_name": "kitchen"}, headers=web()).status_code == 403
    assert prod.post("/api/rooms", json={"participant_identity": "tel:+1555"}, headers=web()).status_code == 403


@pytest.mark.parametrize("path", ["/metrics", "/api/docs", "/api/openapi.json", "/redoc", "/docs", "/openapi.json"])
def test_metrics_and_api_docs_are_not_public_in_production(prod, path):
    assert prod.get(path).status_code == 404
    assert "token_server_requests_total" not in prod.get(path).text


def test_development_mode_refuses_requests_through_a_proxy(dev):
    for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
        response = dev.post("/api/token", json={}, headers={header: "203.0.113.9"})
        assert response.status_code == 403 and "TOKEN_AUTH" in response.json()["error"]


PEERS = [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("203.0.113.5", False), ("fe80::1", False)]


@pytest.mark.parametrize(("peer", "allowed"), [*PEERS, ("::ffff:203.0.113.5", False)])
def test_development_mode_answers_this_machine_only(peer, allowed):
    client = TestClient(create_app(dev_settings()), client=(peer, 50000), raise_server_exceptions=False)
    assert client.post("/api/token", json={}).status_code == (201 if allowed else 403)
