"""Run the token server: `uv run python -m token_server`."""

import uvicorn

from token_server.app import create_app
from token_server.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.token_server_host,
        port=settings.token_server_port,
        log_level="info",
        access_log=False,
    )
