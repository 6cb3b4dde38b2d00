"""The audio path, built from settings: VAD -> STT -> LLM -> TTS, each stage one provider module.

Models load once per worker process (`load`), and every session shares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import sys
import time
from dataclasses import dataclass
from functools import lru_cache

import httpx
import openai as openai_sdk
from livekit import api
from livekit.agents import Agent, AgentServer, AgentSession, JobRequest, llm, stt, tts, vad
from livekit.agents.voice import ConversationItemAddedEvent
from livekit.plugins import openai, silero

from agent import personas
from agent.memory import MemoryStore
from agent.settings import AgentSettings
from agent.skills import UnknownSkill, check, intents, units
from agent.skills.notes import NoteStore

logger = logging.getLogger("agent.pipeline")


@dataclass
class Shared:
    """What every session of this worker shares: the VAD and turn detector (models load once)."""

    vad: vad.VAD
    notes: NoteStore
    memory: MemoryStore
    turn_detector: object | None = None


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    # Building a TLS context reads the CA bundle: 20-30 ms of CPU, and 0.5-0.8 s of blocked event loop when calls
    # arrived together in the concurrency benchmark (three clients per session). One context serves them all.
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def openai_client(base_url: str, api_key: str | None) -> openai_sdk.AsyncClient:
    """An OpenAI SDK client like the plugins' own (same timeouts and pool), on the process's shared TLS context."""
    return openai_sdk.AsyncClient(
        api_key=api_key or "no-key",
        base_url=base_url,
        max_retries=0,
        http_client=httpx.AsyncClient(
            verify=_tls(),
            timeout=httpx.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120),
        ),
    )


def build_stt(s: AgentSettings, vad: vad.VAD | None = None) -> stt.STT:
    """The chosen STT; a cloud one falls back to the local Whisper when it fails. With the worker's VAD the local STT
    streams: interim transcripts, and the final one ready at end of speech."""
    choice = s.stt_choice
    if choice == "deepgram":
        from livekit.plugins import deepgram

        cloud: stt.STT = deepgram.STT(
            model=s.deepgram_model,
            language=s.stt_language,
            interim_results=True,
            api_key=s.deepgram_api_key or "",
            base_url=s.deepgram_base_url,
        )
    elif choice == "openai":
        cloud = openai.STT(
            model=s.stt_remote_model,
            language=s.stt_language,
            use_realtime=False,
            client=openai_client(*s.stt_endpoint),
        )
        if s.provider_fallback:
            # Per utterance: the VAD cuts it, and if the server fails, local Whisper decodes the same audio, so the
            # turn in progress is not lost.
            vad = vad or build_vad(s)
            return stt.StreamAdapter(stt=stt.FallbackAdapter([cloud, _local_stt(s, None)], vad=vad), vad=vad)
        return cloud
    else:
        return _local_stt(s, vad)
    if not s.provider_fallback:
        return cloud
    from agent.providers.stt_fallback import ReplayingFallbackAdapter

    # When the streaming provider fails, the local STT takes over from the start of the utterance in progress.
    # One quick retry: a service that refuses connections should not leave the person unheard for seconds.
    # The local STT streams only with a VAD, and the adapter takes only streaming STTs: never build it without one.
    vad = vad or build_vad(s)
    return ReplayingFallbackAdapter([cloud, _local_stt(s, vad)], vad=vad, retry_interval=0.5)


def _local_stt(s: AgentSettings, vad: vad.VAD | None) -> stt.STT:
    from agent.providers.whisper_stt import WhisperSTT

    return WhisperSTT(
        model=s.stt_model,
        language=s.stt_language,
        beam_size=s.stt_beam_size,
        cpu_threads=s.cpu_threads,
        vad=vad if s.stt_streaming else None,
        interim_interval_s=s.stt_interim_interval_s,
    )


def build_llm(s: AgentSettings) -> llm.LLM:
    """The remote LLM (LLM_BASE_URL's server, or OpenAI with OPENAI_API_KEY), falling back to the local one if it
    fails; else the local one."""
    if s.llm_choice == "openai":
        remote = openai.LLM(model=s.llm_model, client=openai_client(*s.llm_endpoint))
        if not (s.provider_fallback and _local_llm_available()):
            return remote
        return llm.FallbackAdapter([remote, _local_llm(s)])
    return _local_llm(s)


def _local_llm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _local_llm(s: AgentSettings) -> llm.LLM:
    from agent.providers.llama_llm import LlamaLLM

    return LlamaLLM(
        model_path=gguf_path(s),
        n_ctx=s.llm_context_tokens,
        n_threads=s.llm_threads,
        n_threads_batch=s.cpu_threads,
        temperature=s.llm_temperature,
        max_tokens=s.llm_max_tokens,
    )


def gguf_path(s: AgentSettings) -> str:
    """The local LLM's file: LLM_GGUF_PATH, else LLM_GGUF_URL (downloaded once), else the packaged model."""
    from agent.models import download, packaged_gguf

    if s.llm_gguf_path:
        return s.llm_gguf_path
    return str(download(s.llm_gguf_url) if s.llm_gguf_url else packaged_gguf())


def build_tts(s: AgentSettings, voice: str | None = None, speed: float = 1.0) -> tts.TTS:
    """The chosen TTS with the configured voice, or a persona's voice and speaking rate; a cloud one falls back to
    the local hibari when it fails."""
    from agent.providers.first_clause import FirstClauseTokenizer

    choice = s.tts_choice
    if choice == "elevenlabs":
        from livekit.plugins import elevenlabs

        cloud: tts.TTS = elevenlabs.TTS(
            voice_id=s.elevenlabs_voice_id,
            model=s.elevenlabs_model,
            encoding="pcm_24000",  # raw PCM: no MP3 decoding, and the local fallback's rate
            api_key=s.eleven_api_key or "",
            **({"base_url": s.elevenlabs_base_url} if s.elevenlabs_base_url else {}),
        )
    elif choice == "openai":
        remote = openai.TTS(
            model=s.tts_remote_model,
            voice=voice if voice and voice != s.tts_voice else s.tts_remote_voice,
            speed=s.tts_speed * speed,
            response_format="pcm",
            client=openai_client(*s.tts_endpoint),
        )
        cloud = tts.StreamAdapter(tts=remote, sentence_tokenizer=FirstClauseTokenizer())
    else:
        return _local_tts(s, voice, speed)
    if not s.provider_fallback:
        return cloud
    return tts.FallbackAdapter([cloud, _local_tts(s, None, speed)])


def _local_tts(s: AgentSettings, voice: str | None, speed: float) -> tts.TTS:
    from agent.providers.first_clause import FirstClauseTokenizer
    from agent.providers.hibari_tts import HibariTTS

    # One thread: hibari runs ~100x real time on one core, and a second onnxruntime thread spins between sentences,
    # taking CPU from the LLM that is writing the next one.
    options = {"speed": s.tts_speed * speed, "threads": 1, "voice_base_url": s.tts_voice_base_url}
    try:
        synth = HibariTTS(voice=voice or s.tts_voice, **options)
    except Exception as exc:  # a persona's voice that is not packaged and cannot be downloaded here
        logger.warning("voice %r is not available (%s); using %r", voice, exc, s.tts_voice)
        synth = HibariTTS(voice=s.tts_voice, **options)
    # Sentence by sentence, the first clause at once.
    return tts.StreamAdapter(tts=synth, sentence_tokenizer=FirstClauseTokenizer())


def build_vad(s: AgentSettings) -> vad.VAD:
    return silero.VAD.load(min_silence_duration=s.vad_min_silence_s)


def build_turn_detector(s: AgentSettings) -> object | None:
    """TURN_DETECTION=text: the VAD's silence ends a turn unless the transcript stops mid-sentence (agent/turns.py).

    TURN_DETECTION=model: livekit's audio end-of-turn model, run locally (weights inside livekit-local-inference).

    The version is pinned: left unset, livekit picks its cloud model ("v1", a WebSocket to LiveKit's inference
    gateway) whenever LIVEKIT_DEV_MODE=1 (the `dev` and `console` commands set it) and the API key and secret are in
    the environment, which offline means a failed connection per call before it falls back to this local model.
    """
    if s.turn_detection == "text":
        from agent.turns import TextTurnDetector

        return TextTurnDetector()
    if s.turn_detection != "model":
        return None
    from livekit.agents.inference import TurnDetector

    return TurnDetector(version="v1-mini")


_warmed = False


def load(s: AgentSettings, warm_agent: Agent | None = None) -> Shared:
    """Loads every model once per process and warms the LLM's prompt prefix.

    The providers keep their engines in process-wide caches, so the per-session instances that
    `build_*` make afterwards are cheap.
    """
    db = s.data_dir / "agent.db"
    shared = Shared(vad=build_vad(s), notes=NoteStore(db), memory=MemoryStore(db))
    units.registry()  # pint parses its unit definitions once (~1 s)
    if s.skill_fast_path and s.intent_layer:
        intents.shared()  # the intent layer's embedding model and its examples (~1 s)
    shared.turn_detector = build_turn_detector(s)
    build_stt(s, shared.vad)  # as sessions build it (a cloud STT's local fallback streams with the VAD)
    build_tts(s)
    model = build_llm(s)
    global _warmed
    # Once per process: thread jobs run this set-up again, and re-reading the prefix would hold the model for seconds.
    if warm_agent is not None and hasattr(model, "warm") and not _warmed:
        _warmed = True
        ctx = llm.ChatContext()
        ctx.add_message(role="system", content=warm_agent.instructions)
        ctx.add_message(role="user", content="Hello")
        logger.info("LLM prompt prefix warmed in %.2f s", model.warm(ctx, list(warm_agent.tools)))
    return shared


def turn_handling(s: AgentSettings, shared: Shared) -> dict:
    return {
        "turn_detection": shared.turn_detector if shared.turn_detector is not None else "vad",
        "endpointing": {"min_delay": s.endpointing_min_delay_s, "max_delay": s.endpointing_max_delay_s},
        # The reply starts on the STT's preflight transcript, ~50 ms before the VAD's silence confirms the turn. The
        # local TTS voices its first clause then too (cheap); a paid cloud TTS waits for the turn to be certain.
        "preemptive_generation": {"enabled": True, "preemptive_tts": s.tts_choice == "local"},
        "interruption": {
            # VAD barge-in, always: left unset, livekit turns on its cloud interruption model in `dev`/`console`.
            "mode": "vad",
            "min_duration": s.interrupt_min_speech_s,
            "resume_false_interruption": s.resume_false_interruption,
            "false_interruption_timeout": s.false_interruption_timeout_s,
        },
    }


def dispatch_options(metadata: str) -> dict:
    """The JSON object a client may put in the dispatch metadata; anything else means no options."""
    try:
        options = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        return {}
    return options if isinstance(options, dict) else {}


class Capacity:
    """Accepts calls while fewer than MAX_SESSIONS are running or about to start, and reports the worker's load so
    that livekit-server offers it calls exactly while it has a free slot.

    livekit-server offers a job only to workers whose load is below its `agents.target_load` (0.7 by default; see
    livekit.yaml), so the load is scaled to reach that value when the last slot is taken: with MAX_SESSIONS=4 and
    load = sessions / 4, three calls (0.75) closed the door on the fourth.

    livekit-agents' own check guesses each starting job's load as load_threshold / num_idle_processes (1.0 here) while
    the worker is idle, so a second call arriving at the same moment was refused, and with one worker the server gave
    it up: the caller never got an agent. Counting accepted-but-not-yet-running jobs ourselves avoids that guess. A
    call frees its slot when its session closes, not seconds later when livekit's job has finished shutting down.
    """

    def __init__(self, server: AgentServer, max_sessions: int, target_load: float) -> None:
        self._server = server
        self.max_sessions = max_sessions
        self.target_load = target_load
        self._starting: dict[str, float] = {}  # job id -> when it was accepted
        self._live: set[str] = set()  # jobs whose session is running
        self._ran: set[str] = set()  # accepted jobs seen among the server's active jobs
        self._telling: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def taken(self) -> int:
        running = {info.job.id for info in self._server.active_jobs}
        now = time.monotonic()
        # Accepted jobs count until their entrypoint runs (`started`); one that ended before it did, or that never
        # showed up within 30 s, frees its slot. (A job is among the server's active jobs well before its entrypoint
        # runs: while a thread for it is made, other calls must still see its slot taken.)
        self._ran.update(i for i in self._starting if i in running)
        self._starting = {
            i: t for i, t in self._starting.items() if i in running or (i not in self._ran and now - t < 30)
        }
        self._live &= running  # a job that ended without its session closing
        return len(self._live) + len(self._starting)

    def load(self) -> float:
        taken = self.taken()
        return 1.0 if taken >= self.max_sessions else self.target_load * taken / self.max_sessions

    def _report_now(self) -> None:
        """livekit-agents 1.8.9 sends the worker's load to livekit-server only every 2.5 s, so for seconds after a call
        ended the server still saw the worker full and turned callers away. A slot taken or freed is reported at once.
        (Private surface of AgentServer: `_worker_load`, `_update_worker_status`; tests/agent/test_capacity.py checks
        they exist at the pinned version.)"""
        server, loop = self._server, self._loop
        update = getattr(server, "_update_worker_status", None)
        if loop is None or update is None or not hasattr(server, "_worker_load"):
            return

        def send() -> None:
            server._worker_load = self.load()  # type: ignore[attr-defined]
            task = asyncio.ensure_future(update())
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)

        with contextlib.suppress(RuntimeError):  # the worker's loop is closed: it is shutting down
            loop.call_soon_threadsafe(send)

    async def on_request(self, request: JobRequest) -> None:
        from agent.settings import get_settings

        self._loop = asyncio.get_running_loop()  # the worker's own loop (jobs run on threads of their own)

        if self.taken() >= self.max_sessions:
            logger.warning(
                "refusing a call: %d sessions running, %d starting (MAX_SESSIONS=%d)",
                len(self._live),
                len(self._starting),
                self.max_sessions,
            )
            # Not terminate: livekit-server then offers the call to the next worker with a free slot.
            await request.reject(terminate=False)
            phone_call = dispatch_options(request.job.metadata).get("mode") == "phone"
            task = asyncio.create_task(tell_if_unserved(request.room.name, phone_call, get_settings()))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)
            return
        self._starting[request.id] = time.monotonic()
        self._report_now()
        await request.accept()

    def started(self, job_id: str) -> None:
        self._starting.pop(job_id, None)
        self._ran.discard(job_id)
        self._live.add(job_id)

    def finished(self, job_id: str) -> None:
        self._starting.pop(job_id, None)
        self._ran.discard(job_id)
        self._live.discard(job_id)
        self._report_now()


def server_api(s: AgentSettings) -> api.LiveKitAPI:
    """livekit-server's API at LIVEKIT_URL (ws[s]:// becomes http[s]://), with the worker's keys; close it after use."""
    return api.LiveKitAPI(s.livekit_url.replace("ws", "http", 1), s.livekit_api_key, s.livekit_api_secret)


BUSY = '{"agent": "busy"}'  # room metadata while a person waits and no worker can take the call
ENDED = '{"agent": "ended"}'  # room metadata once the agent ended the call on purpose (no agent is sent back)
UNSERVED_AFTER_S = 1.5  # how long other workers have to take a call this one refused


async def tell_if_unserved(room_name: str, phone_call: bool, s: AgentSettings) -> None:
    """After refusing a call, and once other workers had their chance: if none took it, tell the caller. A phone call
    is refused (its room deleted: livekit-sip answers 486 Busy Here instead of ringing on); anyone else reads "busy"
    in the room's metadata (the web page says so and offers a retry; the launcher's watcher dispatches the agent
    again when a slot frees)."""
    await asyncio.sleep(UNSERVED_AFTER_S)
    lk = server_api(s)
    try:
        ours = [d for d in await lk.agent_dispatch.list_dispatch(room_name) if d.agent_name == s.agent_name]
        if ours and max(ours, key=lambda d: d.state.created_at).state.jobs:
            return  # another worker took it
        if phone_call:
            logger.warning("no agent free for the phone call in room %s: refusing it (486)", room_name)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
        else:
            logger.warning("no agent free for room %s: told the caller it is busy", room_name)
            await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room_name, metadata=BUSY))
    except Exception as exc:  # the room may be gone already (the caller left); telling is best effort
        logger.info("could not tell room %s that no agent is free: %s", room_name, exc)
    finally:
        await lk.aclose()


async def mark_room(room_name: str, metadata: str, s: AgentSettings) -> None:
    """Sets a room's metadata (what clients read to know whether an agent is coming)."""
    lk = server_api(s)
    try:
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room_name, metadata=metadata))
    except Exception as exc:  # the room may be gone already; telling is best effort
        logger.info("could not mark room %s: %s", room_name, exc)
    finally:
        await lk.aclose()


def log_turn_metrics(session: AgentSession) -> None:
    @session.on("conversation_item_added")
    def _on_item(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        metrics = getattr(item, "metrics", None)
        if metrics:
            fields = " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float))
            logger.info("turn %s: %s", getattr(item, "role", "?"), fields)


def fail(message: str) -> None:
    print(f"agent: {message}", file=sys.stderr)
    sys.exit(2)


def preflight(s: AgentSettings, check_server: bool = True) -> None:
    """Checks what would otherwise fail later as a traceback wall, and stops with one line."""
    from agent.models import ModelMissingError, hibari_voice, whisper_model

    try:
        check(s.skills)
        personas.get(s.persona)
    except (UnknownSkill, personas.UnknownPersona) as exc:
        fail(str(exc))
    for problem in s.missing_keys():
        fail(problem)
    try:
        whisper_model(s.stt_model)  # the local STT is the default and every cloud STT's fallback
        hibari_voice(s.tts_voice, s.tts_voice_base_url)  # so is the local TTS; a voice not packaged is fetched now
        if s.llm_choice == "local":
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                fail("llama-cpp-python is not installed: run `bash scripts/setup` (it builds it for this CPU)")
            gguf_path(s)  # joins the packaged model, or downloads LLM_GGUF_URL, before the worker registers
    except ModelMissingError as exc:
        fail(str(exc))
    if check_server:
        asyncio.run(_check_server(s))


async def _check_server(s: AgentSettings) -> None:
    lkapi = server_api(s)
    try:
        await lkapi.room.list_rooms(api.ListRoomsRequest())
    except api.TwirpError as exc:
        if exc.status in (401, 403) or "unauthenticated" in str(exc.code):
            fail(f"livekit-server at {s.livekit_url} rejected LIVEKIT_API_KEY/LIVEKIT_API_SECRET: set the keys it uses")
        fail(f"livekit-server at {s.livekit_url} answered {exc.status}: {exc.message}")
    except Exception as exc:  # connection refused, DNS, TLS
        fail(f"cannot reach livekit-server at {s.livekit_url} ({type(exc).__name__}): start it or fix LIVEKIT_URL")
    finally:
        await lkapi.aclose()
