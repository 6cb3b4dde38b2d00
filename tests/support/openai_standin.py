"""A local stand-in for an OpenAI-compatible chat-completions server (the real SSE wire format).

It answers from a script instead of a model: a question about the time becomes a `get_time` tool
call, a tool result becomes a sentence that quotes it, anything else is echoed back. Every request
is recorded so tests can check what the client sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

from stack.services import free_port

LONG_STORY = " ".join(
    f"Sentence {n} of the story tells how the little robot walked further along the quiet river bank."
    for n in range(1, 13)
)


def scripted_reply(messages: list[dict]) -> dict:
    """{'content': str} or {'tool_call': (name, arguments)} for the conversation so far."""
    last = messages[-1]
    if last.get("role") == "tool":
        return {"content": f"Sure. {last.get('content', '')}"}
    text = last.get("content") or ""
    if isinstance(text, list):
        text = " ".join(part.get("text", "") for part in text)
    if "story" in text.lower():
        return {"content": LONG_STORY}
    if "time" in text.lower():
        place = re.search(r"\bin ([A-Za-z][A-Za-z .'-]*)", text)
        location = place.group(1).strip(" .?!") if place else "UTC"
        return {"tool_call": ("get_time", {"location": location})}
    return {"content": f"You said: {text.strip()}"}


@dataclass
class OpenAIStandIn:
    port: int = field(default_factory=free_port)
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        reply = scripted_reply(body["messages"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
        }

        async def send(delta: dict, finish: str | None = None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if "tool_call" in reply:
            name, args = reply["tool_call"]
            call = {
                "index": 0,
                "id": f"call_{len(self.requests)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            await send({"tool_calls": [call]})
            await send({}, "tool_calls")
        else:
            for word in re.findall(r"\S+\s*", reply["content"]):
                await send({"content": word})
            await send({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    def start(self) -> OpenAIStandIn:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="openai-standin", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
