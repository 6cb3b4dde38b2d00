"""A local stand-in for Deepgram's live streaming speech to text (`wss://api.deepgram.com/v1/listen`), speaking its
real wire protocol: options in the query string, `Authorization: Token <key>`, binary frames of raw audio in, JSON
text frames (`KeepAlive`, `Finalize`, `CloseStream`) from the client; `SpeechStarted`, `Results`, `UtteranceEnd` and
`Metadata` JSON messages back.

It recognises speech without a model: the RMS of every 20 ms of the incoming linear16 audio says whether it is
voiced. Voiced audio starts an utterance (`SpeechStarted`), interim `Results` (is_final false) carry a growing prefix
of `transcript` while it goes on, and once `endpoint_s` of silence follows it a final `Results` (is_final and
speech_final true) carries the whole `transcript`; then `UtteranceEnd` once `utterance_end_ms` of silence has passed,
if the client asked for it. All timing is audio time (bytes received), so it does not depend on how fast the client
sends. `Finalize` flushes the utterance in progress (`from_finalize: true`), `CloseStream` flushes it, sends
`Metadata` and closes the socket (1000), as Deepgram does.

Every connection is recorded (path, query, headers, the audio bytes, the client's text messages, what was sent
back) so tests can check what the client sent. `kill()` aborts every connection without a close frame and stops
listening (new connections are refused), like a service that died mid-call; `revive()` listens again.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from aiohttp import WSMsgType, web

from stack.services import free_port
from tests.support.loopback_app import LoopbackApp

WINDOW_S = 0.02  # the energy is measured per 20 ms


@dataclass
class Connection:
    """One websocket session as the stand-in saw it."""

    path: str
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    headers: dict[str, str]
    request_id: str
    audio: bytearray = field(default_factory=bytearray)
    audio_frames: int = 0  # binary messages received
    messages: list[dict] = field(default_factory=list)  # the client's JSON text messages
    sent: list[dict] = field(default_factory=list)  # what the stand-in sent back
    closed: bool = False
    close_reason: str = ""  # "close_stream", "client", "killed", "stopped"

    @property
    def message_types(self) -> list[str]:
        return [m.get("type", "") for m in self.messages]

    def sent_of(self, kind: str) -> list[dict]:
        return [m for m in self.sent if m.get("type") == kind]


@dataclass
class _Utterance:
    start: float  # audio time of its first voiced window
    last_voiced_end: float
    voiced_s: float = 0.0
    started_sent: bool = False
    next_interim: float = 0.0
    finalized: bool = False  # a Finalize already sent its transcript


@dataclass
class DeepgramStandIn:
    port: int = field(default_factory=free_port)
    transcript: str = "What time is it in Tokyo?"
    # Refuse a handshake whose Authorization is not `Token <api_key>` (401, as Deepgram does); None accepts any.
    api_key: str | None = None
    level: float = 0.01  # RMS (of full scale) above which a 20 ms window counts as voiced
    min_speech_s: float = 0.06  # voiced audio before an utterance starts (ignores clicks)
    endpoint_s: float = 0.3  # silence after speech that ends the utterance (speech_final)
    interim_every_s: float = 0.25  # audio time between interim results
    words_per_s: float = 2.5  # how fast the interim prefix grows with voiced audio
    connections: list[Connection] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The base URL to give the plugin (it adds the query string)."""
        return f"ws://127.0.0.1:{self.port}/v1/listen"

    # --- the protocol ------------------------------------------------------------------------------------------------

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        conn = Connection(
            path=request.path,
            query={k: v for k, v in request.query.items()},
            query_items=list(request.query.items()),
            headers=dict(request.headers),
            request_id=str(uuid.uuid4()),
        )
        self.connections.append(conn)
        if self.api_key is not None and request.headers.get("Authorization") != f"Token {self.api_key}":
            conn.closed, conn.close_reason = True, "unauthorized"
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": conn.request_id},
                status=401,
                headers={"dg-request-id": conn.request_id},
            )
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        ws.headers["dg-request-id"] = conn.request_id
        await ws.prepare(request)
        self._live[id(conn)] = (conn, ws, request)
        try:
            await self._session(conn, ws)
        finally:
            self._live.pop(id(conn), None)
            conn.closed = True
            if not conn.close_reason:
                conn.close_reason = "client"
        return ws

    async def _session(self, conn: Connection, ws: web.WebSocketResponse) -> None:
        q = conn.query
        rate = int(q.get("sample_rate", "16000"))
        channels = int(q.get("channels", "1"))
        interim = q.get("interim_results", "false") == "true"
        vad_events = q.get("vad_events", "false") == "true"
        utterance_end_s = int(q["utterance_end_ms"]) / 1000 if "utterance_end_ms" in q else None
        window_bytes = int(rate * WINDOW_S) * 2 * channels
        pending = bytearray()
        clock = 0.0  # audio time processed
        utt: _Utterance | None = None
        voiced_run = 0.0  # voiced audio before an utterance starts
        run_start = 0.0
        last_word_end: float | None = None  # for UtteranceEnd, after a final

        async def send(message: dict) -> None:
            conn.sent.append(message)
            await ws.send_str(json.dumps(message))

        def words(text: str, start: float, end: float) -> list[dict]:
            tokens = text.split()
            step = (end - start) / max(1, len(tokens))
            return [
                {
                    "word": tok.strip(".,?!;:\"'").lower(),
                    "start": round(start + i * step, 3),
                    "end": round(start + (i + 1) * step, 3),
                    "confidence": 0.98,
                    "punctuated_word": tok,
                }
                for i, tok in enumerate(tokens)
            ]

        async def results(text: str, u: _Utterance, *, is_final: bool, speech_final: bool, **extra) -> None:
            end = max(u.last_voiced_end, u.start)
            await send(
                {
                    "type": "Results",
                    "channel_index": [0, 1],
                    "duration": round(clock - u.start, 3),
                    "start": round(u.start, 3),
                    "is_final": is_final,
                    "speech_final": speech_final,
                    "channel": {
                        "alternatives": [
                            {
                                "transcript": text,
                                "confidence": 0.98 if text else 0.0,
                                "words": words(text, u.start, end) if text else [],
                            }
                        ]
                    },
                    "metadata": {
                        "request_id": conn.request_id,
                        "model_info": {
                            "name": f"general-{q.get('model', 'nova-3')}",
                            "version": "standin",
                            "arch": q.get("model", "nova-3"),
                        },
                        "model_uuid": "00000000-0000-0000-0000-000000000000",
                    },
                    "from_finalize": extra.get("from_finalize", False),
                }
            )

        def prefix(u: _Utterance) -> str:
            tokens = self.transcript.split()
            n = min(len(tokens), max(1, math.ceil(u.voiced_s * self.words_per_s)))
            return " ".join(tokens[:n])

        async def window(samples: np.ndarray) -> None:
            nonlocal utt, voiced_run, run_start, last_word_end, clock
            level = float(np.sqrt(np.mean((samples.astype(np.float32) / 32768.0) ** 2))) if samples.size else 0.0
            at = clock
            clock += WINDOW_S
            voiced = level > self.level
            if utt is None:
                if voiced:
                    if voiced_run == 0.0:
                        run_start = at
                    voiced_run += WINDOW_S
                    if voiced_run >= self.min_speech_s - 1e-9:
                        utt = _Utterance(start=run_start, last_voiced_end=clock, voiced_s=voiced_run)
                        utt.next_interim = clock + self.interim_every_s
                        voiced_run = 0.0
                        last_word_end = None
                        if vad_events:
                            await send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(utt.start, 3)})
                else:
                    voiced_run = 0.0
                    if (
                        last_word_end is not None
                        and utterance_end_s is not None
                        and clock - last_word_end >= utterance_end_s
                    ):
                        await send(
                            {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(last_word_end, 3)}
                        )
                        last_word_end = None
                return
            if voiced:
                utt.voiced_s += WINDOW_S
                utt.last_voiced_end = clock
                if interim and not utt.finalized and clock >= utt.next_interim:
                    utt.next_interim = clock + self.interim_every_s
                    await results(prefix(utt), utt, is_final=False, speech_final=False)
            elif clock - utt.last_voiced_end >= self.endpoint_s:
                await end_utterance()

        async def end_utterance(*, from_finalize: bool = False) -> None:
            nonlocal utt, last_word_end
            assert utt is not None
            if from_finalize:  # the words so far are final; the endpoint comes later
                await results(self.transcript, utt, is_final=True, speech_final=False, from_finalize=True)
                utt.finalized = True
                return
            text = "" if utt.finalized else self.transcript
            await results(text, utt, is_final=True, speech_final=True)
            last_word_end = utt.last_voiced_end
            utt = None

        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                conn.audio.extend(msg.data)
                conn.audio_frames += 1
                pending.extend(msg.data)
                while len(pending) >= window_bytes:
                    chunk = np.frombuffer(bytes(pending[:window_bytes]), dtype=np.int16)
                    del pending[:window_bytes]
                    await window(chunk)
            elif msg.type == WSMsgType.TEXT:
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    message = {"type": "<invalid json>", "raw": msg.data}
                conn.messages.append(message)
                kind = message.get("type")
                if kind == "KeepAlive":
                    continue
                if kind == "Finalize":
                    if utt is not None and not utt.finalized:
                        await end_utterance(from_finalize=True)
                    else:  # nothing to flush: Deepgram still answers with an empty final
                        empty = _Utterance(start=clock, last_voiced_end=clock)
                        await results("", empty, is_final=True, speech_final=False, from_finalize=True)
                elif kind == "CloseStream":
                    if utt is not None:
                        await end_utterance()
                    await send(
                        {
                            "type": "Metadata",
                            "transaction_key": "deprecated",
                            "request_id": conn.request_id,
                            "sha256": "",
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                            "duration": round(len(conn.audio) / (rate * 2 * channels), 3),
                            "channels": channels,
                            "models": ["00000000-0000-0000-0000-000000000000"],
                            "model_info": {},
                        }
                    )
                    conn.close_reason = "close_stream"
                    await ws.close(code=1000, message=b"")
                    break
                else:  # Deepgram closes with 1008 (policy violation) on a message it cannot parse
                    conn.close_reason = "bad_message"
                    await ws.close(code=1008, message=b"DATA-0000")
                    break
            else:  # CLOSE, CLOSING, ERROR
                break

    # --- the server --------------------------------------------------------------------------------------------------

    def start(self) -> DeepgramStandIn:
        self._live: dict[int, tuple[Connection, web.WebSocketResponse, web.Request]] = {}
        self._server = LoopbackApp("Deepgram stand-in", self.port, self._routes, handler_cancellation=True).start()
        self._loop, self._runner, self._site = self._server.loop, self._server.runner, self._server.site
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._listen)

    def _call(self, coro_fn) -> None:
        async def run() -> None:
            await coro_fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @property
    def live(self) -> list[Connection]:
        """Connections open now."""
        return [conn for conn, _, _ in list(self._live.values())]

    def kill(self, *, refuse_new: bool = True) -> None:
        """Aborts every open connection (TCP reset, no close frame) and, unless told otherwise, stops listening."""

        async def kill() -> None:
            if refuse_new and self._site is not None:
                await self._site.stop()
                self._site = None
            for conn, _, request in list(self._live.values()):
                conn.close_reason = "killed"
                if request.transport is not None:
                    request.transport.abort()

        self._call(kill)

    def revive(self) -> None:
        """Listens again (on the same port) after `kill()`."""

        async def revive() -> None:
            if self._site is None:
                self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                await self._site.start()

        self._call(revive)

    def stop(self) -> None:
        async def close_live() -> None:
            for conn, ws, _ in list(self._live.values()):
                conn.close_reason = conn.close_reason or "stopped"
                await ws.close(code=1001, message=b"")

        try:
            self._call(close_live)
        finally:
            self._server.stop()
