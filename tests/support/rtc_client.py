"""A LiveKit participant for tests: publishes a microphone fed from samples, records the agent."""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
from livekit import rtc

from tests.support.speech import SAMPLE_RATE, last_voiced_index, rms

FRAME = SAMPLE_RATE // 100  # 10 ms
AUDIBLE = 0.005  # RMS of an agent frame with speech in it


@dataclass
class Segment:
    identity: str
    text: str
    final: bool
    at: float


@dataclass
class Client:
    token_url: str
    identity: str = "e2e-user"
    name: str = "E2E tester"
    # Group rooms: the dispatch's room config, token attributes, and recording only the agent's audio (not people's).
    room_config: dict | None = None
    attributes: dict[str, str] | None = None
    invite: str | None = None  # a group room's invite from POST /api/rooms (the moderator's gives the moderator role)
    agent_only: bool = False
    subscribe: bool = True  # False: receive nothing (a crowd of extras costs the test process little)
    room: rtc.Room = field(default_factory=rtc.Room)
    transcripts: list[Segment] = field(default_factory=list)
    agent_frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    # When each audible agent frame arrived: read per poll without going over the whole recording again, which took
    # a tenth of a core by the end of a benchmark, on the machine that runs the agent.
    audible_at: list[float] = field(default_factory=list)
    agent_states: list[tuple[float, str]] = field(default_factory=list)
    agent_identity: str | None = None
    _pending: list[tuple[np.ndarray, bool]] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    last_voiced_at: float | None = None

    async def join(self, room_name: str | None = None) -> dict:
        async with httpx.AsyncClient() as http:
            body: dict = {"participant_identity": self.identity, "participant_name": self.name}
            if room_name:
                body["room_name"] = room_name
            if self.room_config is not None:
                body["room_config"] = self.room_config
            if self.attributes:
                body["participant_attributes"] = self.attributes
            if self.invite:
                body["invite"] = self.invite
            response = await http.post(f"{self.token_url}/api/token", json=body)
        assert response.status_code == 201, response.text
        details = response.json()
        self.room.register_text_stream_handler("lk.transcription", self._on_text)
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        options = rtc.RoomOptions(auto_subscribe=self.subscribe)
        await self.room.connect(details["server_url"], details["participant_token"], options)
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=20)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._tasks.append(asyncio.create_task(self._microphone()))
        return details

    def _on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            final = (reader.info.attributes or {}).get("lk.transcription_final") == "true"
            self.transcripts.append(Segment(identity, text, final, time.monotonic()))

        self._tasks.append(asyncio.create_task(read()))

    def _on_track(self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        if self.agent_only and participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        self.agent_identity = participant.identity

        async def record() -> None:
            async for event in rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1):
                pcm = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                at = time.monotonic()
                self.agent_frames.append((at, pcm))
                if rms(pcm) > AUDIBLE:
                    self.audible_at.append(at)

        self._tasks.append(asyncio.create_task(record()))

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if "lk.agent.state" in changed:
            self.agent_states.append((time.monotonic(), changed["lk.agent.state"]))

    async def _microphone(self) -> None:
        """Sends 10 ms frames in real time: queued speech first, silence otherwise (like a live mic)."""
        silence = np.zeros(FRAME, dtype=np.int16)
        while True:
            chunk, last_voiced = self._pending.pop(0) if self._pending else (silence, False)
            await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, len(chunk)))
            if last_voiced:
                # capture_frame returns once the frame is queued; the queue holds at most 20 ms.
                self.last_voiced_at = time.monotonic()

    async def say(self, samples: np.ndarray) -> None:
        """Queues speech and returns once it has been sent; `last_voiced_at` marks its last voiced frame."""
        last = max(0, -(-last_voiced_index(samples) // FRAME) - 1)
        frames = [
            np.pad(samples[i : i + FRAME], (0, max(0, i + FRAME - len(samples)))) for i in range(0, len(samples), FRAME)
        ]
        self.last_voiced_at = None
        self._pending.extend((frame, n == last) for n, frame in enumerate(frames))
        while self._pending:
            await asyncio.sleep(0.01)

    def speech_since(self, since: float, level: float = AUDIBLE) -> float | None:
        """Time of the first agent audio frame above level after `since`."""
        if level == AUDIBLE:
            n = bisect.bisect_right(self.audible_at, since)
            return self.audible_at[n] if n < len(self.audible_at) else None
        for at, pcm in self.agent_frames:
            if at > since and rms(pcm) > level:
                return at
        return None

    def agent_audio(self, since: float) -> np.ndarray:
        frames = [pcm for at, pcm in self.agent_frames if at > since]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def texts(self, identity: str | None = None, *, final_only: bool = True) -> list[str]:
        return [
            s.text
            for s in self.transcripts
            if (identity is None or s.identity == identity) and (s.final or not final_only)
        ]

    async def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(0.05)

    async def quiet(self, seconds: float, timeout: float = 30.0) -> None:
        """Waits until the agent has sent no audible audio for `seconds`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.audible_at or time.monotonic() - self.audible_at[-1] > seconds:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the agent never went quiet")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.room.disconnect()
