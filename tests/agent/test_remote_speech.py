"""Speech from OpenAI-compatible servers (STT_BASE_URL, TTS_BASE_URL): what the plugins send and what comes back,
against a stand-in speaking the real wire formats."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator

import numpy as np
import pytest
from livekit import rtc

from agent import pipeline
from agent.settings import AgentSettings
from tests.support.openai_standin import TTS_RATE, OpenAIStandIn
from tests.support.speech import SAMPLE_RATE


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIStandIn]:
    standin = OpenAIStandIn(transcript="Book a table for two at eight.").start()
    yield standin
    standin.stop()


def settings(server: OpenAIStandIn) -> AgentSettings:
    return AgentSettings(
        _env_file=None,
        stt_base_url=server.base_url,
        stt_api_key="stt-secret",
        tts_base_url=server.base_url,
        tts_api_key="tts-secret",
        provider_fallback=False,  # the provider itself, not its fallback
    )


async def test_remote_stt_sends_a_wav_and_returns_the_transcript(server):
    stt = pipeline.build_stt(settings(server))
    samples = (0.2 * np.sin(np.arange(SAMPLE_RATE) / 5) * 32767).astype(np.int16)
    event = await stt.recognize(rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, len(samples)))
    assert event.alternatives[0].text == "Book a table for two at eight."
    sent = server.stt_requests[-1]
    assert sent["headers"]["Authorization"] == "Bearer stt-secret"
    assert sent["fields"]["model"] == "whisper-1" and sent["fields"].get("language") == "en"
    with wave.open(io.BytesIO(sent["audio"])) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        assert wav.getnframes() / wav.getframerate() == pytest.approx(1.0, abs=0.05)


async def test_remote_tts_streams_pcm(server):
    tts = pipeline.build_tts(settings(server))
    before = len(server.tts_requests)
    frames = [ev.frame async for ev in tts.synthesize("Your table is booked. See you at eight tonight.")]
    assert frames and {f.sample_rate for f in frames} == {TTS_RATE}
    audio = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert np.abs(audio).max() > 5000
    request = server.tts_requests[before]
    assert request["headers"]["Authorization"] == "Bearer tts-secret"
    assert request["body"]["model"] == "tts-1" and request["body"]["voice"] == "alloy"
    assert request["body"]["response_format"] == "pcm"
    assert request["body"]["input"] == "Your table is booked. See you at eight tonight."
