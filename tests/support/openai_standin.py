"""A local stand-in for an OpenAI-compatible server (the real wire formats): chat completions (SSE), speech to
text (/v1/audio/transcriptions, multipart WAV in, JSON out) and text to speech (/v1/audio/speech, raw PCM out).

It answers from a script instead of models: a question about the time becomes a `get_time` tool call, a tool
result becomes a sentence that quotes it, anything else is echoed back; speech to text answers `transcript`;
text to speech answers a tone as long as the words would take to say. Each can wait a fixed delay first (for
benchmarks with fixed-latency providers). Every request is recorded so tests can check what the client sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from stack.services import free_port
from tests.support.loopback_app import LoopbackApp

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


TTS_RATE = 24000  # the sample rate of OpenAI's "pcm" response format


def tone(words: int, rate: int = TTS_RATE) -> bytes:
    """About 0.3 s of a soft 220 Hz tone per word, as 16-bit PCM."""
    t = np.arange(int(rate * 0.3 * max(1, words))) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16).tobytes()


@dataclass
class OpenAIStandIn:
    port: int = field(default_factory=free_port)
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    transcript: str = "What time is it in Tokyo?"
    llm_delay: float = 0.0
    stt_delay: float = 0.0
    tts_delay: float = 0.0
    stt_requests: list[dict] = field(default_factory=list)
    tts_requests: list[dict] = field(default_factory=list)

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        audio = upload.file.read() if hasattr(upload, "file") else bytes(upload)
        self.stt_requests.append(
            {
                "headers": dict(request.headers),
                "fields": {k: str(v) for k, v in form.items() if k != "file"},
                "filename": getattr(upload, "filename", ""),
                "audio": audio,
            }
        )
        await asyncio.sleep(self.stt_delay)
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.tts_requests.append({"headers": dict(request.headers), "body": body})
        await asyncio.sleep(self.tts_delay)
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await response.prepare(request)
        pcm = tone(len(str(body.get("input", "")).split()))
        for start in range(0, len(pcm), 4800):  # 100 ms chunks
            await response.write(pcm[start : start + 4800])
        await response.write_eof()
        return response

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        reply = scripted_reply(body["messages"])
        await asyncio.sleep(self.llm_delay)
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

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/speech", self._speech)

    def start(self) -> OpenAIStandIn:
        self._server = LoopbackApp("openai-standin", self.port, self._routes).start()
        return self

    def stop(self) -> None:
        self._server.stop()
