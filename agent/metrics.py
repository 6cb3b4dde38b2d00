"""Prometheus metrics of the agent worker, per session and per turn, served with the worker's own gauges.

`AgentServer(prometheus_port=AGENT_METRICS_PORT)` serves the default registry at /metrics; with job processes
(PROMETHEUS_MULTIPROC_DIR set) prometheus_client's multiprocess mode gathers every process. Labels stay low in
cardinality: stage, role, tool name, outcome; never a room, a participant or a transcript.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator

from livekit import rtc
from livekit.agents import AgentSession, llm, stt, tts
from livekit.agents.voice import (
    AgentFalseInterruptionEvent,
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    FunctionToolsExecutedEvent,
)
from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger("agent.metrics")

# Seconds: from tens of milliseconds (a cached fast path) to the slowest LLM turns.
BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)

SESSIONS_ACTIVE = Gauge("voice_agent_sessions_active", "Sessions in progress", multiprocess_mode="livesum")
SESSIONS = Counter("voice_agent_sessions", "Sessions started")
TURNS = Counter("voice_agent_turns", "User turns answered", ["outcome"])
STAGE = Histogram(
    "voice_agent_turn_stage_seconds",
    "When each stage of a turn happened, after the end of the user's speech (the waterfall)",
    ["stage"],
    buckets=BUCKETS,
)
END_OF_UTTERANCE = Histogram(
    "voice_agent_end_of_utterance_delay_seconds", "End of speech to the turn being committed", buckets=BUCKETS
)
STT_FINAL = Histogram("voice_agent_stt_final_delay_seconds", "End of speech to the final transcript", buckets=BUCKETS)
LLM_TTFT = Histogram("voice_agent_llm_ttft_seconds", "LLM request to its first text", buckets=BUCKETS)
TTS_TTFB = Histogram("voice_agent_tts_ttfb_seconds", "Text to the TTS to its first audio", buckets=BUCKETS)
VOICE_TO_VOICE = Histogram(
    "voice_agent_voice_to_voice_seconds", "End of the user's speech to the agent's first audio", buckets=BUCKETS
)
AUDIO_FRAMES = Counter("voice_agent_audio_frames", "Audio frames heard and spoken", ["direction"])
INTERRUPTIONS = Counter("voice_agent_interruptions", "Agent replies cut off by the user")
FALSE_INTERRUPTIONS = Counter("voice_agent_false_interruptions", "Pauses for a sound that was not a turn", ["resumed"])
TOOL_CALLS = Counter("voice_agent_tool_calls", "Tool calls by tool, outcome and path", ["tool", "outcome", "path"])
PROVIDER_ERRORS = Counter("voice_agent_provider_errors", "Errors from providers", ["role", "recoverable"])
FALLBACKS = Counter("voice_agent_provider_fallbacks", "A provider failed and the next one took over", ["role"])

for direction in ("in", "out"):
    AUDIO_FRAMES.labels(direction)
for role in ("stt", "llm", "tts"):
    FALLBACKS.labels(role)
for stage in ("transcript", "end_of_turn", "llm_request", "llm_first_token", "tts_request", "tts_first_audio"):
    STAGE.labels(stage)
STAGE.labels("audio_out")


def observe_turn(record: dict) -> None:
    """One waterfall record (see agent.waterfall): stage times after the end of the user's speech."""
    TURNS.labels("interrupted" if record.get("interrupted") else "answered").inc()
    for stage, value in record.items():
        if stage in ("turn", "speech_end", "interrupted") or not isinstance(value, float | int):
            continue
        STAGE.labels(stage).observe(max(0.0, value))
    if "end_of_turn" in record:
        END_OF_UTTERANCE.observe(max(0.0, record["end_of_turn"]))
    if "transcript" in record:
        STT_FINAL.observe(max(0.0, record["transcript"]))
    if "llm_request" in record and "llm_first_token" in record:
        LLM_TTFT.observe(max(0.0, record["llm_first_token"] - record["llm_request"]))
    if "tts_request" in record and "tts_first_audio" in record:
        TTS_TTFB.observe(max(0.0, record["tts_first_audio"] - record["tts_request"]))
    if "audio_out" in record:
        VOICE_TO_VOICE.observe(max(0.0, record["audio_out"]))


def tool_called(tool: str, outcome: str, path: str) -> None:
    TOOL_CALLS.labels(tool, outcome, path).inc()


def attach(session: AgentSession, fast_path_prefix: str) -> None:
    """Counts what happens in `session`; tool calls whose id starts with `fast_path_prefix` came from the fast path."""
    SESSIONS.inc()
    SESSIONS_ACTIVE.inc()

    @session.on("close")
    def _on_close(_ev: CloseEvent) -> None:
        SESSIONS_ACTIVE.dec()

    @session.on("conversation_item_added")
    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if ev.item.type == "message" and ev.item.role == "assistant" and getattr(ev.item, "interrupted", False):
            INTERRUPTIONS.inc()

    @session.on("agent_false_interruption")
    def _on_false_interruption(ev: AgentFalseInterruptionEvent) -> None:
        FALSE_INTERRUPTIONS.labels(str(ev.resumed).lower()).inc()

    @session.on("function_tools_executed")
    def _on_tools(ev: FunctionToolsExecutedEvent) -> None:
        for call, output in zip(ev.function_calls, ev.function_call_outputs, strict=False):
            outcome = "error" if output is not None and output.is_error else "ok"
            tool_called(call.name, outcome, "fast_path" if call.call_id.startswith(fast_path_prefix) else "llm")

    @session.on("error")
    def _on_error(ev: ErrorEvent) -> None:
        role = next(
            (
                name
                for name, kind in (("llm", llm.LLM), ("stt", stt.STT), ("tts", tts.TTS))
                if isinstance(ev.source, kind)
            ),
            "other",
        )
        PROVIDER_ERRORS.labels(role, str(bool(getattr(ev.error, "recoverable", False))).lower()).inc()


def watch_fallbacks(role: str, provider: object) -> None:
    """Counts and logs each switch of a FallbackAdapter (`stt`, `llm` or `tts`) away from a failing provider."""
    provider = getattr(provider, "wrapped_stt", provider)  # a fallback inside a VAD stream adapter
    if not isinstance(provider, stt.FallbackAdapter | tts.FallbackAdapter | llm.FallbackAdapter):
        return

    def on_change(ev) -> None:
        failed = getattr(ev, role)
        if not ev.available:
            FALLBACKS.labels(role).inc()
            logger.warning("%s provider %s failed; the next provider takes over", role, failed.label)
        else:
            logger.info("%s provider %s is available again", role, failed.label)

    provider.on(f"{role}_availability_changed", on_change)


async def count_frames(direction: str, audio: AsyncIterable[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    frames = AUDIO_FRAMES.labels(direction)
    async for frame in audio:
        frames.inc()
        yield frame
