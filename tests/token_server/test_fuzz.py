"""Property-based fuzz of the token server with Hypothesis: over 10,000 generated requests, in process (raw ASGI
calls, no network), in development and production mode, no answer is a 5xx, and every token issued keeps the
rules: no reserved identity, no reserved attribute, at most one agent, production identities in their namespaces.

The requests mix the contract's fields with near misses (reserved identities and attributes, repeated agents, wrong
types, valid and forged invites, API keys, signed and unsigned JWTs with odd claims) and with noise (random bytes,
broken JSON, odd headers, methods and paths, bodies over the limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.utils import base64url_encode
from livekit import api

from tests.token_server.helpers import JWT_SECRET, KEY, KIOSK_KEY, SECRET, WEB_KEY, dev_settings, prod_settings
from token_server import policy
from token_server.app import create_app
from token_server.models import ALLOWED_ATTRIBUTES, APP_ATTRIBUTE

EXAMPLES = 2000
REQUESTS_PER_EXAMPLE = 5
UNLIMITED = {"token_rate_per_s": 1e9, "token_rate_burst": 10**9}  # the limiter runs but never says no
APPS = {
    "dev": create_app(dev_settings(**UNLIMITED)),
    "prod": create_app(prod_settings(**UNLIMITED)),
    "prod-aud": create_app(
        prod_settings(token_jwt_audience="voice-agent", token_jwt_issuer="https://idp/", **UNLIMITED)
    ),
    "dev-limited": create_app(dev_settings(token_rate_per_s=50, token_rate_burst=5)),
}
INVITES = policy.Invites(SECRET, 3600)
VERIFIER = api.TokenVerifier(KEY, SECRET)


PICK = {odds: st.sampled_from(range(odds)) for odds in (4, 8, 10, 20)}


@st.composite
def often(draw, common: st.SearchStrategy, rare: st.SearchStrategy, odds: int = 4):
    """`common` odds-1 times in odds, else `rare` (st.one_of would pick each branch alike)."""
    return draw(rare if draw(PICK[odds]) == odds - 1 else common)  # Hypothesis favours 0: the common case


def sized(letter: str, top: int) -> st.SearchStrategy:
    """Strings of one letter up to `top` long: one draw, and they reach every length limit."""
    return st.integers(0, top).map(lambda n: letter * n)


# Values of every JSON type, nested too: where a field wants a string, each is a type error to survive.
ODD_JSON = [None, True, False, 0, -1, 2**63, 1.5, -0.0, 1e308, "", [], {}, [1, "a"], {"a": {"b": [None]}}, ["x"] * 3]
short_text = st.text(max_size=12)
json_values = st.sampled_from(ODD_JSON) | short_text | st.integers()
near_identities = st.sampled_from(
    ["ana", "agent-AJ_x", "AGENT_x", "tel:+15551234", "TEL:1", "sip_1", "sip:a@b", "lk", "LKx", "app:web:x",
     "user:x", "userh:x", "bob.smith@example.com", "a" * 128, "a" * 129, "ana ", "", "ana\n", "ünï", "x/../y"]
)  # fmt: skip
good_identities = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-@", min_size=1, max_size=16)
identities = often(good_identities, near_identities | short_text | sized("i", 140), odds=8)
attribute_keys = often(
    st.sampled_from(["language", "display_color", "app.plan", "app.x.y", "app.lk.x"]),
    st.sampled_from(
        ["role", "Role", "app.role", "sip.phoneNumber", "SIP.callStatus", "lk.agent.state", "LK.agent.state",
         "agent.muted", "app.", "app.UP", "", "k" * 65, "app.x\n"]
    )
    | short_text,
    odds=8,
)  # fmt: skip
MANY_ATTRIBUTES = [{f"app.k{n}": "v" for n in range(count)} for count in (32, 33, 40)]
attributes = often(
    st.dictionaries(attribute_keys, often(short_text, sized("v", 1100) | json_values, odds=8), max_size=3),
    st.sampled_from(MANY_ATTRIBUTES) | json_values,
    odds=8,
)
agent_entries = st.fixed_dictionaries(
    {},
    optional={
        "agent_name": often(st.sampled_from(["voice-agent", ""]), st.just("other-agent") | json_values),
        "agentName": st.sampled_from(["voice-agent", "other"]),
        "metadata": often(st.sampled_from(['{"mode": "group"}', "{}"]), sized("m", 4200) | json_values),
        "unknown": json_values,
    },
)
room_configs = often(
    st.lists(agent_entries, max_size=1).map(lambda agents: {"agents": agents}),
    st.lists(agent_entries, min_size=2, max_size=3).map(lambda agents: {"agents": agents})
    | st.sampled_from([{"metadata": "x"}, {"egress": {"room": {}}}, {"agents": "all"}, {"agents": [[]]}])
    | json_values,
)
NOW = int(time.time())


CLAIMS = st.fixed_dictionaries(
    {"sub": often(identities, json_values), "exp": often(st.just(NOW + 300), st.just(NOW - 300) | json_values)},
    optional={
        "aud": often(st.just("voice-agent"), json_values),
        "iss": often(st.just("https://idp/"), json_values),
        "nbf": st.sampled_from([NOW - 10, NOW + 600, "soon"]),
        "name": often(short_text, sized("n", 200) | json_values),
    },
)
JWT_KEYS = often(st.just(JWT_SECRET), st.just("wrong-secret-" + "x" * 30))
JWT_HEADERS = often(st.none(), st.fixed_dictionaries({}, optional={"kid": json_values, "alg": json_values}))
MANGLE = often(st.just(0), st.sampled_from([1, 2, 3]))


@st.composite
def jwts(draw) -> str:
    token = api_jwt_encode(draw(CLAIMS), draw(JWT_KEYS), draw(JWT_HEADERS))
    return [token, token[:-3], token.replace(".", "..", 1), token + "."][draw(MANGLE)]


def api_jwt_encode(claims: dict, key: str, headers: dict | None) -> str:
    """An HS256 JWT built by hand, so that claims and headers of any type get through (pyjwt refuses some)."""
    header = {"alg": "HS256", "typ": "JWT", **(headers or {})}
    head, body = (base64url_encode(json.dumps(part).encode()) for part in (header, claims))
    signature = base64url_encode(hmac.new(key.encode(), head + b"." + body, hashlib.sha256).digest())
    return b".".join((head, body, signature)).decode()


INVITE_ROOMS = st.sampled_from(["group-abc", "support-call"]) | good_identities
MODERATORS = st.sampled_from([None, None, "ana", "app:web:ana", "user:ana"])


@st.composite
def invites(draw) -> tuple[str, bool]:
    """An invite (and whether it is a moderator one): valid ones for the apps' secret, and forgeries."""
    room = draw(INVITE_ROOMS)
    moderator = draw(MODERATORS)
    invite = INVITES.issue(room, moderator=moderator)[0]
    forgery = draw(MANGLE)
    if forgery == 0:
        return invite, moderator is not None
    return [invite[:-2], "x." + invite, draw(short_text)][forgery - 1], False


JWT_STRATEGY, INVITE_STRATEGY = jwts(), invites()
ROUTES = ["/api/token", "/api/token", "/api/token", "/api/rooms"]
OTHER_PATHS = ["/healthz", "/metrics", "/api/docs", "/api/openapi.json", "/api/token/", "/", "/redoc", "/%00"]
BODY_FIELDS = {  # each field right most of the time, so that many requests get a token
    "room_name": often(identities, json_values, odds=8),
    "participant_identity": often(identities, json_values, odds=8),
    "participant_name": often(short_text, sized("n", 140) | json_values, odds=8),
    "participant_metadata": often(short_text, sized("m", 4200) | json_values, odds=8),
    "participant_attributes": often(attributes, json_values, odds=8),
    "room_config": room_configs,
    "extra": json_values,
}
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
APP_NAMES = st.sampled_from(list(APPS))
PATHS = often(
    st.sampled_from(ROUTES),
    st.sampled_from(OTHER_PATHS) | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    odds=20,
)
METHODS = often(st.just("POST"), st.sampled_from(["GET", "PUT", "OPTIONS", "DELETE", "HEAD"]), odds=20)
NO_INVITE = st.just((None, False))
BODY_KINDS = often(st.just("json"), st.sampled_from(["none", "bytes", "broken", "huge", "list"]), odds=8)
BODIES = st.fixed_dictionaries({}, optional=BODY_FIELDS)
CONTENT_TYPES = often(st.just("application/json"), st.sampled_from([None, "text/plain", ""]) | header_text)
AUTH = often(st.sampled_from(["web", "kiosk", "jwt"]), st.sampled_from(["none", "bad-key", "text"]))
BEARER = st.sampled_from(["Bearer ", "bearer ", "Bearer  "])
EXTRAS = often(st.just(None), st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip", "peer"]), 10)


@st.composite
def requests(draw) -> dict:
    app = draw(APP_NAMES)
    path = draw(PATHS)
    path = path if path.startswith("/") else "/" + path
    method = draw(METHODS)
    invite, moderator_invite = draw(often(NO_INVITE, INVITE_STRATEGY))
    fields: dict = {}
    kind = draw(BODY_KINDS)
    if kind in ("json", "broken"):
        fields = draw(BODIES)
        if invite and draw(st.booleans()):
            fields["invite"] = invite
        body = json.dumps(fields).encode()
        if kind == "broken":
            body = body[: draw(st.integers(0, len(body) - 1))]
    elif kind == "none":
        body = b""
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "huge":
        body = b" " * 17_000
    else:
        body = json.dumps(draw(st.sampled_from(ODD_JSON[:-2]))).encode()
    headers: dict[str, str] = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["content-type"] = content_type
    auth = draw(AUTH)
    if auth == "web":
        headers["authorization"] = f"Bearer {WEB_KEY}"
    elif auth == "kiosk":
        headers["x-api-key"] = KIOSK_KEY
    elif auth == "jwt":
        headers["authorization"] = draw(BEARER) + draw(JWT_STRATEGY)
    elif auth == "bad-key":
        headers["x-api-key"] = draw(header_text)
    elif auth == "text":
        headers["authorization"] = draw(header_text)
    if invite and "invite" not in fields:
        headers["x-room-invite"] = invite
    extra = draw(EXTRAS)
    if extra == "peer":
        client = "203.0.113.5"
    else:
        client = "127.0.0.1"
        if extra:
            headers[extra] = "203.0.113.9"
    return {
        "app": app, "method": method, "path": path, "headers": headers, "body": body, "client": client,
        "fields": fields, "moderator_invite": moderator_invite,
    }  # fmt: skip


async def call(request: dict) -> tuple[int, dict[str, str], bytes]:
    """One request straight into the ASGI app, as uvicorn would make it."""
    body = request["body"]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["path"].encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in request["headers"].items()]
        + [(b"content-length", str(len(body)).encode())],
        "client": (request["client"], 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    status, headers, chunks = 0, {}, []

    async def send(message: dict) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = {k.decode(): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await APPS[request["app"]](scope, receive, send)
    except Exception as exc:  # what uvicorn would answer with a 500
        return 500, {}, repr(exc).encode()
    return status, headers, b"".join(chunks)


def check_token(request: dict, payload: dict) -> None:
    """A token that was issued keeps every rule, whatever was asked for."""
    claims = VERIFIER.verify(payload["participant_token"])
    identity = claims.identity
    assert not policy.RESERVED_IDENTITY.match(identity) or request["app"].startswith("prod"), identity
    if request["app"].startswith("prod"):
        assert identity.startswith(("app:web:", "app:kiosk:", "user:", "userh:")), identity
        assert not identity.split(":", 2)[-1].lower().startswith(("tel:", "agent-", "sip_")) or identity.startswith(
            ("user:", "userh:")
        ), identity
        assert (
            claims.video.room.startswith("call-")
            or "invite" in request["fields"]
            or "x-room-invite" in request["headers"]
        ), claims.video.room
    for key, value in (claims.attributes or {}).items():
        if key == "role":
            assert value == "moderator" and request["moderator_invite"], request
        else:
            assert key in ALLOWED_ATTRIBUTES or APP_ATTRIBUTE.fullmatch(key), key
    agents = claims.room_config.agents if claims.room_config else []
    assert len(agents) <= 1 and all(a.agent_name == "voice-agent" for a in agents)
    video = claims.video
    assert video.room_join and not (video.room_admin or video.room_create or video.room_list or video.room_record)


def test_no_request_gets_a_5xx_and_no_token_breaks_the_rules():
    loop = asyncio.new_event_loop()
    counts: dict[int, int] = {}
    started = time.monotonic()
    in_app = 0.0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(requests(), min_size=REQUESTS_PER_EXAMPLE, max_size=REQUESTS_PER_EXAMPLE))
    def fuzz(batch: list[dict]) -> None:
        nonlocal in_app
        for request in batch:
            began = time.perf_counter()
            status, _headers, body = loop.run_until_complete(call(request))
            in_app += time.perf_counter() - began
            counts[status] = counts.get(status, 0) + 1
            assert status < 500, (status, body[:500], request)
            if status == 201 and request["path"] == "/api/token" and request["method"] == "POST":
                check_token(request, json.loads(body))
            if status == 429:
                assert int(_headers["retry-after"]) >= 1

    try:
        fuzz()
    finally:
        loop.close()
    total = sum(counts.values())
    print(
        f"\nfuzz: {total} requests in {time.monotonic() - started:.1f} s ({in_app:.1f} s in the app); "
        f"statuses {dict(sorted(counts.items()))}"
    )
    assert total >= EXAMPLES * REQUESTS_PER_EXAMPLE >= 10_000
    assert not any(status >= 500 for status in counts)
    assert counts.get(201, 0) > 500 and counts.get(401, 0) and counts.get(403, 0) and counts.get(422, 0)
