"""ElevenLabs TTS (livekit-plugins-elevenlabs, as `pipeline.build_tts` builds it) against a local stand-in that
speaks ElevenLabs' real streaming protocol (tests/support/elevenlabs_standin.py): the multi-context websocket for
`stream()`, the HTTP streaming endpoint for `synthesize()`, and a whole agent turn through an AgentSession."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, APIConnectOptions, APIError, utils
from livekit.plugins import elevenlabs

from agent import pipeline
from agent.settings import AgentSettings
from tests.agent.test_barge_in_audio import RealtimeSpeaker
from tests.support.elevenlabs_standin import CHAR_S, ElevenLabsStandIn, parse_format
from tests.support.scripted_llm import ScriptedLLM

TEXT = "Hello there. Your table for two is booked for eight o'clock tonight."
CHUNKS = ["Hello there. ", "Your table for two ", "is booked for eight ", "o'clock tonight."]
API_KEY = "el-secret"


def normalized(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def standin():
    server = ElevenLabsStandIn().start()
    yield server
    server.stop()


def settings_for(server: ElevenLabsStandIn) -> AgentSettings:
    return AgentSettings(
        _env_file=None,
        tts_provider="elevenlabs",
        eleven_api_key=API_KEY,
        elevenlabs_base_url=server.base_url,
        provider_fallback=False,
    )


def samples_of(frames: list[rtc.AudioFrame]) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames]).astype(np.float32) / 32768.0


def check_connection(server: ElevenLabsStandIn, settings: AgentSettings, tts: elevenlabs.TTS) -> None:
    """What the plugin sent when it opened the websocket."""
    assert len(server.connections) == 1
    conn = server.connections[0]
    assert conn.path == f"/v1/text-to-speech/{settings.elevenlabs_voice_id}/multi-stream-input"
    assert conn.voice_id == settings.elevenlabs_voice_id
    assert conn.headers.get("xi-api-key") == API_KEY
    assert conn.query["model_id"] == settings.elevenlabs_model == "eleven_turbo_v2_5"
    codec, rate, _ = parse_format(conn.query["output_format"])
    assert codec in ("pcm", "mp3") and rate == tts.sample_rate
    assert conn.query.get("sync_alignment") == "true"


def build(settings: AgentSettings, encoding: str | None) -> elevenlabs.TTS:
    """The pipeline's TTS (its own output format), or the same plugin asking for another format."""
    tts = pipeline.build_tts(settings)
    assert isinstance(tts, elevenlabs.TTS)
    if encoding is None:
        return tts
    return elevenlabs.TTS(
        voice_id=settings.elevenlabs_voice_id,
        model=settings.elevenlabs_model,
        api_key=API_KEY,
        base_url=settings.elevenlabs_base_url,
        encoding=encoding,
    )


@pytest.mark.timeout(20)
@pytest.mark.parametrize("encoding", [None, "pcm_24000"], ids=["pipeline-default", "pcm_24000"])
async def test_streamed_text_comes_back_as_audio(standin, encoding):
    settings = settings_for(standin)
    async with utils.http_context.open():
        tts = build(settings, encoding)
        stream = tts.stream()
        for chunk in CHUNKS:
            stream.push_text(chunk)
            await asyncio.sleep(0.05)
        stream.end_input()
        frames = [ev.frame async for ev in stream]
        await stream.aclose()
        await tts.aclose()

    check_connection(standin, settings, tts)
    if encoding:
        assert standin.connections[0].query["output_format"] == encoding
    contexts = standin.contexts()
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx.id, "the plugin speaks the multi-context protocol"
    assert normalized(ctx.text) == TEXT, "the whole text, each chunk once"
    assert normalized(" ".join(ctx.generated)) == TEXT, "each word spoken once"
    assert ctx.closed and ctx.final_sent
    assert ctx.flushes >= 1

    assert frames and all(f.sample_rate == tts.sample_rate and f.num_channels == 1 for f in frames)
    produced = standin.audio_seconds()
    assert produced == pytest.approx(len(TEXT) * CHAR_S, rel=0.05)
    got = sum(f.duration for f in frames)
    assert got == pytest.approx(produced, abs=0.25), f"{got:.2f} s of audio for {produced:.2f} s produced"
    samples = samples_of(frames)
    assert float(np.sqrt(np.mean(samples**2))) > 0.1, "the audio is silent"


@pytest.mark.timeout(20)
async def test_synthesize_uses_the_http_streaming_endpoint(standin):
    settings = settings_for(standin)
    async with utils.http_context.open():
        tts = pipeline.build_tts(settings)
        frames = [ev.frame async for ev in tts.synthesize("Hello there.")]
        await tts.aclose()

    assert len(standin.http_requests) == 1
    req = standin.http_requests[0]
    assert req["path"] == f"/v1/text-to-speech/{settings.elevenlabs_voice_id}/stream"
    assert req["headers"].get("xi-api-key") == API_KEY
    assert req["body"]["text"] == "Hello there."
    assert req["body"]["model_id"] == settings.elevenlabs_model
    assert parse_format(req["query"]["output_format"])[1] == tts.sample_rate
    assert frames and all(f.sample_rate == tts.sample_rate for f in frames)
    assert sum(f.duration for f in frames) == pytest.approx(len("Hello there.") * CHAR_S, abs=0.2)


@pytest.mark.timeout(20)
async def test_an_agent_reply_is_spoken_through_elevenlabs(standin):
    settings = settings_for(standin)
    reply = TEXT
    speaker = RealtimeSpeaker()
    async with utils.http_context.open():
        tts = pipeline.build_tts(settings)
        scripted = ScriptedLLM(lambda chat_ctx: reply)
        session = AgentSession(llm=scripted, tts=tts)
        session.output.audio = speaker
        try:
            await session.start(Agent(instructions="You are a restaurant's receptionist."))
            started = time.monotonic()
            handle = session.generate_reply(user_input="Can I book a table for two at eight tonight?")
            await asyncio.wait_for(handle.wait_for_playout(), 15)
            elapsed = time.monotonic() - started
        finally:
            await session.aclose()
            await speaker.aclose()
            await tts.aclose()

    assert scripted.calls, "the LLM was asked"
    check_connection(standin, settings, tts)
    assert normalized(standin.received_text()) == reply, "the stand-in received the reply text once"
    produced = standin.audio_seconds()
    assert produced == pytest.approx(len(reply) * CHAR_S, rel=0.05)
    assert len(speaker.segments) == 1
    segment = speaker.segments[0]
    assert segment.pushed == pytest.approx(produced, abs=0.25), "the stand-in's audio reached the output"
    assert segment.interrupted is False and segment.played == pytest.approx(segment.pushed, abs=0.1)
    assert elapsed >= produced * 0.9, "played in real time"


@pytest.mark.timeout(20)
async def test_kill_cuts_the_stream_mid_reply(standin):
    """The hook a fallback test needs: the service dies after a second of audio and the plugin sees an error."""
    standin.kill_after_audio_s = 1.0
    settings = settings_for(standin)
    frames: list[rtc.AudioFrame] = []
    async with utils.http_context.open():
        tts = pipeline.build_tts(settings)
        stream = tts.stream(conn_options=APIConnectOptions(max_retry=0, timeout=5))
        stream.push_text(TEXT)
        stream.end_input()
        with pytest.raises(APIError):
            async for ev in stream:
                frames.append(ev.frame)
        await stream.aclose()
        await tts.aclose()

    assert standin.connections[0].aborted
    assert 0 < standin.audio_seconds() < len(TEXT) * CHAR_S
