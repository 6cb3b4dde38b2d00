"""Rooms with several people: the agent hears each of them, knows who said what, and answers when it is wanted.

The 1:1 path (agent/main.py) links one participant and answers every turn. In a group room one `AgentSession`
speaks (room audio input off), and each human gets a listener of their own: their audio track -> their STT stream
(the worker's shared Silero VAD inside) -> their transcript on `lk.transcription` under their identity -> one
ordered queue of utterances. Every utterance enters the LLM context as "Name: words"; the answer policy decides
which ones the agent answers (`AnswerPolicy`), the others it only remembers.

Answer policy ("addressed", the default): muted -> silent; the agent's name anywhere in the utterance (tolerant to
STT spelling) -> answer; naming another person -> silent; a lone human's question or request -> answer; a question
from the person the agent just answered, within GROUP_FOLLOW_UP_S -> answer; anything else (people talking to
each other) -> silent. "hand_raised": only people whose hand is up (RPC `agent.raise_hand`, or the attribute
`hand_raised=true`) get an answer, one answer per raised hand. Typed chat (`lk.chat`) is addressed to the agent.
Interruptions: the person being answered talking over the agent (for INTERRUPT_MIN_SPEECH_S), or anyone saying the
agent's name, stops it; others talking does not.

RPC methods on the agent: `agent.mute` / `agent.unmute` (callers whose GROUP_ROLE_ATTRIBUTE is "moderator" only),
`agent.raise_hand` / `agent.lower_hand` (for the caller themselves). The agent shows `agent.muted` as an attribute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import difflib
import functools
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession, JobContext, stt, utils
from livekit.agents.voice.room_io import RoomOptions
from prometheus_client import Counter, Gauge

from agent import metrics, personas, phone, pipeline, skills
from agent.settings import AgentSettings
from agent.tts_text import TTS_TEXT_TRANSFORMS

logger = logging.getLogger("agent.group")

LISTENERS = Gauge(
    "voice_agent_group_listeners",
    "People the agent listens to in group rooms (one STT stream each)",
    multiprocess_mode="livesum",
)
UTTERANCES = Counter(
    "voice_agent_group_utterances", "Utterances heard in group rooms, by what the agent did", ["decision"]
)
for _decision in ("answered", "silent"):
    UTTERANCES.labels(_decision)

HUMAN_KINDS = (rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_SIP)
TRANSCRIPTION = "lk.transcription"
MODERATOR = "moderator"
SAMPLE_RATE = 16000
WELCOME_GATHER_S = 1.5  # joins within this time are welcomed in one sentence
PREROLL_S = 0.5  # audio before the first loud frame that still reaches the VAD
HANGOVER_S = 1.5  # silence after speech that still reaches the VAD (the VAD's end of speech needs VAD_MIN_SILENCE_S)

GROUP_INSTRUCTIONS = (
    "You are {name}, taking part in a conversation among several people. Each user message starts with the "
    "speaker's name and a colon. Answer the person who spoke to you last, briefly, and address them by name "
    "when it helps."
)


def _level(frame: rtc.AudioFrame) -> float:
    pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
    return float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0


def is_human(participant: rtc.Participant) -> bool:
    return participant.kind in HUMAN_KINDS


def display_name(participant: rtc.Participant) -> str:
    return (participant.name or participant.identity).strip() or participant.identity


def wanted(settings: AgentSettings, options: dict, room: rtc.Room) -> bool:
    """Whether this room gets group handling (AGENT_ROOM_MODE, then the dispatch metadata, then who is there)."""
    if settings.agent_room_mode != "auto":
        return settings.agent_room_mode == "group"
    if options.get("mode") in ("group", "single"):
        return options["mode"] == "group"
    return sum(is_human(p) for p in room.remote_participants.values()) > 1


# -- the answer policy: plain logic, no room ---------------------------------------------------------------------

_FILLERS = {"hey", "hi", "hello", "ok", "okay", "so", "and", "um", "uh", "well", "oh", "yo", "excuse", "me", "sorry"}
_ASKING = set(
    re.split(
        r"\s+",
        "what when where who whom whose which why how is are am was were do does did can could would will should "
        "shall may might have has tell give show explain help please remind find convert calculate remember read say",
    )
)


def _words(text: str) -> list[str]:
    return [w.removesuffix("'s") for w in re.findall(r"[a-z0-9']+", text.lower())]


def _letters(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _soundex(word: str) -> str:
    codes = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"), "l": "4"}
    codes.update({**dict.fromkeys("mn", "5"), "r": "6"})
    out, last = word[:1], codes.get(word[:1], "")
    for ch in word[1:]:
        code = codes.get(ch, "")
        if code and code != last:
            out += code
        if ch not in "hw":
            last = code
    return (out + "000")[:4]


def mentions(text: str, name: str, *, fuzzy: bool = True) -> bool:
    """Whether `name` is said anywhere in `text`: exact, or (fuzzy) a word or two adjacent words that spell nearly
    the same ("Junipur", "Juni per") or sound the same with a close spelling."""
    target = _letters(name)
    if not target:
        return False
    words = _words(text)
    candidates = words + [a + b for a, b in zip(words, words[1:], strict=False)]
    for word in candidates:
        if word == target:
            return True
        if not fuzzy or len(target) < 4 or abs(len(word) - len(target)) > 2:
            continue
        ratio = difflib.SequenceMatcher(None, word, target).ratio()
        if ratio >= 0.8 or (ratio >= 0.6 and _soundex(word) == _soundex(target)):
            return True
    return False


def request_of(line: str, names: list[str]) -> str:
    """What a person asked, as the skills fast path should read it: a context line ("Ana: Jarvis, what time is it?")
    without the speaker's label and without the agent's name used as an address at its start ("Hey Jarvis, ...")
    or end ("..., Jarvis?")."""
    text = line.split(": ", 1)[1] if ": " in line else line
    tokens = text.split()

    def is_name(token: str) -> bool:
        return any(mentions(token, name) for name in names) and len(_words(token)) == 1

    start = 0
    while start < len(tokens) - 1 and _words(tokens[start]) and _words(tokens[start])[0] in _FILLERS:
        start += 1
    if start < len(tokens) - 1 and is_name(tokens[start]):
        tokens = tokens[start + 1 :]
    if len(tokens) > 1 and is_name(tokens[-1]):
        end = re.search(r"[.?!]+$", tokens[-1])
        tokens = tokens[:-1]
        tokens[-1] = tokens[-1].rstrip(",") + (end.group() if end else "")
    return " ".join(tokens).lstrip(" ,")


def is_request(text: str) -> bool:
    """A question or a request: ends with "?", or starts (after fillers) with a question word or a request verb."""
    if text.strip().endswith("?"):
        return True
    words = [w for w in _words(text) if w not in _FILLERS]
    return bool(words) and words[0] in _ASKING


@dataclass(frozen=True)
class Decision:
    answer: bool
    reason: str


@dataclass
class AnswerPolicy:
    names: list[str]
    mode: str = "addressed"
    follow_up_s: float = 8.0

    def addressed(self, text: str) -> bool:
        return any(mentions(text, name) for name in self.names)

    def decide(
        self,
        speaker: str,
        text: str,
        *,
        others: list[str],
        muted: bool = False,
        hand_raised: bool = False,
        typed: bool = False,
        follow_up_of: str | None = None,
    ) -> Decision:
        """`others`: display names of the other humans in the room; `follow_up_of`: the identity the agent answered
        last, while its follow-up window is open."""
        if muted:
            return Decision(False, "muted by a moderator")
        if self.mode == "hand_raised":
            return Decision(True, "hand raised") if hand_raised else Decision(False, "hand not raised")
        if typed:
            return Decision(True, "typed to the agent")
        if self.addressed(text):
            return Decision(True, "addressed by name")
        named = [name for name in others if mentions(text, name.split()[0], fuzzy=False)]
        if named:
            return Decision(False, f"talking to {named[0]}")
        if not is_request(text):
            return Decision(False, "not a question")
        if not others:
            return Decision(True, "a lone person's question")
        if follow_up_of == speaker:
            return Decision(True, "follow-up")
        return Decision(False, "cross-talk")


# -- the room ------------------------------------------------------------------------------------------------------


@dataclass
class Utterance:
    identity: str
    name: str
    text: str
    typed: bool = False


class Transcripts:
    """One person's transcript on lk.transcription, sent under their identity as livekit-agents sends a linked
    participant's: each update a whole text stream, one segment id per utterance, the final one marked final."""

    def __init__(self, room: rtc.Room, identity: str, track_sid: str) -> None:
        self._room, self._identity, self._track_sid = room, identity, track_sid
        self._segment = utils.shortuuid("SG_")

    async def send(self, text: str, final: bool) -> None:
        attributes = {
            "lk.segment_id": self._segment,
            "lk.transcription_final": "true" if final else "false",
            "lk.transcribed_track_id": self._track_sid,
        }
        if final:
            self._segment = utils.shortuuid("SG_")
        if not self._room.isconnected():
            return
        try:
            writer = await self._room.local_participant.stream_text(
                topic=TRANSCRIPTION, sender_identity=self._identity, attributes=attributes
            )
            await writer.write(text)
            await writer.aclose()
        except Exception as exc:  # the room is going away; the transcript is not worth an error
            logger.warning("transcript of %s not sent: %s", self._identity, exc)


class _Turn:
    """One person's turn: their final transcripts joined until they have been silent for `end_s` (a pause after
    "Jarvis," must not split the question from the name), or for `question_end_s` after a complete question."""

    def __init__(self, end_s: float, done: Callable[[str], None], question_end_s: float | None = None) -> None:
        self._end_s, self._done = end_s, done
        self._question_end_s = end_s if question_end_s is None else min(end_s, question_end_s)
        self._texts: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        self._texts.append(text)
        self.end_soon()

    def end_soon(self) -> None:
        self.cancel()
        if self._texts:
            wait = self._question_end_s if self._texts[-1].endswith("?") else self._end_s
            self._timer = asyncio.get_running_loop().call_later(wait, self._end)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self) -> None:
        self._timer = None
        text, self._texts = " ".join(self._texts), []
        self._done(text)


class GroupRoom:
    def __init__(self, ctx: JobContext, session: AgentSession, s: AgentSettings, speech_to_text: stt.STT) -> None:
        self.ctx, self.room, self.session, self.settings = ctx, ctx.room, session, s
        self.stt = speech_to_text
        self.policy = AnswerPolicy(s.agent_names, s.group_answer_policy, s.group_follow_up_s)
        self.listeners: dict[str, asyncio.Task] = {}  # identity -> its listener
        self.speaking: set[str] = set()
        self.hands: set[str] = set()
        self.muted = False
        self.answering: str | None = None
        self.follow_up: tuple[str, float] | None = None  # (identity, when the answer ended)
        self.utterances: asyncio.Queue[Utterance] = asyncio.Queue()
        self._welcome: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self._leave: asyncio.Task | None = None
        self._closed = False

    # lifecycle

    def start(self) -> None:
        room = self.room
        room.on("participant_connected", self._on_joined)
        room.on("participant_disconnected", self._on_left)
        room.on("track_subscribed", self._on_track)
        room.on("track_unsubscribed", self._on_track_gone)
        room.register_text_stream_handler("lk.chat", self._on_chat)
        for method, handler in (
            ("agent.mute", self._rpc_mute),
            ("agent.unmute", self._rpc_unmute),
            ("agent.raise_hand", self._rpc_raise_hand),
            ("agent.lower_hand", self._rpc_lower_hand),
        ):
            room.local_participant.register_rpc_method(method, handler)
        self._spawn(self._decide())
        for identity in list(room.remote_participants):
            self._sync(identity)
        self.ctx.add_shutdown_callback(self.close)

    async def close(self, *_args: object) -> None:
        if self._closed:
            return
        self._closed = True
        for event, handler in (
            ("participant_connected", self._on_joined),
            ("participant_disconnected", self._on_left),
            ("track_subscribed", self._on_track),
            ("track_unsubscribed", self._on_track_gone),
        ):
            with contextlib.suppress(Exception):
                self.room.off(event, handler)
        with contextlib.suppress(Exception):
            self.room.unregister_text_stream_handler("lk.chat")
        tasks = [*self.listeners.values(), *self._tasks]
        if self._leave is not None:
            tasks.append(self._leave)
        await utils.aio.cancel_and_wait(*tasks)
        self.listeners.clear()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def humans(self) -> dict[str, str]:
        return {p.identity: display_name(p) for p in self.room.remote_participants.values() if is_human(p)}

    # people coming and going

    def _on_joined(self, participant: rtc.RemoteParticipant) -> None:
        if not is_human(participant):
            return
        if self._leave is not None:
            self._leave.cancel()
            self._leave = None
        logger.info("%s joined (%d people here)", participant.identity, len(self.humans()))
        if self.settings.group_greet_newcomers:
            self._welcome.append(display_name(participant))
            if len(self._welcome) == 1:
                self._spawn(self._greet_newcomers())

    async def _greet_newcomers(self) -> None:
        await asyncio.sleep(WELCOME_GATHER_S)
        here = self.humans().values()
        names = [name for name in dict.fromkeys(self._welcome) if name in here]
        self._welcome.clear()
        if not names or self.muted:
            return
        if len(names) > 3:
            said = f"{', '.join(names[:2])} and {len(names) - 2} others"
        else:
            said = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        self.session.say(f"Welcome, {said}!", add_to_chat_ctx=False)

    def _on_left(self, participant: rtc.RemoteParticipant) -> None:
        self._stop_listening(participant.identity)
        self.hands.discard(participant.identity)
        if not is_human(participant):
            return
        logger.info("%s left (%d people here)", participant.identity, len(self.humans()))
        if not self.humans() and self._leave is None:
            self._leave = asyncio.create_task(self._leave_when_empty())

    async def _leave_when_empty(self) -> None:
        await asyncio.sleep(self.settings.group_empty_grace_s)
        if not self.humans():
            logger.info("nobody left for %.0f s: leaving the room", self.settings.group_empty_grace_s)
            self.ctx.shutdown(reason="the last person left")

    def _on_track(self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant):
        self._sync(participant.identity)

    def _on_track_gone(self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.Participant):
        self._sync(participant.identity)

    def _sync(self, identity: str) -> None:
        """Listens to the person's subscribed microphone, if any: one listener per person, on their current track
        (a client that reconnects may republish, and its events may come in either order)."""
        participant = self.room.remote_participants.get(identity)
        track = None
        if participant is not None and is_human(participant) and not self._closed:
            for publication in participant.track_publications.values():
                if (
                    publication.track is not None
                    and publication.kind == rtc.TrackKind.KIND_AUDIO
                    and publication.source in (rtc.TrackSource.SOURCE_MICROPHONE, rtc.TrackSource.SOURCE_UNKNOWN)
                ):
                    track = publication.track
                    break
        current = self.listeners.get(identity)
        if track is None:
            self._stop_listening(identity)
        elif current is None or getattr(current, "track_sid", None) != track.sid:
            self._stop_listening(identity)
            task = asyncio.create_task(self._listen(participant, track))
            task.track_sid = track.sid  # type: ignore[attr-defined]
            self.listeners[identity] = task

    def _stop_listening(self, identity: str) -> None:
        task = self.listeners.pop(identity, None)
        self.speaking.discard(identity)
        if task is not None:
            task.cancel()  # its finally closes the streams

    # listening

    async def _listen(self, participant: rtc.RemoteParticipant, track: rtc.Track) -> None:
        identity = participant.identity
        LISTENERS.inc()
        logger.info("listening to %s (track %s)", identity, track.sid)
        audio = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        words = self.stt.stream()
        transcripts = Transcripts(self.room, identity, track.sid)

        async def feed() -> None:
            # Silence is not sent to the VAD: a quiet person costs an audio decode, not a model run every 32 ms.
            # Speech opens the gate with the last PREROLL_S of audio; it closes after HANGOVER_S of silence, by
            # when the VAD has heard the end of speech.
            gate = 10 ** (self.settings.group_silence_gate_dbfs / 20)
            preroll: collections.deque[tuple[rtc.AudioFrame, float]] = collections.deque()
            heard_s = open_until = preroll_s = 0.0
            async for event in audio:
                frame = event.frame
                duration = frame.samples_per_channel / frame.sample_rate
                heard_s += duration
                if _level(frame) >= gate:
                    if heard_s > open_until:
                        while preroll:
                            words.push_frame(preroll.popleft()[0])
                        preroll_s = 0.0
                    open_until = heard_s + HANGOVER_S
                if heard_s <= open_until:
                    words.push_frame(frame)
                else:
                    preroll.append((frame, duration))
                    preroll_s += duration
                    while len(preroll) > 1 and preroll_s - preroll[0][1] >= PREROLL_S:
                        preroll_s -= preroll.popleft()[1]
            words.end_input()

        feeder = asyncio.create_task(feed())
        s = self.settings
        turn = _Turn(s.group_end_of_turn_s, lambda text: self._heard(participant, text), s.endpointing_min_delay_s)
        try:
            async for event in words:
                if event.type == stt.SpeechEventType.START_OF_SPEECH:
                    turn.cancel()  # they go on: what they said so far is part of this turn
                    self._started_speaking(identity)
                elif event.type == stt.SpeechEventType.END_OF_SPEECH:
                    self.speaking.discard(identity)
                    turn.end_soon()
                elif event.alternatives and (text := event.alternatives[0].text.strip()):
                    final = event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
                    await transcripts.send(text, final)
                    self._maybe_interrupt(identity, text)
                    if final:
                        turn.add(text)
        finally:
            turn.cancel()
            await utils.aio.cancel_and_wait(feeder)
            with contextlib.suppress(Exception):
                await words.aclose()
            with contextlib.suppress(Exception):
                await audio.aclose()
            self.speaking.discard(identity)
            LISTENERS.dec()

    def _heard(self, participant: rtc.RemoteParticipant, text: str) -> None:
        self.utterances.put_nowait(Utterance(participant.identity, display_name(participant), text))

    def _on_chat(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = (await reader.read_all()).strip()
            participant = self.room.remote_participants.get(identity)
            if text and participant is not None:
                self.utterances.put_nowait(Utterance(identity, display_name(participant), text, typed=True))

        self._spawn(read())

    # interruptions

    def _agent_speaking(self) -> bool:
        return self.session.agent_state == "speaking"

    def _started_speaking(self, identity: str) -> None:
        self.speaking.add(identity)
        if identity == self.answering and self._agent_speaking():
            self._spawn(self._interrupt_if_still_speaking(identity))

    async def _interrupt_if_still_speaking(self, identity: str) -> None:
        await asyncio.sleep(self.settings.interrupt_min_speech_s)
        if identity in self.speaking and identity == self.answering and self._agent_speaking():
            logger.info("%s talked over the answer: interrupting", identity)
            self.session.interrupt()

    def _maybe_interrupt(self, identity: str, text: str) -> None:
        if self.policy.mode == "hand_raised" and identity not in self.hands:
            return
        if identity != self.answering and self._agent_speaking() and self.policy.addressed(text):
            logger.info("%s called the agent while it spoke: interrupting", identity)
            self.session.interrupt()

    # deciding

    async def _decide(self) -> None:
        while True:
            said = await self.utterances.get()
            humans = self.humans()
            follow_up = None
            if self.follow_up and time.monotonic() - self.follow_up[1] <= self.policy.follow_up_s:
                follow_up = self.follow_up[0]
            participant = self.room.remote_participants.get(said.identity)
            raised = said.identity in self.hands or (
                participant is not None and participant.attributes.get("hand_raised", "").lower() in ("true", "1")
            )
            decision = self.policy.decide(
                said.identity,
                said.text,
                others=[name for identity, name in humans.items() if identity != said.identity],
                muted=self.muted,
                hand_raised=raised,
                typed=said.typed,
                follow_up_of=follow_up if self.answering is None else self.answering,
            )
            UTTERANCES.labels("answered" if decision.answer else "silent").inc()
            logger.info("%s: %s (%s)", said.identity, "answering" if decision.answer else "silent", decision.reason)
            line = f"{said.name}: {said.text}"
            try:
                if decision.answer:
                    self._answer(said, line)
                else:
                    await self._remember(line)
            except RuntimeError as exc:  # the session is closing
                logger.info("utterance dropped: %s", exc)
            except Exception:  # one bad turn must not end listening for the whole room
                logger.exception("could not handle an utterance of %s", said.identity)

    async def _remember(self, line: str) -> None:
        agent = self.session.current_agent
        history = agent.chat_ctx.copy()
        history.add_message(role="user", content=line)
        await agent.update_chat_ctx(history)

    def _answer(self, said: Utterance, line: str) -> None:
        self.hands.discard(said.identity)
        if self.session.current_speech is not None and not self.session.current_speech.done():
            self.session.interrupt()
        if isinstance(self.session.userdata, skills.CallContext):
            self.session.userdata.identity = phone.data_key(said.identity)  # notes are the speaker's
        self.answering = said.identity
        handle = self.session.generate_reply(user_input=line)

        def done(_handle: object) -> None:
            if self.answering == said.identity:
                self.answering = None
            self.follow_up = (said.identity, time.monotonic())

        handle.add_done_callback(done)

    # RPC

    def _caller(self, data: rtc.RpcInvocationData) -> rtc.RemoteParticipant:
        participant = self.room.remote_participants.get(data.caller_identity)
        if participant is None:
            raise rtc.RpcError(404, f"{data.caller_identity} is not in the room")
        return participant

    def _require_moderator(self, data: rtc.RpcInvocationData, what: str) -> None:
        caller = self._caller(data)
        role = caller.attributes.get(self.settings.group_role_attribute, "")
        if role != MODERATOR:
            logger.info("refused %s from %s (role %r)", what, caller.identity, role)
            raise rtc.RpcError(403, f"only a moderator can {what} the agent")

    async def _set_muted(self, muted: bool) -> str:
        self.muted = muted
        if muted:
            self.session.interrupt()
        await self.room.local_participant.set_attributes({"agent.muted": "true" if muted else "false"})
        return "muted" if muted else "unmuted"

    async def _rpc_mute(self, data: rtc.RpcInvocationData) -> str:
        self._require_moderator(data, "mute")
        logger.info("muted by %s", data.caller_identity)
        return await self._set_muted(True)

    async def _rpc_unmute(self, data: rtc.RpcInvocationData) -> str:
        self._require_moderator(data, "unmute")
        logger.info("unmuted by %s", data.caller_identity)
        return await self._set_muted(False)

    async def _rpc_raise_hand(self, data: rtc.RpcInvocationData) -> str:
        self.hands.add(self._caller(data).identity)
        return "raised"

    async def _rpc_lower_hand(self, data: rtc.RpcInvocationData) -> str:
        self.hands.discard(self._caller(data).identity)
        return "lowered"


def group_persona(persona: personas.Persona, s: AgentSettings) -> personas.Persona:
    name = s.agent_names[0]
    return dataclasses.replace(
        persona,
        instructions=f"{GROUP_INSTRUCTIONS.format(name=name)} {persona.instructions}",
        greeting=f"Hello everyone, I'm {name}. Say my name when you want me.",
    )


async def run(
    ctx: JobContext,
    shared: pipeline.Shared,
    s: AgentSettings,
    make_agent: Callable[[personas.Persona], Agent],
    fast_path_prefix: str,
) -> GroupRoom:
    """Group handling for a connected room: one speaking session, one listener per person."""
    options = pipeline.dispatch_options(ctx.job.metadata)
    try:
        persona = personas.get(str(options.get("persona", s.persona)))
    except personas.UnknownPersona as exc:
        logger.warning("%s; using the default persona", exc)
        persona = personas.get(s.persona)
    if s.stt_choice == "local" and not s.group_interim_transcripts:
        from agent.providers.whisper_stt import WhisperSTT

        # Finals only: re-decoding every talker's growing utterance each second (the interim transcripts) is what
        # saturates 2 cores when several people talk, and the person calling the agent then waits behind them.
        speech_to_text: stt.STT = WhisperSTT(
            model=s.stt_model,
            language=s.stt_language,
            beam_size=s.stt_beam_size,
            cpu_threads=s.cpu_threads,
            vad=shared.vad,
            interim_interval_s=math.inf,
        )
    else:
        speech_to_text = pipeline.build_stt(s, shared.vad)
    if not speech_to_text.capabilities.streaming:
        speech_to_text = stt.StreamAdapter(stt=speech_to_text, vad=shared.vad)
    first = next((p for p in ctx.room.remote_participants.values() if is_human(p)), None)
    session = AgentSession(
        userdata=skills.CallContext(
            identity=first.identity if first else "anonymous", notes=shared.notes, memory=shared.memory
        ),
        llm=pipeline.build_llm(s),
        tts=pipeline.build_tts(s),
        tts_text_transforms=TTS_TEXT_TRANSFORMS,
    )
    pipeline.log_turn_metrics(session)
    metrics.attach(session, fast_path_prefix=fast_path_prefix)
    for role, provider in (("stt", speech_to_text), ("llm", session.llm), ("tts", session.tts)):
        metrics.watch_fallbacks(role, provider)  # a switch to a local provider is logged and counted here too
    group = GroupRoom(ctx, session, s, speech_to_text)
    # The session speaks and publishes the agent's transcript; listening is per person (GroupRoom).
    options_out = RoomOptions(audio_input=False, text_input=False, close_on_disconnect=False)
    agent = make_agent(group_persona(persona, s))
    if hasattr(agent, "request_of"):  # the fast path reads "Ana: Jarvis, what time is it?" as "what time is it?"
        agent.request_of = functools.partial(request_of, names=s.agent_names)
    await session.start(agent=agent, room=ctx.room, room_options=options_out)
    group.start()
    try:  # people see the agent under the name it answers to
        await ctx.room.local_participant.set_name(s.agent_names[0])
    except Exception as exc:
        logger.warning("could not set the agent's display name: %s", exc)
    logger.info("group room %s: %d people, policy %s", ctx.room.name, len(group.humans()), s.group_answer_policy)
    return group
