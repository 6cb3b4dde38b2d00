"""Run the token server: `uv run python -m token_server`.

A configuration production mode must not run with (token_server/auth.py: the development LiveKit keys, no
authentication) stops start-up with one line on stderr and exit code 2. In production mode, /metrics and the API docs
are served on 127.0.0.1:TOKEN_METRICS_PORT, beside the public port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator

import uvicorn
from pydantic import ValidationError

from token_server.app import create_admin_app, create_app
from token_server.auth import ConfigError
from token_server.settings import get_settings


class SecondServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to the main one, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_both(main: uvicorn.Server, admin: uvicorn.Server) -> None:
    second = asyncio.create_task(admin.serve())
    try:
        await main.serve()
    finally:
        admin.should_exit = True
        await second


def main() -> int:
    try:
        settings = get_settings()
        app = create_app(settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        print(f"token server: invalid setting {str(error['loc'][0]).upper()}: {error['msg']}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"token server: {exc}", file=sys.stderr)
        return 2
    security = app.state.security
    config = uvicorn.Config(
        app, host=settings.token_server_host, port=settings.token_server_port, log_level="info", access_log=False
    )
    server = uvicorn.Server(config)
    log = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config
    if not security.production:
        log.info("token server: development mode (%s): open to this machine, no authentication", security.why)
        server.run()
        return 0
    admin = None
    where = "off (TOKEN_METRICS_PORT=0)"
    if settings.token_metrics_port:
        admin_config = uvicorn.Config(
            create_admin_app(app), host="127.0.0.1", port=settings.token_metrics_port, log_config=None, access_log=False
        )
        admin = SecondServer(admin_config)
        where = f"on http://127.0.0.1:{settings.token_metrics_port}"
    log.info(
        "token server: production mode (%s): authentication %s; /metrics and /api/docs %s",
        security.why,
        " or ".join(security.methods),
        where,
    )
    if settings.server_url.startswith("ws://"):
        log.warning(
            "token server: clients are told to connect to %s: set LIVEKIT_PUBLIC_URL to your wss:// URL",
            settings.server_url,
        )
    if admin is None:
        server.run()
    else:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(serve_both(server, admin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
