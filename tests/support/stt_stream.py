"""Feeding an STT stream like a live microphone, and reading what it says."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit import rtc
from livekit.agents import stt

from tests.support.speech import SAMPLE_RATE

FRAME_S = 0.02


def silence(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


async def listen(
    recognizer: stt.STT, audio: np.ndarray, rate: int = SAMPLE_RATE, realtime: bool = True, timeout: float = 120
) -> list[tuple[float, stt.SpeechEvent]]:
    """Pushes audio in 20 ms frames (in real time unless told otherwise); returns the events with their times."""
    events: list[tuple[float, stt.SpeechEvent]] = []
    stream = recognizer.stream()

    async def collect() -> None:
        async for ev in stream:
            events.append((time.monotonic(), ev))

    reader = asyncio.create_task(collect())
    step = int(rate * FRAME_S)
    t0 = time.monotonic()
    for n, start in enumerate(range(0, len(audio), step)):
        chunk = audio[start : start + step]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, len(chunk)))
        await asyncio.sleep(max(0.0, t0 + (n + 1) * FRAME_S - time.monotonic()) if realtime else 0)
    stream.end_input()
    await asyncio.wait_for(reader, timeout)
    await stream.aclose()
    return events


def texts(events: list[tuple[float, stt.SpeechEvent]], kind: stt.SpeechEventType) -> list[str]:
    return [ev.alternatives[0].text for _, ev in events if ev.type == kind]
