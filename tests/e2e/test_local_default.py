"""The offline default stack (packaged Whisper, Qwen 1.5B on llama.cpp, hibari) answers spoken questions."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support.rtc_client import Client
from tests.support.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.models, pytest.mark.timeout(300)]


async def ask(client: Client, question: str) -> tuple[str, float]:
    """Speaks a question; returns the agent's reply transcript and the voice-to-voice time."""
    before = len(client.texts(client.agent_identity))
    await client.say(speak(question))
    end = client.last_voiced_at
    await client.wait_for(lambda: client.speech_since(end) is not None, 60, f"a spoken answer to {question!r}")
    first_audio = client.speech_since(end)
    await client.wait_for(lambda: len(client.texts(client.agent_identity)) > before, 60, "the answer transcript")
    await client.quiet(1.0)
    return " ".join(client.texts(client.agent_identity)[before:]), first_audio - end


async def test_offline_default_answers_with_its_tool_and_without(local_stack):
    client = Client(local_stack.token_url, identity="local-user")
    await client.join()
    try:
        await client.wait_for(lambda: client.agent_identity is not None, 30, "the agent's audio track")
        await client.wait_for(lambda: client.texts(client.agent_identity), 30, "the greeting")
        await client.quiet(0.6)

        asked = datetime.now(ZoneInfo("Asia/Tokyo"))
        time_reply, time_v2v = await ask(client, "What time is it in Tokyo?")
        fact_reply, fact_v2v = await ask(client, "What is the largest planet in the solar system?")
    finally:
        await client.close()

    print(f"\noffline default, voice-to-voice: tool turn {time_v2v * 1000:.0f} ms, plain turn {fact_v2v * 1000:.0f} ms")
    print(f"replies: {time_reply!r} / {fact_reply!r}")
    heard = " ".join(client.texts("local-user")).lower()
    assert "tokyo" in heard and "planet" in heard, heard
    # The time in the reply is Tokyo's real time, which only the tool knows.
    times = {(asked + timedelta(minutes=m)).strftime("%H:%M") for m in range(-1, 4)}
    times |= {t.lstrip("0") for t in times}
    spoken_times = set(re.findall(r"\d{1,2}:\d\d", time_reply))
    assert spoken_times & times, f"{time_reply!r} does not give Tokyo's time {sorted(times)}"
    assert "jupiter" in fact_reply.lower(), fact_reply
