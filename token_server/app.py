"""Token server: LiveKit's standard token endpoint, a health check, and the web page.

POST /api/token {room_name?, participant_identity?, participant_name?, participant_metadata?,
participant_attributes?, room_config?} -> 201 {server_url, participant_token}
GET /metrics -> Prometheus text format (token_server/metrics.py)
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from livekit import api
from starlette.types import ASGIApp, Receive, Scope, Send

from token_server import tracing
from token_server.metrics import RequestMetrics, TokenServerMetrics
from token_server.models import TokenRequest, TokenResponse
from token_server.settings import TokenServerSettings, get_settings
from token_server.tokens import AccessToken

logger = logging.getLogger("token_server")

MAX_BODY_BYTES = 16 * 1024
CLIENT_ROOM_CONFIG_KEYS = {"agents"}


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


def dispatch_config(requested: dict | None, settings: TokenServerSettings) -> api.RoomConfiguration:
    """The room configuration put in the token: by default it dispatches this deployment's agent."""
    if requested is None:
        return api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=settings.agent_name)])
    refused = sorted(set(requested) - CLIENT_ROOM_CONFIG_KEYS)
    if refused:
        raise HTTPException(403, f"room_config.{refused[0]} cannot be set by clients (only 'agents')")
    try:
        config = json_format.ParseDict(requested, api.RoomConfiguration())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise HTTPException(422, f"room_config is not a valid RoomConfiguration: {exc}") from None
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


def create_app(settings: TokenServerSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="Voice agent token server", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["POST", "GET"],
            allow_headers=["content-type"],
        )
    metrics = TokenServerMetrics()
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: it also counts the answers of the others
    tracing.instrument(app)  # OpenTelemetry server spans, only when OTEL_EXPORTER_OTLP_ENDPOINT is set

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)[:1000]}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _refused(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.post("/api/token", status_code=201, response_model=TokenResponse)
    async def token(body: Annotated[TokenRequest | None, Body()] = None) -> TokenResponse:
        body = body or TokenRequest()
        room = body.room_name or f"room-{secrets.token_hex(6)}"
        identity = body.participant_identity or f"user-{secrets.token_hex(6)}"
        grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True)
        token = (
            AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
            .with_identity(identity)
            .with_name(body.participant_name or identity)
            .with_ttl(timedelta(seconds=settings.token_ttl_s))
            .with_grants(grants)
            .with_room_config(dispatch_config(body.room_config, settings))
        )
        if body.participant_metadata:
            token = token.with_metadata(body.participant_metadata)
        if body.participant_attributes:
            token = token.with_attributes(body.participant_attributes)
        jwt = token.to_jwt()
        metrics.tokens_issued.inc()
        logger.info("token issued: room=%s identity=%s", room, identity)
        return TokenResponse(server_url=settings.server_url, participant_token=jwt)

    page = settings.web_dir / "dist"
    if (page / "index.html").is_file():
        app.mount("/", StaticFiles(directory=page, html=True), name="web")
    else:

        @app.get("/", include_in_schema=False)
        async def not_built() -> JSONResponse:
            return JSONResponse({"error": "the web client is not built: run `bash scripts/setup`"}, status_code=503)

    return app
