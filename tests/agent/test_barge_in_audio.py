"""Barge-in at the audio level: the whole voice pipeline (Silero VAD, Whisper, hibari, a scripted LLM) with no room.

A scripted microphone feeds 16 kHz frames in real time and a simulated speaker plays the agent's audio in real time,
so what these tests measure is what a caller would hear: how soon the agent goes quiet when spoken over, and that a
short noise does not cut its answer off. Turn handling is the shipped one (`pipeline.turn_handling` on the default
settings): VAD turn detection, interrupt_min_speech_s, and a pausable output, so speech over the agent first pauses
it and the final transcript then interrupts it (or, after false_interruption_timeout_s without words, resumes it).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice import SpeechHandle, io

from agent import pipeline
from agent.providers.hibari_tts import HibariTTS, load_hibari
from agent.providers.whisper_stt import WhisperSTT
from agent.settings import AgentSettings
from tests.support.scripted_llm import ScriptedLLM
from tests.support.speech import SAMPLE_RATE, rms, speak

pytestmark = pytest.mark.models

FRAME_S = 0.02
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_S)

QUESTION = "Can you tell me about the history of the Roman Empire?"
INTERRUPTION = "Wait, stop, I have another question about that."
LONG_REPLY = (  # about 15 s of speech
    "The Roman Empire grew out of the Roman Republic in the first century before Christ. "
    "Its first emperor was Augustus, who ruled for more than forty years. "
    "At its height the empire stretched from Britain in the north to Egypt in the south. "
    "Roads, aqueducts and a common law held its many provinces together."
)
SHORT_REPLY = "Of course. What is your other question?"


# --- a microphone that speaks from a script, in real time --------------------------------------------------------


@dataclass
class Clip:
    samples: np.ndarray
    started_at: float | None = None  # wall time its first sample reached the agent
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedMic(io.AudioInput):
    """Silence, except for the clips `play` queues; one 20 ms frame per 20 ms of wall time."""

    def __init__(self) -> None:
        super().__init__(label="ScriptedMic")
        self._clips: collections.deque[Clip] = collections.deque()
        self._pos = 0
        self._t0: float | None = None
        self._sent = 0

    def play(self, samples: np.ndarray) -> Clip:
        clip = Clip(samples.astype(np.int16))
        self._clips.append(clip)
        return clip

    async def __anext__(self) -> rtc.AudioFrame:
        now = time.time()
        if self._t0 is None:
            self._t0 = now
        delay = self._t0 + self._sent * FRAME_S - now
        if delay > 0:
            await asyncio.sleep(delay)
        self._sent += 1
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._clips:
            clip = self._clips[0]
            if clip.started_at is None:
                clip.started_at = time.time() + filled / SAMPLE_RATE
            take = min(FRAME_SAMPLES - filled, len(clip.samples) - self._pos)
            out[filled : filled + take] = clip.samples[self._pos : self._pos + take]
            filled += take
            self._pos += take
            if self._pos >= len(clip.samples):
                clip.ended_at = time.time() + filled / SAMPLE_RATE
                clip.done.set()
                self._clips.popleft()
                self._pos = 0
        return rtc.AudioFrame(out.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)


# --- a speaker that plays the agent's audio in real time ---------------------------------------------------------


@dataclass
class Segment:
    """One playback segment (one agent utterance) as the speaker played it."""

    pushed: float = 0.0  # seconds of audio the agent captured
    played: float = 0.0  # seconds the speaker played
    flushed: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    interrupted: bool | None = None
    # ("pause" or "clear_buffer", wall time, position played) each time it went quiet mid-segment
    stops: list[tuple[str, float, float]] = field(default_factory=list)


class RealtimeSpeaker(io.AudioOutput):
    """Plays captured audio at real time in 10 ms steps; pausable, like the room's audio output."""

    def __init__(self) -> None:
        super().__init__(label="RealtimeSpeaker", capabilities=io.AudioOutputCapabilities(pause=True))
        self.segments: list[Segment] = []
        self.events: list[tuple[float, str]] = []
        self._current: Segment | None = None
        self._chunks: collections.deque[float] = collections.deque()  # durations of queued 10 ms chunks
        self._wake = asyncio.Event()
        self._playing = asyncio.Event()
        self._playing.set()
        self._discarding = False
        self._task: asyncio.Task[None] | None = None
        self.segment_started = asyncio.Event()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._task is None:
            self._task = asyncio.create_task(self._play())
        if self._discarding:  # the rest of a segment cleared while it was still being captured
            return
        if self._current is None:
            self._current = Segment()
            self.segments.append(self._current)
        step = max(1, frame.sample_rate // 100)
        for start in range(0, frame.samples_per_channel, step):
            self._chunks.append(min(step, frame.samples_per_channel - start) / frame.sample_rate)
        self._current.pushed += frame.duration
        self._wake.set()

    def flush(self) -> None:
        super().flush()
        self.events.append((time.time(), "flush"))
        if self._discarding:
            self._discarding = False
            return
        if self._current is not None:
            self._current.flushed = True
            self._wake.set()

    def clear_buffer(self) -> None:
        now = time.time()
        self.events.append((now, "clear_buffer"))
        seg = self._current
        if seg is None:
            return
        seg.stops.append(("clear_buffer", now, seg.played))
        self._discarding = not seg.flushed
        self._chunks.clear()
        self._finish(interrupted=True)

    def pause(self) -> None:
        super().pause()
        if self._playing.is_set():
            now = time.time()
            self.events.append((now, "pause"))
            if self._current is not None:
                self._current.stops.append(("pause", now, self._current.played))
        self._playing.clear()

    def resume(self) -> None:
        super().resume()
        if not self._playing.is_set():
            self.events.append((time.time(), "resume"))
        self._playing.set()

    def _finish(self, *, interrupted: bool) -> None:
        seg = self._current
        assert seg is not None
        self._current = None
        seg.finished_at = time.time()
        seg.interrupted = interrupted
        self.events.append((seg.finished_at, f"finished interrupted={interrupted}"))
        self.on_playback_finished(playback_position=seg.played, interrupted=interrupted)

    async def _play(self) -> None:
        clock: float | None = None
        while True:
            seg = self._current
            if seg is None or not self._chunks:
                if seg is not None and seg.flushed:
                    self._finish(interrupted=False)
                    continue
                clock = None  # ran dry: the next audio starts when it arrives
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._playing.is_set():
                clock = None
                await self._playing.wait()
                continue
            duration = self._chunks.popleft()
            now = time.time()
            clock = now if clock is None else max(clock, now - 0.1)
            if seg.started_at is None:
                seg.started_at = now
                self.events.append((now, "playback_started"))
                self.on_playback_started(created_at=now)
                self.segment_started.set()
            clock += duration
            await asyncio.sleep(max(0.0, clock - time.time()))
            if seg is self._current:
                seg.played += duration

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# --- the session -------------------------------------------------------------------------------------------------


def voiced_onset(samples: np.ndarray, level: float = 0.02) -> float:
    """Seconds from the start of a clip to its first 10 ms frame above level."""
    for start in range(0, len(samples), 160):
        if rms(samples[start : start + 160]) > level:
            return start / SAMPLE_RATE
    raise AssertionError("clip is silent")


def newest_user_text(chat_ctx: llm.ChatContext) -> str:
    users = [item for item in chat_ctx.items if item.type == "message" and item.role == "user"]
    return (users[-1].text_content or "") if users else ""


def reply_script(chat_ctx: llm.ChatContext) -> str:
    return SHORT_REPLY if "another question" in newest_user_text(chat_ctx).lower() else LONG_REPLY


@pytest.fixture(scope="module")
def settings() -> AgentSettings:
    s = AgentSettings(_env_file=None)
    assert s.turn_detection == "text", "these tests follow the shipped turn detection"
    # Warm the engines so the first turn does not pay for loading them.
    WhisperSTT(model="base").transcribe(speak("Hello there.").astype(np.float32) / 32768.0)
    load_hibari(s.tts_voice, s.cpu_threads)
    return s


@dataclass
class Harness:
    session: AgentSession
    mic: ScriptedMic
    speaker: RealtimeSpeaker
    llm: ScriptedLLM
    user_states: list[tuple[float, str]] = field(default_factory=list)
    transcripts: list[tuple[float, str]] = field(default_factory=list)
    false_interruptions: list[tuple[float, bool]] = field(default_factory=list)


async def start(settings: AgentSettings) -> Harness:
    vad = pipeline.build_vad(settings)
    detector = pipeline.build_turn_detector(settings)
    shared = pipeline.Shared(vad=vad, notes=None, memory=None, turn_detector=detector)  # type: ignore[arg-type]
    scripted = ScriptedLLM(reply_script)
    session = AgentSession(
        vad=vad,
        stt=pipeline.build_stt(settings, vad),  # the shipped (streaming) local STT
        llm=scripted,
        tts=HibariTTS(),
        turn_handling=pipeline.turn_handling(settings, shared),
    )
    h = Harness(session=session, mic=ScriptedMic(), speaker=RealtimeSpeaker(), llm=scripted)
    session.on("user_state_changed", lambda ev: h.user_states.append((ev.created_at, ev.new_state)))
    session.on(
        "user_input_transcribed",
        lambda ev: ev.is_final and h.transcripts.append((ev.created_at, ev.transcript)),
    )
    session.on("agent_false_interruption", lambda ev: h.false_interruptions.append((ev.created_at, ev.resumed)))
    session.input.audio = h.mic
    session.output.audio = h.speaker
    await session.start(Agent(instructions="You are a helpful voice assistant."))
    return h


async def stop(h: Harness) -> None:
    await h.session.aclose()
    await h.speaker.aclose()


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def ask_and_wait_for_long_reply(h: Harness) -> tuple[Segment, SpeechHandle]:
    """Asks the question, waits until the long reply has played for a while; returns its segment and handle."""
    await asyncio.sleep(0.5)
    question = h.mic.play(speak(QUESTION))
    await asyncio.wait_for(question.done.wait(), 10)
    await asyncio.wait_for(h.speaker.segment_started.wait(), 20)
    reply = h.speaker.segments[0]
    handle = h.session.current_speech
    assert handle is not None and not handle.interrupted
    # Past the first second (the agent's start-of-turn grace), mid-sentence.
    await asyncio.sleep(2.5)
    assert reply.finished_at is None, "the reply ended before it could be interrupted"
    return reply, handle


def dump(h: Harness, t0: float) -> str:
    lines = [f"{t - t0:7.3f} speaker {what}" for t, what in h.speaker.events]
    lines += [f"{t - t0:7.3f} user {state}" for t, state in h.user_states]
    lines += [f"{t - t0:7.3f} transcript {text!r}" for t, text in h.transcripts]
    lines += [f"{t - t0:7.3f} false interruption resumed={r}" for t, r in h.false_interruptions]
    return "\n".join(sorted(lines))


@pytest.mark.timeout(120)
async def test_speaking_over_the_agent_stops_it_and_gets_an_answer(settings):
    interruption = speak(INTERRUPTION)
    h = await start(settings)
    t0 = time.time()
    try:
        reply, handle = await ask_and_wait_for_long_reply(h)
        clip = h.mic.play(interruption)
        await asyncio.wait_for(clip.done.wait(), 10)
        speech_start = clip.started_at + voiced_onset(interruption)

        # The agent answers the new question, and that answer plays to its end.
        await wait_until(lambda: len(h.speaker.segments) >= 2, 20, "the answer to the interruption")
        answer = h.speaker.segments[1]
        await wait_until(lambda: answer.finished_at is not None, 20, "the answer to finish playing")
        log = dump(h, t0)
        print(log)

        assert reply.stops, f"the reply never stopped\n{log}"
        kind, stopped_at, position = reply.stops[0]
        silent_after = stopped_at - speech_start
        print(
            f"audio stopped {silent_after:.3f} s after interrupting speech began ({kind}); reply cleared after "
            f"{reply.finished_at - speech_start:.3f} s, answer started after {answer.started_at - speech_start:.3f} s"
        )
        assert 0.0 < silent_after < 1.5, log
        # It never made another sound: it was cleared, not resumed, and cut short.
        assert reply.interrupted is True and reply.finished_at is not None, log
        assert reply.played == pytest.approx(position, abs=0.011), log
        assert reply.played < reply.pushed - 1.0, log
        assert handle.interrupted
        # The LLM's newest request carries the interruption as the latest user message.
        assert "another question" in newest_user_text(h.llm.calls[-1]).lower(), [
            newest_user_text(c) for c in h.llm.calls
        ]
        assert answer.interrupted is False and answer.played == pytest.approx(answer.pushed, abs=0.011), log
        assert answer.started_at > reply.finished_at
    finally:
        await stop(h)


def click(duration: float = 0.15, seed: int = 7) -> np.ndarray:
    """A loud click or knock: band-limited noise with a sharp attack and a fast decay."""
    rng = np.random.default_rng(seed)
    n = int(SAMPLE_RATE * duration)
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")  # take the hiss off the top
    envelope = np.exp(-np.arange(n) / (0.04 * SAMPLE_RATE))
    attack = int(0.005 * SAMPLE_RATE)
    envelope[:attack] = np.linspace(0, 1, attack)
    return (np.clip(noise * envelope * 0.5, -1, 1) * 32767).astype(np.int16)


def hum(duration: float = 0.15) -> np.ndarray:
    """A short voiced "mm": Silero hears it as speech, for less than interrupt_min_speech_s; Whisper hears no words."""
    samples = speak("Mm")
    start = int(voiced_onset(samples) * SAMPLE_RATE)
    return samples[start : start + int(duration * SAMPLE_RATE)]


SOUNDS = {"click": (click, False), "hum": (hum, True)}  # name: (make, the VAD hears it as speech)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sound", list(SOUNDS))
async def test_a_short_sound_does_not_cut_the_answer_off(settings, sound):
    make, vad_hears_it = SOUNDS[sound]
    samples = make()
    assert len(samples) / SAMPLE_RATE < settings.interrupt_min_speech_s
    h = await start(settings)
    t0 = time.time()
    try:
        reply, handle = await ask_and_wait_for_long_reply(h)
        clip = h.mic.play(samples)
        await asyncio.wait_for(clip.done.wait(), 5)

        await asyncio.wait_for(handle.wait_for_playout(), 40)
        # Let a late transcript of the sound, if any, reach the agent before judging.
        await asyncio.sleep(2.0)
        log = dump(h, t0)
        print(log)

        assert clip.ended_at < reply.finished_at, "the sound came after the reply had ended"
        # (the session dates the start of speech back to where the VAD placed it)
        heard = [t for t, state in h.user_states if state == "speaking" and t >= clip.started_at - 0.5]
        assert bool(heard) == vad_hears_it, log
        assert not handle.interrupted, log
        assert reply.interrupted is False, log
        assert reply.played == pytest.approx(reply.pushed, abs=0.011), log
        assert reply.pushed > 10.0, f"the reply was only {reply.pushed:.1f} s long"
        # If the sound paused the reply, it resumed once the false-interruption timeout ran out.
        for kind, stopped_at, _ in reply.stops:
            assert kind == "pause", log
            resumed = [t for t, what in h.speaker.events if what == "resume" and t > stopped_at]
            assert resumed, log
            gap = resumed[0] - stopped_at
            print(f"{sound}: paused {stopped_at - clip.started_at:.2f} s after the sound began, for {gap:.2f} s")
            assert gap < settings.false_interruption_timeout_s + 1.0, log
        print(f"{sound}: reply of {reply.pushed:.2f} s played to the end, {len(reply.stops)} pause(s)")
        # No new user turn: the LLM only ever answered the question, and nothing followed the reply.
        assert {newest_user_text(c) for c in h.llm.calls} == {h.transcripts[0][1]}, log
        assert len(h.transcripts) == 1, log
        assert len(h.speaker.segments) == 1, log
        users = [item for item in h.session.history.items if item.type == "message" and item.role == "user"]
        assert len(users) == 1, [u.text_content for u in users]
    finally:
        await stop(h)
