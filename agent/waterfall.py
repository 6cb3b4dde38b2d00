"""Per-turn latency waterfall: when each stage of a turn happened, counted from the end of the user's speech.

Stages (seconds after the user stopped speaking, by the VAD):
  vad_delay        how long before that the last voiced audio had arrived (the VAD's own share of the wait)
  transcript       final transcript ready
  end_of_turn      the turn was committed
  llm_request      the reply's first LLM (or fast-path) request began (may precede end_of_turn: preemptive)
  llm_first_token  the first text of the reply came out of the LLM node
  tts_request      that text reached the TTS
  tts_first_audio  the TTS gave its first audio
  audio_out        the agent's first audio frame was published to the room

Each record also says how the turn was answered: `path` is "fast" (the skills fast path, no LLM), "llm" (the LLM
answered in words) or "llm_tool" (the LLM called a tool), and `tools` names the tools that ran.

Each turn is logged, observed in the Prometheus histograms (agent.metrics), and sent to the room as JSON on
the text-stream topic `TOPIC` for clients and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import ConversationItemAddedEvent, UserStateChangedEvent

from agent import metrics

logger = logging.getLogger("agent.waterfall")

TOPIC = "voice-agent.waterfall"
STAGES = (
    "transcript",
    "end_of_turn",
    "llm_request",
    "llm_first_token",
    "tts_request",
    "tts_first_audio",
    "audio_out",
)

_clocks: weakref.WeakKeyDictionary[AgentSession, TurnClock] = weakref.WeakKeyDictionary()


@dataclass
class TurnClock:
    """Collects the marks of the turn in progress; one per session."""

    publish: Callable[[dict], None] | None = None
    marks: dict[str, float] = field(default_factory=dict)
    user_stopped_at: float | None = None
    turns: int = 0
    loud_at: float | None = None  # when the latest voiced input frame arrived
    voiced_until: float | None = None  # loud_at when the user stopped speaking
    path: str | None = None
    tools: list[str] = field(default_factory=list)

    def mark(self, stage: str, at: float | None = None) -> None:
        self.marks.setdefault(stage, time.time() if at is None else at)

    def reset(self) -> None:
        self.marks.clear()
        self.user_stopped_at = None
        self.path = None
        self.tools = []

    def took(self, path: str, tool: str | None = None) -> None:
        if self.path != "llm_tool":  # a tool call is what the turn was, whatever came after it
            self.path = path
        if tool:
            self.tools.append(tool)

    def finish(self, user_metrics: dict, agent_metrics: dict, interrupted: bool) -> dict | None:
        speech_end = user_metrics.get("stopped_speaking_at") or self.user_stopped_at
        if speech_end is None:
            return None
        if (delay := user_metrics.get("transcription_delay")) is not None:
            self.mark("transcript", speech_end + delay)
        if (delay := user_metrics.get("end_of_turn_delay")) is not None:
            self.mark("end_of_turn", speech_end + delay)
        if (started := agent_metrics.get("started_speaking_at")) is not None:
            self.mark("audio_out", started)
        self.turns += 1
        record = {
            "turn": self.turns,
            "speech_end": speech_end,
            "interrupted": interrupted,
            **{stage: round(self.marks[stage] - speech_end, 4) for stage in STAGES if stage in self.marks},
        }
        if self.path:
            record |= {"path": self.path, "tools": self.tools}
        if self.voiced_until is not None and abs(speech_end - self.voiced_until) < 2.0:
            record["vad_delay"] = round(speech_end - self.voiced_until, 4)
        self.reset()
        return record


def attach(session: AgentSession, room: rtc.Room | None = None) -> TurnClock:
    """Starts timing every turn of `session`; with a room, each record is also sent to it."""
    tasks: set[asyncio.Task] = set()
    # The clock lives in `_clocks`, whose key (the session) is weak but whose value is not: nothing the clock holds
    # may lead back to the session, or the entry is never dropped and each call stays in memory for good (~9 MB a
    # call in bench.soak). A job's room does lead back (its JobContext listens to it and holds the session), so the
    # clock keeps the room by a weak reference only.
    room_ref = weakref.ref(room) if room is not None else None

    def publish(record: dict) -> None:
        target = room_ref() if room_ref is not None else None
        if target is None or not target.isconnected():
            return
        task = asyncio.ensure_future(target.local_participant.send_text(json.dumps(record), topic=TOPIC))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    clock = TurnClock(publish=publish)
    _clocks[session] = clock
    pending_user: dict = {}

    @session.on("user_state_changed")
    def _on_user_state(ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            clock.reset()
            pending_user.clear()
        elif ev.old_state == "speaking":
            clock.user_stopped_at = time.time()
            clock.voiced_until = clock.loud_at

    @session.on("conversation_item_added")
    def _on_item(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if item.type != "message":
            return
        timings = dict(item.metrics or {})
        if item.role == "user":
            pending_user.clear()
            pending_user.update(timings or {"stopped_speaking_at": clock.user_stopped_at})
            return
        if item.role != "assistant" or not pending_user:
            return  # a greeting or a spoken notice, not the answer to a turn
        record = clock.finish(pending_user, timings, bool(getattr(item, "interrupted", False)))
        pending_user.clear()
        if record is None:
            return
        logger.info("turn %s", " ".join(f"{k}={v}" for k, v in record.items() if k != "speech_end"))
        metrics.observe_turn(record)
        if clock.publish is not None:
            clock.publish(record)

    return clock


LOUD = 10 ** (-40 / 20) * 32768  # -40 dBFS: voice, not room noise


async def heard(session: AgentSession, audio: AsyncIterable[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    """Passes the user's audio to the STT, noting when voiced audio last arrived."""
    async for frame in audio:
        if (clock := _clocks.get(session)) is not None and frame.samples_per_channel:
            pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
            if np.sqrt(np.mean(pcm * pcm)) > LOUD:
                clock.loud_at = time.time()
        yield frame


def took(session: AgentSession | None, path: str, tool: str | None = None) -> None:
    """Notes how the turn in progress is answered (see the module's docstring)."""
    if session is not None and (clock := _clocks.get(session)) is not None:
        clock.took(path, tool)


def mark(session: AgentSession | None, stage: str) -> None:
    if session is not None and (clock := _clocks.get(session)) is not None:
        clock.mark(stage)


async def timed_text(session: AgentSession, text: AsyncIterable[str]) -> AsyncIterator[str]:
    """Passes the reply text to the TTS, marking when its first piece arrives."""
    async for piece in text:
        if piece.strip():
            mark(session, "tts_request")
        yield piece


async def timed_audio(session: AgentSession, audio: AsyncIterable[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    async for frame in audio:
        mark(session, "tts_first_audio")
        yield frame
