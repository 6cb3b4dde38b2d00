"""Local provider benchmark: load time and speed of each packaged model on this machine.

Prints, per provider: load time; for STT the real-time factor (decode time / audio length) and the delay of the final
transcript after the end of speech when fed like a live microphone; for TTS the time to first audio and the
real-time factor; for the LLM the time to first token (prompt prefix cached, as in a call) and tokens per second.

Run: `uv run python -m bench.providers` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import numpy as np
from livekit import rtc
from livekit.agents import llm, stt

from tests.support.speech import SAMPLE_RATE, last_voiced_index, speak

CLIPS = [
    "What time is it in Tokyo right now?",
    "Could you tell me a fun fact about octopuses, please?",
    "Please remember that my dentist appointment is on Friday at three.",
    "I would like to book a table for two people tomorrow evening.",
    "How many kilometers are there in ten miles?",
]
SENTENCES = [
    "Sure, I can help with that.",
    "The largest planet in the solar system is Jupiter, a gas giant more than eleven times as wide as the Earth.",
]
PROMPTS = ["Hi there, how are you today?", "Why is the sky blue?", "Give me one tip for sleeping better."]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def final_delay(whisper, audio: np.ndarray) -> float:
    """Feeds speech then silence in real time; returns the time from the last voiced frame to the final."""
    stream = whisper.stream()
    voiced_end = last_voiced_index(audio)
    frames = np.concatenate([audio[:voiced_end], np.zeros(SAMPLE_RATE * 2, dtype=np.int16)])
    done = asyncio.Event()
    final_at: list[float] = []

    async def collect() -> None:
        async for ev in stream:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and not final_at:
                final_at.append(time.monotonic())
                done.set()

    reader = asyncio.create_task(collect())
    step = SAMPLE_RATE // 50
    end_at = 0.0
    for start in range(0, len(frames), step):
        chunk = frames[start : start + step]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, len(chunk)))
        if start <= voiced_end < start + step:
            end_at = time.monotonic()
        await asyncio.sleep(0.02)
        if done.is_set():
            break
    stream.end_input()
    await asyncio.wait_for(reader, 30)
    await stream.aclose()
    return final_at[0] - end_at if final_at else float("nan")


async def bench_stt() -> None:
    from livekit.plugins import silero

    from agent.providers.whisper_stt import WhisperSTT, load_whisper

    clips = [speak(text) for text in CLIPS]
    for name in ("base", "tiny.en"):
        started = time.perf_counter()
        load_whisper(name, 2)
        loaded = time.perf_counter() - started
        whisper = WhisperSTT(model=name, vad=silero.VAD.load(min_silence_duration=0.35))
        rtf = []
        for clip in clips:
            audio = clip.astype(np.float32) / 32768
            started = time.perf_counter()
            whisper.transcribe(audio)
            rtf.append((time.perf_counter() - started) / (len(audio) / SAMPLE_RATE))
        delays = [await final_delay(whisper, clip) for clip in clips]
        print(
            f"STT whisper {name:8s} load {ms(loaded):>8s}  RTF {statistics.median(rtf):.3f}  "
            f"final transcript {ms(statistics.median(delays))} after end of speech (median of {len(clips)})"
        )


async def bench_tts() -> None:
    from agent.providers.hibari_tts import HibariTTS, load_hibari

    started = time.perf_counter()
    load_hibari("heart", 2)
    loaded = time.perf_counter() - started
    voice = HibariTTS()
    async for _ in voice.synthesize("Warming up."):  # the first run of the ONNX graph is slower
        pass
    for sentence in SENTENCES:
        started = time.perf_counter()
        first = None
        samples = 0
        async for ev in voice.synthesize(sentence):
            first = first or time.perf_counter() - started
            samples += ev.frame.samples_per_channel
        total = time.perf_counter() - started
        print(
            f"TTS hibari heart  load {ms(loaded):>8s}  first audio {ms(first or 0)} for {len(sentence.split())} words,"
            f" RTF {total / (samples / voice.sample_rate):.3f}"
        )


async def bench_llm() -> None:
    from agent.main import Assistant
    from agent.models import packaged_gguf
    from agent.providers.llama_llm import LlamaLLM, load_llama

    started = time.perf_counter()
    load_llama(str(packaged_gguf()), 4096, 2)
    loaded = time.perf_counter() - started
    model = LlamaLLM(model_path=str(packaged_gguf()))
    agent = Assistant()
    warm = llm.ChatContext()
    warm.add_message(role="system", content=agent.instructions)
    warm.add_message(role="user", content="Hello")
    prefix = model.warm(warm, list(agent.tools))
    ttft, rates = [], []
    for prompt in PROMPTS:
        ctx = llm.ChatContext()
        ctx.add_message(role="system", content=agent.instructions)
        ctx.add_message(role="user", content=prompt)
        started = time.perf_counter()
        first, pieces = None, 0
        async with model.chat(chat_ctx=ctx, tools=list(agent.tools)) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    first = first or time.perf_counter() - started
                    pieces += 1
        total = time.perf_counter() - started
        ttft.append(first or total)
        rates.append(pieces / max(total - (first or 0), 1e-6))
    print(
        f"LLM qwen2.5-1.5b  load {ms(loaded):>8s}  system+tools prefix {ms(prefix)} once;"
        f" first token {ms(statistics.median(ttft))}, {statistics.median(rates):.1f} text chunks/s (median of"
        f" {len(PROMPTS)}; a chunk is about a token)"
    )


async def main() -> None:
    await bench_stt()
    await bench_tts()
    await bench_llm()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
