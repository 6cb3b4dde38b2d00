"""Token server: LiveKit's standard token endpoint, group-room invites, a health check, and the web page.

POST /api/token {room_name?, participant_identity?, participant_name?, participant_metadata?,
participant_attributes?, room_config?, invite?} -> 201 {server_url, participant_token}
POST /api/rooms {room_name?, participant_identity?} -> 201 {room_name, invite, moderator_invite?, expires_at}
GET /metrics -> Prometheus text format (token_server/metrics.py); API docs at /api/docs and /api/openapi.json

Development mode (loopback, no authentication configured) is open: a client names its room and identity. Production
mode (token_server/auth.py) authenticates every request and derives the identity from it; 1:1 rooms are made by the
server and group rooms are joined by invite; /metrics and the API docs move to the loopback-only admin app
(create_admin_app, on TOKEN_METRICS_PORT). In both modes: reserved identities and attributes are refused, one agent
per token at most, and each client has a rate limit (429 with Retry-After).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from livekit import api
from starlette.types import ASGIApp, Receive, Scope, Send

from token_server import policy, tracing
from token_server.auth import Authenticator, Principal, Security
from token_server.metrics import RequestMetrics, TokenServerMetrics
from token_server.models import RoomRequest, RoomResponse, TokenRequest, TokenResponse
from token_server.ratelimit import RateLimiter
from token_server.settings import TokenServerSettings, get_settings
from token_server.tokens import AccessToken

logger = logging.getLogger("token_server")

MAX_BODY_BYTES = 16 * 1024
CLIENT_ROOM_CONFIG_KEYS = {"agents"}
# Headers a reverse proxy adds: in development mode they mean the loopback-only server is being served to others.
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
GROUP_DISPATCH = json.dumps({"mode": "group"})


class BodyLimit:
    """Refuses request bodies over a size limit with 413, whether or not Content-Length is sent.

    Bodies here are tiny, so the middleware reads the whole body first and replays it to the app.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(scope, receive, send, self.limit)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _too_large(scope, receive, send, self.limit)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = JSONResponse({"error": f"request body over {limit} bytes"}, status_code=413)
    await response(scope, receive, send)


def dispatch_config(
    requested: dict | None, settings: TokenServerSettings, default_metadata: str = ""
) -> api.RoomConfiguration:
    """The room configuration put in the token: by default it dispatches this deployment's agent."""
    if requested is None:
        agent = api.RoomAgentDispatch(agent_name=settings.agent_name, metadata=default_metadata)
        return api.RoomConfiguration(agents=[agent])
    refused = sorted(set(requested) - CLIENT_ROOM_CONFIG_KEYS)
    if refused:
        raise HTTPException(403, f"room_config.{refused[0]} cannot be set by clients (only 'agents')")
    try:
        config = json_format.ParseDict(requested, api.RoomConfiguration())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise HTTPException(422, f"room_config is not a valid RoomConfiguration: {exc}") from None
    if len(config.agents) > 1:
        raise HTTPException(422, f"room_config.agents: at most one agent per token ({len(config.agents)} asked for)")
    for agent in config.agents:
        agent.agent_name = agent.agent_name or settings.agent_name  # unnamed means this deployment's agent
        if agent.agent_name != settings.agent_name:
            raise HTTPException(
                403,
                f"agent '{agent.agent_name}' is not available here (this server dispatches '{settings.agent_name}')",
            )
        if len(agent.metadata) > 4096:
            raise HTTPException(422, "room_config.agents[].metadata is over 4096 characters")
    return config


def dev_client(request: Request) -> str:
    """The client's address in development mode, refusing requests that came through a proxy or from elsewhere."""
    if any(name in request.headers for name in PROXY_HEADERS):
        raise HTTPException(
            403,
            "this token server is in development mode (open, for this machine only) but the request came through a "
            "proxy: set TOKEN_AUTH and credentials to serve other machines (docs/deployment.md)",
        )
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
        remote = not (address.is_loopback or (mapped is not None and mapped.is_loopback))
    except ValueError:
        remote = False  # not an address (an in-process test client)
    if remote:
        raise HTTPException(403, "this token server is in development mode: it answers this machine only")
    return host


def too_many(wait: float, limiter: RateLimiter) -> HTTPException:
    seconds = max(1, math.ceil(wait))
    return HTTPException(
        429,
        f"rate limit: {limiter.rate:g} tokens/s, bursts of {limiter.burst:g}; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


async def authenticate(request: Request) -> Principal:
    """Who is asking (checked before the body is read), and their rate limit."""
    state = request.app.state
    limiter: RateLimiter = state.limiter
    if state.authenticator is None:
        host = dev_client(request)
        principal = Principal("dev", host, f"ip:{host}")
    else:
        try:
            principal = await state.authenticator(request)
        except HTTPException as exc:
            if exc.status_code == 401 and request.client:  # failed attempts are limited per address
                wait = limiter.take(f"failed:{request.client.host}")
                if wait:
                    raise too_many(wait, limiter) from None
            raise
    wait = limiter.take(principal.rate_key)
    if wait:
        raise too_many(wait, limiter)
    return principal


def create_app(settings: TokenServerSettings | None = None) -> FastAPI:
    """The public app. Raises auth.ConfigError when production mode is misconfigured (python -m token_server turns
    it into one line and exit code 2)."""
    settings = settings or get_settings()
    security = Security.from_settings(settings)
    production = security.production
    app = FastAPI(
        title="Voice agent token server",
        docs_url=None if production else "/api/docs",
        openapi_url=None if production else "/api/openapi.json",
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["POST", "GET"],
            allow_headers=["content-type", "authorization", "x-api-key", "x-room-invite"],
            expose_headers=["retry-after"],
        )
    metrics = TokenServerMetrics()
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: it also counts the answers of the others
    tracing.instrument(app)  # OpenTelemetry server spans, only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    limiter = RateLimiter(settings.token_rate_per_s, settings.token_rate_burst)
    invites = policy.Invites(settings.livekit_api_secret, settings.token_invite_ttl_s)
    app.state.settings, app.state.security, app.state.metrics, app.state.limiter = settings, security, metrics, limiter
    app.state.authenticator = Authenticator(security) if production else None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)[:1000]}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _refused(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if not production:

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.post("/api/token", status_code=201, response_model=TokenResponse)
    async def token(
        request: Request,
        principal: Annotated[Principal, Depends(authenticate)],
        body: Annotated[TokenRequest | None, Body()] = None,
    ) -> TokenResponse:
        body = body or TokenRequest()
        if body.participant_identity is not None:
            policy.check_identity(body.participant_identity)
        identity = principal.identity(body.participant_identity)
        attributes = dict(body.participant_attributes or {})
        policy.check_role_attribute(attributes, settings.group_role_attribute)
        invite_text = body.invite or request.headers.get("x-room-invite")
        default_metadata = ""
        if invite_text:
            invite = invites.verify(invite_text)
            if body.room_name is not None and body.room_name != invite.room:
                raise HTTPException(403, "room_name: the invite is for another room (leave room_name out)")
            room, default_metadata = invite.room, GROUP_DISPATCH
            if invite.moderator is not None:
                if invite.moderator != identity:
                    raise HTTPException(403, "this moderator invite was issued to someone else")
                attributes[settings.group_role_attribute] = policy.MODERATOR
        elif production:
            if body.room_name is not None:
                raise HTTPException(
                    403,
                    "room_name: rooms are made by the server here; leave it out for a call, or join a group room "
                    "with its invite (POST /api/rooms)",
                )
            room = policy.call_room()
        else:
            room = body.room_name or f"room-{secrets.token_hex(6)}"
        # No can_update_own_metadata: attributes (and so the moderator role) are only what this token says.
        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            can_update_own_metadata=False,
        )
        token = (
            AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
            .with_identity(identity)
            .with_name(body.participant_name or principal.display_name or identity)
            .with_ttl(timedelta(seconds=settings.token_ttl_s))
            .with_grants(grants)
            .with_room_config(dispatch_config(body.room_config, settings, default_metadata))
        )
        if body.participant_metadata:
            token = token.with_metadata(body.participant_metadata)
        if attributes:
            token = token.with_attributes(attributes)
        jwt = token.to_jwt()
        metrics.tokens_issued.inc()
        logger.info("token issued: room=%s identity=%s", room, identity)
        return TokenResponse(server_url=settings.server_url, participant_token=jwt)

    @app.post("/api/rooms", status_code=201, response_model=RoomResponse, response_model_exclude_none=True)
    async def rooms(
        principal: Annotated[Principal, Depends(authenticate)], body: Annotated[RoomRequest | None, Body()] = None
    ) -> RoomResponse:
        """A group room: an invite for guests, and a moderator invite for its creator."""
        body = body or RoomRequest()
        if body.room_name is not None and production:
            raise HTTPException(403, "room_name: group rooms are named by the server here (leave it out)")
        if body.participant_identity is not None:
            policy.check_identity(body.participant_identity)
        room = body.room_name or policy.group_room()
        creator = None
        if principal.knows_identity or body.participant_identity is not None:
            creator = principal.identity(body.participant_identity)
        invite, expires = invites.issue(room)
        moderator = invites.issue(room, moderator=creator)[0] if creator else None
        logger.info("group room made: room=%s moderator=%s", room, creator)
        return RoomResponse(room_name=room, invite=invite, moderator_invite=moderator, expires_at=expires)

    page = settings.web_dir / "dist"
    if (page / "index.html").is_file():
        app.mount("/", StaticFiles(directory=page, html=True), name="web")
    else:

        @app.get("/", include_in_schema=False)
        async def not_built() -> JSONResponse:
            return JSONResponse({"error": "the web client is not built: run `bash scripts/setup`"}, status_code=503)

    return app


def create_admin_app(public: FastAPI) -> FastAPI:
    """/metrics, /healthz and the public app's API docs, for the loopback-only port of production mode."""
    metrics: TokenServerMetrics = public.state.metrics
    admin = FastAPI(title="Voice agent token server (admin)", docs_url=None, redoc_url=None, openapi_url=None)
    admin.add_middleware(RequestMetrics, metrics=metrics)

    @admin.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @admin.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @admin.get("/api/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(public.openapi())

    @admin.get("/api/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title=f"{public.title} - API")

    return admin
