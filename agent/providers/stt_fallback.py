"""livekit-agents' STT FallbackAdapter, plus the words in flight when a streaming cloud STT dies.

The adapter switches to the next STT when the cloud stream fails, but that stream only gets audio from then on: the
utterance the person was saying (already sent to the dead service, never transcribed) was lost. Here the stream
keeps the audio since the last final transcript (bounded), and the local STT that takes over starts from it.
"""

from __future__ import annotations

import collections
from contextvars import ContextVar

from livekit import rtc
from livekit.agents import APIConnectOptions, stt
from livekit.agents.stt.fallback_adapter import DEFAULT_FALLBACK_API_CONNECT_OPTIONS, FallbackRecognizeStream
from livekit.agents.types import NOT_GIVEN, NotGivenOr

MAX_UNHEARD_S = 30.0  # a longer stretch without a final transcript keeps only its last 30 s

_unheard: ContextVar[ReplayingStream | None] = ContextVar("unheard_audio", default=None)


def unheard() -> list[rtc.AudioFrame]:
    """For an STT stream being created by the fallback after a failure: the audio no final transcript covers yet
    (empty anywhere else). The frames are handed over once."""
    stream = _unheard.get()
    return stream.take_unheard() if stream is not None else []


class ReplayingFallbackAdapter(stt.FallbackAdapter):
    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return ReplayingStream(stt=self, language=language, conn_options=conn_options)


class ReplayingStream(FallbackRecognizeStream):
    def __init__(self, **kwargs) -> None:
        self._frames: collections.deque[rtc.AudioFrame] = collections.deque()
        self._seconds = 0.0
        super().__init__(**kwargs)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._frames.append(frame)
        self._seconds += frame.duration
        while self._seconds > MAX_UNHEARD_S and self._frames:
            self._seconds -= self._frames.popleft().duration
        super().push_frame(frame)

    def take_unheard(self) -> list[rtc.AudioFrame]:
        # Frames still queued here go to the new stream anyway; the rest went to the stream that failed.
        queued = self._input_ch.qsize()
        frames = list(self._frames)[: max(0, len(self._frames) - queued)]
        self._frames, self._seconds = collections.deque(), 0.0
        return frames

    async def _run(self) -> None:
        # The adapter creates each provider's stream inside this task, where `unheard()` can see this stream.
        _unheard.set(self)
        await super()._run()

    async def __anext__(self) -> stt.SpeechEvent:
        event = await super().__anext__()
        if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            self._frames, self._seconds = collections.deque(), 0.0
        return event
