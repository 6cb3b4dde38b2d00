"""A cloud provider dies mid-call: the same call goes on with the local providers, and the switch is counted."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import pytest
from livekit.agents import Agent, AgentSession, llm, utils
from prometheus_client import REGISTRY

from agent import metrics, pipeline
from agent.settings import AgentSettings
from tests.agent.test_barge_in_audio import RealtimeSpeaker, ScriptedMic
from tests.support.deepgram_standin import DeepgramStandIn
from tests.support.openai_standin import OpenAIStandIn
from tests.support.scripted_llm import ScriptedLLM
from tests.support.speech import speak

pytestmark = [pytest.mark.models, pytest.mark.timeout(180)]


def fallbacks(role: str) -> float:
    return REGISTRY.get_sample_value("voice_agent_provider_fallbacks_total", {"role": role}) or 0.0


async def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def answer(ctx: llm.ChatContext) -> str:
    users = [i for i in ctx.items if i.type == "message" and i.role == "user"]
    return f"You asked: {users[-1].text_content}" if users else "Hello."


@dataclass
class VoiceCall:
    """A voice session on the providers `settings` choose (the LLM scripted), heard through a scripted mic."""

    session: AgentSession
    mic: ScriptedMic
    speaker: RealtimeSpeaker
    heard: list[str]  # final transcripts

    @classmethod
    async def start(cls, settings: AgentSettings) -> VoiceCall:
        vad = pipeline.build_vad(settings)
        shared = pipeline.Shared(vad=vad, notes=None, memory=None)  # type: ignore[arg-type]
        session = AgentSession(
            vad=vad,
            stt=pipeline.build_stt(settings, vad),
            llm=ScriptedLLM(answer),
            tts=pipeline.build_tts(settings),
            turn_handling=pipeline.turn_handling(settings, shared),
        )
        for role, provider in (("stt", session.stt), ("tts", session.tts)):
            metrics.watch_fallbacks(role, provider)
        call = cls(session, ScriptedMic(), RealtimeSpeaker(), [])
        session.on("user_input_transcribed", lambda ev: ev.is_final and call.heard.append(ev.transcript))
        session.input.audio, session.output.audio = call.mic, call.speaker
        await session.start(Agent(instructions="You are a helpful voice assistant."))
        return call

    async def first_turn(self, transcript: str) -> None:
        """The cloud providers hear the first request and speak the reply."""
        await asyncio.sleep(0.5)
        self.mic.play(speak("Hello, could I book a table please?"))
        await wait_until(lambda: self.heard, 30, "the cloud transcript")
        assert self.heard[0] == transcript
        await wait_until(lambda: any(s.finished_at for s in self.speaker.segments), 30, "the cloud voice's reply")

    async def close(self) -> None:
        await self.session.aclose()
        await self.speaker.aclose()


async def test_cloud_speech_dies_mid_call_and_local_models_finish_the_call(caplog):
    caplog.set_level(logging.WARNING, logger="agent.metrics")
    cloud = OpenAIStandIn(transcript="Can I book a table for two?").start()
    settings = AgentSettings(_env_file=None, stt_base_url=cloud.base_url, tts_base_url=cloud.base_url)
    assert settings.provider_fallback  # the default
    before = {role: fallbacks(role) for role in ("stt", "tts")}
    call = await VoiceCall.start(settings)
    heard, mic, speaker = call.heard, call.mic, call.speaker
    try:
        await call.first_turn("Can I book a table for two?")
        assert any("book a table" in r["body"]["input"] for r in cloud.tts_requests)  # the reply, phrase by phrase

        cloud.stop()  # the service goes away mid-call

        # Turn 2: the same session, now on local Whisper and hibari.
        replies = len(speaker.segments)
        mic.play(speak("What is the weather like in Paris this weekend?"))
        await wait_until(lambda: len(heard) >= 2, 60, "a transcript after the cloud STT died")
        assert "paris" in heard[1].lower(), heard
        await wait_until(
            lambda: len(speaker.segments) > replies and speaker.segments[-1].finished_at, 60, "the local voice's reply"
        )
        assert speaker.segments[-1].played > 1.0  # "You asked: What is the weather like in Paris ..." in hibari
    finally:
        await call.close()
    assert fallbacks("stt") == before["stt"] + 1 and fallbacks("tts") == before["tts"] + 1
    assert any("failed; the next provider takes over" in r.getMessage() for r in caplog.records)


async def test_streaming_cloud_stt_dies_mid_utterance_and_local_whisper_hears_all_of_it(caplog):
    """Deepgram's socket drops while the person is speaking: the words already sent to it are not lost, because the
    local STT that takes over starts from the audio no final transcript covered yet."""
    caplog.set_level(logging.WARNING, logger="agent.metrics")
    cloud = DeepgramStandIn(transcript="Can I book a table for two?", api_key="dg-key").start()
    settings = AgentSettings(_env_file=None, deepgram_api_key="dg-key", deepgram_base_url=cloud.url)
    before = fallbacks("stt")
    async with utils.http_context.open():  # the plugin's aiohttp session, as a worker's job context gives it
        call = await VoiceCall.start(settings)
        try:
            await call.first_turn("Can I book a table for two?")
            clip = call.mic.play(speak("What is the weather like in Paris this weekend?"))
            await wait_until(lambda: clip.started_at and time.time() > clip.started_at + 1.5, 10, "mid-utterance")
            cloud.kill()  # "What is the weather like" went to Deepgram, which never answers it

            await wait_until(lambda: len(call.heard) >= 2, 60, "a transcript after the cloud STT died")
            assert "weather" in call.heard[1].lower() and "paris" in call.heard[1].lower(), call.heard
            segments = call.speaker.segments
            await wait_until(lambda: len(segments) >= 2 and segments[-1].finished_at, 60, "the second reply")
        finally:
            await call.close()
            cloud.stop()
    assert fallbacks("stt") == before + 1


async def test_cloud_llm_dies_mid_call_and_the_local_llm_answers_the_same_session(caplog):
    caplog.set_level(logging.WARNING, logger="agent.metrics")
    cloud = OpenAIStandIn().start()
    settings = AgentSettings(_env_file=None, llm_base_url=cloud.base_url, llm_api_key="test-key", llm_model="m")
    model = pipeline.build_llm(settings)
    assert isinstance(model, llm.FallbackAdapter), "an OpenAI-compatible LLM gets the local one as its fallback"
    metrics.watch_fallbacks("llm", model)
    before = fallbacks("llm")
    async with AgentSession(llm=model) as session:
        await session.start(Agent(instructions="You are a helpful voice assistant. Answer in one short sentence."))
        first = await session.run(user_input="Hello, who am I talking to?")
        said = first.expect.next_event().is_message(role="assistant").event().item.text_content
        assert said == "You said: Hello, who am I talking to?", said  # the cloud stand-in's answer

        cloud.stop()  # the service goes away mid-call

        second = await session.run(user_input="What is the capital of France?")
        said = second.expect.next_event().is_message(role="assistant").event().item.text_content
        assert "paris" in said.lower() and not said.startswith("You said"), said  # the packaged Qwen's answer
    assert fallbacks("llm") == before + 1
    assert any("failed; the next provider takes over" in r.getMessage() for r in caplog.records)
