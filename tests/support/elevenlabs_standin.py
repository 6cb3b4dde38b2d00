"""A local stand-in for ElevenLabs' text to speech API, speaking its real wire formats.

- `WS /v1/text-to-speech/{voice_id}/multi-stream-input` (what livekit-plugins-elevenlabs streams over): JSON
  messages `{"text": " ", "voice_settings": ..., "context_id": c}` opens a context, `{"text": "...", "context_id": c,
  "flush"?: true}` adds text, `{"context_id": c, "close_context": true}` ends it, `{"close_socket": true}` ends all.
  Answers `{"audio": base64, "normalizedAlignment": ..., "alignment": ..., "contextId": c}` per word generated and
  `{"isFinal": true, "contextId": c}` once a context is closed.
- `WS /v1/text-to-speech/{voice_id}/stream-input`: the single-context variant (no context ids; `{"text": ""}` ends
  the input, the server answers `{"isFinal": true}` and closes).
- `POST /v1/text-to-speech/{voice_id}/stream?output_format=...` with `{"text": ..., "model_id": ...}`: raw audio.
- `GET /v1/voices`.

Audio is a soft 220 Hz tone, 60 ms per character, in the requested `output_format` (`pcm_<rate>` as 16-bit mono
PCM, or `mp3_<rate>_<kbps>` encoded with PyAV's libmp3lame). Text is buffered per context and generated on `flush`,
at a sentence end (auto_mode), once the buffer passes the chunk length schedule, or when the context closes.
Alignment times are counted from the start of the context. Every connection and request is recorded, and `kill()`
aborts the TCP connections (no close frame) to play a service dying mid-call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from stack.services import free_port
from tests.support.loopback_app import LoopbackApp

CHAR_S = 0.06  # seconds of audio per character
DEFAULT_SCHEDULE = [120, 160, 250, 290]  # ElevenLabs' default chunk_length_schedule
SENTENCE_END = (".", "!", "?", ";", ":")


def parse_format(output_format: str) -> tuple[str, int, int]:
    """('pcm' | 'mp3', sample rate, bit rate) of an ElevenLabs output_format such as pcm_24000 or mp3_22050_32."""
    parts = output_format.split("_")
    codec = parts[0]
    if codec not in ("pcm", "mp3") or len(parts) < 2:
        raise ValueError(f"unsupported output_format {output_format!r}")
    rate = int(parts[1])
    kbps = int(parts[2]) if len(parts) > 2 else 128
    return codec, rate, kbps * 1000


def tone(chars: int, rate: int, offset: int = 0) -> np.ndarray:
    """`chars` × 60 ms of a soft 220 Hz tone as int16 samples, continuing the phase from sample `offset`."""
    n = int(round(rate * CHAR_S * chars))
    t = (np.arange(n) + offset) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)


class Encoder:
    """Encodes one generation's audio, piece by piece: PCM as is, MP3 through one libmp3lame stream."""

    def __init__(self, codec: str, rate: int, bit_rate: int) -> None:
        self.codec = codec
        self._mp3: Any = None
        if codec == "mp3":
            import av

            self._av = av
            self._mp3 = av.CodecContext.create("libmp3lame", "w")
            self._mp3.sample_rate = rate
            self._mp3.layout = "mono"
            self._mp3.format = "s16p"
            self._mp3.bit_rate = bit_rate
            self._rate = rate
            self._pts = 0

    def push(self, samples: np.ndarray, last: bool = False) -> bytes:
        if self._mp3 is None:
            return samples.astype("<i2").tobytes()
        out = bytearray()
        frame = self._av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16p", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += len(samples)
        for packet in self._mp3.encode(frame):
            out += bytes(packet)
        if last:
            for packet in self._mp3.encode(None):
                out += bytes(packet)
        return bytes(out)


def encode(samples: np.ndarray, codec: str, rate: int, bit_rate: int) -> bytes:
    return Encoder(codec, rate, bit_rate).push(samples, last=True)


@dataclass
class Context:
    """One synthesis context as the stand-in saw it."""

    id: str | None
    voice_settings: dict | None = None
    texts: list[str] = field(default_factory=list)  # every text chunk received, in order (not the opening " ")
    flushes: int = 0
    closed: bool = False
    final_sent: bool = False
    buffer: str = ""
    generated: list[str] = field(default_factory=list)  # the text of each generation
    samples: int = 0  # audio produced so far, in samples
    chunk_index: int = 0

    @property
    def text(self) -> str:
        return "".join(self.texts)


@dataclass
class Connection:
    path: str
    voice_id: str
    multi: bool
    query: dict[str, str]
    headers: dict[str, str]
    messages: list[dict] = field(default_factory=list)
    contexts: dict[str | None, Context] = field(default_factory=dict)
    audio_messages: int = 0
    closed_by_client: bool = False
    aborted: bool = False

    @property
    def output_format(self) -> str:
        return self.query.get("output_format", "mp3_44100_128")


@dataclass
class ElevenLabsStandIn:
    port: int = field(default_factory=free_port)
    api_key: str | None = None  # when set, a different xi-api-key gets a 401
    latency: float = 0.0  # seconds before each generation's first audio
    kill_after_audio_s: float | None = None  # abort a connection once it has sent this much audio (per context)
    connections: list[Connection] = field(default_factory=list)
    http_requests: list[dict] = field(default_factory=list)
    dead: bool = False

    def __post_init__(self) -> None:
        self._sockets: set[Any] = set()  # transports of open websocket connections
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        """What to pass as the plugin's `base_url` (it derives ws://…/text-to-speech/… from it)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # --- what tests read -------------------------------------------------------------------------------------------

    def contexts(self) -> list[Context]:
        return [ctx for conn in self.connections for ctx in conn.contexts.values()]

    def received_text(self) -> str:
        """All text received over every websocket context, joined."""
        return "".join(ctx.text for ctx in self.contexts())

    def audio_seconds(self) -> float:
        """Seconds of audio generated over the websockets."""
        total = 0.0
        for conn in self.connections:
            _, rate, _ = parse_format(conn.output_format)
            total += sum(ctx.samples for ctx in conn.contexts.values()) / rate
        return total

    # --- the service -----------------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request, key: str | None = None) -> bool:
        return self.api_key is None or (key or request.headers.get("xi-api-key")) == self.api_key

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.dead:
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text=json.dumps({"detail": {"status": "invalid_api_key"}}))
        query = dict(request.query)
        try:
            codec, rate, bit_rate = parse_format(query.get("output_format", "mp3_44100_128"))
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        conn = Connection(
            path=request.path,
            voice_id=request.match_info["voice_id"],
            multi=request.path.endswith("multi-stream-input"),
            query=query,
            headers=dict(request.headers),
        )
        self.connections.append(conn)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        transport = request.transport
        self._sockets.add(transport)
        auto_mode = query.get("auto_mode", "false") == "true"
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                conn.messages.append(data)
                if not await self._handle(ws, conn, data, codec, rate, bit_rate, auto_mode):
                    break
            else:
                conn.closed_by_client = True
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._sockets.discard(transport)
        if not ws.closed and not conn.aborted:
            await ws.close()
        return ws

    async def _handle(
        self, ws: web.WebSocketResponse, conn: Connection, data: dict, codec: str, rate: int, bit_rate: int, auto: bool
    ) -> bool:
        """Handles one client message; False once the socket should close."""
        if data.get("close_socket"):
            for ctx in list(conn.contexts.values()):
                await self._close_context(ws, conn, ctx, codec, rate, bit_rate)
            return False
        context_id = data.get("context_id") if conn.multi else None
        if conn.multi and context_id is None:
            await ws.send_json({"error": "context_id is required", "message": "missing context_id"})
            return True
        ctx = conn.contexts.get(context_id)
        if ctx is None or (ctx.closed and not conn.multi):
            ctx = Context(id=context_id, voice_settings=data.get("voice_settings"))
            conn.contexts[context_id] = ctx
            if data.get("text") == " ":  # the opening message
                return True
        if data.get("close_context"):
            await self._close_context(ws, conn, ctx, codec, rate, bit_rate)
            return True
        if data.get("keep_alive"):
            return True
        text = data.get("text")
        if text == "" and not conn.multi:  # end of input on the single-context socket
            await self._close_context(ws, conn, ctx, codec, rate, bit_rate)
            return False
        if text:
            ctx.texts.append(text)
            ctx.buffer += text
        if data.get("flush"):
            ctx.flushes += 1
            await self._generate(ws, conn, ctx, ctx.buffer, codec, rate, bit_rate)
        elif auto and ctx.buffer.rstrip().endswith(SENTENCE_END):
            await self._generate(ws, conn, ctx, ctx.buffer, codec, rate, bit_rate)
        else:
            schedule = ((data.get("generation_config") or {}).get("chunk_length_schedule")) or DEFAULT_SCHEDULE
            limit = schedule[min(ctx.chunk_index, len(schedule) - 1)]
            if len(ctx.buffer) >= limit and " " in ctx.buffer:
                cut = ctx.buffer.rindex(" ") + 1
                await self._generate(ws, conn, ctx, ctx.buffer[:cut], codec, rate, bit_rate)
        return not conn.aborted

    async def _close_context(
        self, ws: web.WebSocketResponse, conn: Connection, ctx: Context, codec: str, rate: int, bit_rate: int
    ) -> None:
        if ctx.closed:
            return
        await self._generate(ws, conn, ctx, ctx.buffer, codec, rate, bit_rate)
        ctx.closed = True
        if conn.aborted:
            return
        final: dict[str, Any] = {"isFinal": True}
        if conn.multi:
            final["contextId"] = ctx.id
        await ws.send_json(final)
        ctx.final_sent = True

    async def _generate(
        self, ws: web.WebSocketResponse, conn: Connection, ctx: Context, text: str, codec: str, rate: int, bit_rate: int
    ) -> None:
        """Speaks `text` (taken off the context's buffer), one message per word."""
        ctx.buffer = ctx.buffer[len(text) :]
        if not text.strip() or conn.aborted:
            return
        ctx.generated.append(text)
        ctx.chunk_index += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        pieces = re.findall(r"\s*\S+\s*|\s+", text)  # words with their spaces
        encoder = Encoder(codec, rate, bit_rate)
        for n, piece in enumerate(pieces):
            start_ms = ctx.samples * 1000 / rate
            samples = tone(len(piece), rate, ctx.samples)
            ctx.samples += len(samples)
            alignment = {
                "chars": list(piece),
                "charStartTimesMs": [round(start_ms + i * CHAR_S * 1000) for i in range(len(piece))],
                "charsDurationsMs": [round(CHAR_S * 1000)] * len(piece),
            }
            msg: dict[str, Any] = {
                "audio": base64.b64encode(encoder.push(samples, last=n == len(pieces) - 1)).decode(),
                "isFinal": None,
                "normalizedAlignment": alignment,
                "alignment": alignment,
            }
            if conn.multi:
                msg["contextId"] = ctx.id
            await ws.send_json(msg)
            conn.audio_messages += 1
            if self.kill_after_audio_s is not None and ctx.samples / rate >= self.kill_after_audio_s:
                self._abort_all()
                conn.aborted = True
                return

    async def _synthesize(self, request: web.Request) -> web.StreamResponse:
        if self.dead:
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        body = await request.json()
        self.http_requests.append(
            {
                "path": request.path,
                "voice_id": request.match_info["voice_id"],
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text=json.dumps({"detail": {"status": "invalid_api_key"}}))
        try:
            codec, rate, bit_rate = parse_format(request.query.get("output_format", "mp3_44100_128"))
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        if self.latency:
            await asyncio.sleep(self.latency)
        audio = encode(tone(len(str(body.get("text", ""))), rate), codec, rate, bit_rate)
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg" if codec == "mp3" else "audio/pcm"})
        await response.prepare(request)
        step = max(1, rate // 10) * (2 if codec == "pcm" else 1)
        for start in range(0, len(audio), step):
            await response.write(audio[start : start + step])
        await response.write_eof()
        return response

    async def _voices(self, request: web.Request) -> web.Response:
        voice = {"voice_id": "bIHbv24MWmeRgasZH58o", "name": "Stand-in", "category": "premade"}
        return web.json_response({"voices": [voice]})

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def _abort_all(self) -> None:
        for transport in list(self._sockets):
            transport.abort()
        self._sockets.clear()
        for conn in self.connections:
            conn.aborted = conn.aborted or not all(ctx.final_sent for ctx in conn.contexts.values())

    def kill(self) -> None:
        """The service dies: open connections are cut without a close frame, new ones are cut on arrival."""
        self.dead = True
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._kill(), self._loop).result(10)

    async def _kill(self) -> None:
        self._abort_all()

    def revive(self) -> None:
        self.dead = False

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._websocket)
        app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", self._websocket)
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._synthesize)
        app.router.add_post("/v1/text-to-speech/{voice_id}", self._synthesize)
        app.router.add_get("/v1/voices", self._voices)

    def start(self) -> ElevenLabsStandIn:
        self._server = LoopbackApp("ElevenLabs stand-in", self.port, self._routes, shutdown_timeout=1).start()
        self._loop = self._server.loop
        return self

    def stop(self) -> None:
        self._server.call(self._kill())
        self._server.stop()

    def __enter__(self) -> ElevenLabsStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
