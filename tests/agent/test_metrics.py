"""The agent's Prometheus metrics count what a session does: tool calls by path and outcome, turns, stages."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import AgentSession, llm
from prometheus_client import REGISTRY, generate_latest

from agent import metrics, waterfall
from agent.main import ROUTED, Assistant
from agent.skills import CallContext
from tests.support.scripted_llm import ScriptedLLM


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def script(ctx: llm.ChatContext):
    last = ctx.items[-1]
    if last.type == "function_call_output":
        return f"Done: {last.output}"
    if "pi" in (last.text_content or ""):
        return ("calculate", {"expression": "1 / 0"})
    return "I can help with that."


async def test_tool_calls_are_counted_by_path_and_outcome():
    fast = dict(tool="get_time", outcome="ok", path="fast_path")
    failed = dict(tool="calculate", outcome="error", path="llm")
    before = (value("voice_agent_tool_calls_total", **fast), value("voice_agent_tool_calls_total", **failed))
    sessions = value("voice_agent_sessions_total")
    scripted = ScriptedLLM(script)
    async with scripted, AgentSession(llm=scripted, userdata=CallContext()) as session:
        metrics.attach(session, fast_path_prefix=ROUTED)
        await session.start(Assistant())
        assert value("voice_agent_sessions_active") >= 1
        await session.run(user_input="What time is it in Tokyo?")  # served by the fast path
        await session.run(user_input="Divide pi by zero for me")  # the LLM's call fails
    assert value("voice_agent_sessions_total") == sessions + 1
    assert value("voice_agent_tool_calls_total", **fast) == before[0] + 1
    assert value("voice_agent_tool_calls_total", **failed) == before[1] + 1


def test_a_turn_waterfall_fills_the_stage_histograms():
    count = value("voice_agent_voice_to_voice_seconds_count")
    fast = value("voice_agent_voice_to_voice_seconds_bucket", le="0.7")
    ttft = value("voice_agent_llm_ttft_seconds_sum")
    record = {
        "turn": 1,
        "speech_end": 1.0,
        "interrupted": False,
        "transcript": 0.45,
        "end_of_turn": 0.46,
        "llm_request": 0.47,
        "llm_first_token": 0.8,
        "tts_request": 0.82,
        "tts_first_audio": 0.9,
        "audio_out": 0.91,
    }
    metrics.observe_turn(record)
    assert value("voice_agent_voice_to_voice_seconds_count") == count + 1
    assert value("voice_agent_voice_to_voice_seconds_bucket", le="0.7") == fast  # 0.91 s is not under 0.7 s
    assert abs(value("voice_agent_llm_ttft_seconds_sum") - ttft - 0.33) < 1e-9
    text = generate_latest().decode()
    assert 'voice_agent_turn_stage_seconds_bucket{le="0.5",stage="transcript"}' in text
    # No room, participant or transcript ever becomes a label (HELP lines may say "group rooms").
    samples = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "room" not in samples and "identity" not in samples


async def test_the_waterfall_splits_the_wait_for_the_vad_from_the_network():
    session = AgentSession()
    clock = waterfall.attach(session)
    voice = rtc.AudioFrame((np.ones(320) * 8000).astype(np.int16).tobytes(), 16000, 1, 320)
    quiet = rtc.AudioFrame(np.zeros(320, dtype=np.int16).tobytes(), 16000, 1, 320)

    async def microphone():
        for frame in (voice, voice, quiet, quiet):
            yield frame
            await asyncio.sleep(0.02)

    passed = [frame async for frame in waterfall.heard(session, microphone())]
    assert len(passed) == 4  # the audio goes on to the STT untouched
    clock.voiced_until = clock.loud_at  # what the user's speaking -> listening change does
    record = clock.finish({"stopped_speaking_at": clock.loud_at + 0.115, "transcription_delay": 0.35}, {}, False)
    assert record["vad_delay"] == pytest.approx(0.115, abs=1e-3)
    assert record["transcript"] == pytest.approx(0.35, abs=1e-3)


async def test_each_turn_record_says_how_it_was_answered():
    scripted = ScriptedLLM(script)
    records: list[dict] = []
    async with scripted, AgentSession(llm=scripted, userdata=CallContext()) as session:
        clock = waterfall.attach(session)
        clock.publish = records.append
        await session.start(Assistant())
        for said in ("What time is it in Tokyo?", "Hello there", "Divide pi by zero for me"):
            clock.user_stopped_at = time.time()  # text mode has no speech to end: the turn's clock starts here
            await session.run(user_input=said)
    assert [(r["path"], r["tools"]) for r in records] == [
        ("fast", ["get_time"]),
        ("llm", []),
        ("llm_tool", ["calculate"]),
    ]
