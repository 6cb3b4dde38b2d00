"""How soon after the voice stops the local STT starts its final decode, and how often it starts one in vain.

The streaming Whisper STT decodes an utterance speculatively as soon as the voice seems to have stopped, so the
final transcript is ready when the VAD declares the end of speech. This compares the shipped rule
(`agent.providers.whisper_stt.VoiceEnd`: two quiet windows while the VAD's probability falls) with waiting for the
VAD's probability to drop under its threshold, on the benchmark's spoken requests (espeak, three speeds, room noise
at about -60 dBFS), fed through livekit's Silero VAD as the agent feeds it. A start inside a sentence is a decode
thrown away when the voice goes on (it costs a core for ~0.35 s, not a wrong transcript).

Run: `uv run python -m bench.speech_end` (about a minute).
"""

from __future__ import annotations

import asyncio
import statistics

import numpy as np
from livekit import rtc
from livekit.agents import vad
from livekit.plugins import silero

from agent.providers.whisper_stt import VoiceEnd
from bench.voice import REQUESTS
from tests.support.speech import SAMPLE_RATE, last_voiced_index, speak

THRESHOLD = 0.35  # livekit's Silero exit threshold (activation 0.5 - 0.15)
RULES = {
    "shipped: voice stops (VoiceEnd)": lambda: VoiceEnd(THRESHOLD, 0.1),
    "VAD under its threshold, 1 window": lambda: VoiceEnd(THRESHOLD, 0.03, quiet_windows=0),
    "VAD under its threshold, 2 windows": lambda: VoiceEnd(THRESHOLD, 0.06, quiet_windows=0),
}


async def windows(detector: vad.VAD, pcm: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
    """(end time, probability, float32 audio) of each VAD window while speech is on, pushed in 20 ms frames."""
    stream = detector.stream()
    step = SAMPLE_RATE // 50
    for start in range(0, len(pcm), step):
        chunk = pcm[start : start + step]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, len(chunk)))
    stream.end_input()
    out, speaking = [], False
    async for ev in stream:
        if ev.type == vad.VADEventType.START_OF_SPEECH:
            speaking = True
        elif ev.type == vad.VADEventType.END_OF_SPEECH:
            speaking = False
        elif ev.type == vad.VADEventType.INFERENCE_DONE and speaking and ev.frames:
            audio = np.frombuffer(ev.frames[0].data, dtype=np.int16).astype(np.float32) / 32768.0
            out.append((ev.samples_index / SAMPLE_RATE, ev.probability, audio))
    await stream.aclose()
    return out


def replay(rule, rows, voice_end: float) -> tuple[float | None, int]:
    """Runs a rule as the STT stream does; returns (delay of the start that stood, starts thrown away)."""
    started: float | None = None
    wasted = 0
    for at, probability, audio in rows:
        ended, voiced = rule.update(probability, audio)
        if started is not None and voiced:
            wasted += 1
            started = None
        if ended and started is None:
            started = at
    return (started - voice_end if started is not None else None), wasted


async def main() -> None:
    detector = silero.VAD.load(min_silence_duration=0.35)
    noise = np.random.default_rng(7)
    delays: dict[str, list[float]] = {name: [] for name in RULES}
    wasted = dict.fromkeys(RULES, 0)
    clips = 0
    for speed in (130, 150, 180):
        for _, request, _ in REQUESTS:
            speech = speak(request, speed=speed)
            voice_end = (SAMPLE_RATE // 2 + last_voiced_index(speech)) / SAMPLE_RATE
            pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.int16), speech, np.zeros(SAMPLE_RATE, np.int16)])
            pcm = (pcm + noise.normal(0, 30, pcm.size)).clip(-32768, 32767).astype(np.int16)
            rows = await windows(detector, pcm)
            clips += 1
            for name, make in RULES.items():
                delay, thrown = replay(make(), rows, voice_end)
                wasted[name] += thrown
                if delay is not None:
                    delays[name].append(delay)
    print(f"{clips} spoken requests; milliseconds after the last voiced 10 ms of audio")
    print(f"{'rule':40s} {'median':>7s} {'p90':>6s} {'starts thrown away':>19s}")
    for name in RULES:
        values = sorted(delays[name])
        p90 = values[int(0.9 * (len(values) - 1))] if values else float("nan")
        median = statistics.median(values) if values else float("nan")
        print(f"{name:40s} {median * 1000:7.0f} {p90 * 1000:6.0f} {wasted[name]:19d}")


if __name__ == "__main__":
    asyncio.run(main())
