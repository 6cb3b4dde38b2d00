"""An aiohttp app served on a loopback port from its own thread and event loop: the base of the stand-in servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web


class LoopbackApp:
    def __init__(self, name: str, port: int, routes: Callable[[web.Application], None], **runner_options: Any):
        self.name, self.port = name, port
        self._routes = routes
        self._runner_options = runner_options
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackApp:
        ready = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            self._routes(app)
            self.runner = web.AppRunner(app, **self._runner_options)
            self.loop.run_until_complete(self.runner.setup())
            self.site = web.TCPSite(self.runner, "127.0.0.1", self.port)
            self.loop.run_until_complete(self.site.start())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the {self.name} did not start")
        return self

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Runs a coroutine on the server's loop and waits for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        assert self.loop is not None and self.runner is not None and self._thread is not None
        try:
            self.call(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
