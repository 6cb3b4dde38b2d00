"""Barge-in at a real client through the SFU: talking over the agent stops its audio; a cough does not."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.support.rtc_client import Client
from tests.support.speech import SAMPLE_RATE, rms, speak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LOUD = 0.005


def audio_stopped_at(client: Client, since: float, quiet_s: float = 0.3) -> float | None:
    """Start of the first stretch of `quiet_s` without agent audio after `since`."""
    frames = [(at, rms(pcm)) for at, pcm in client.agent_frames if at > since]
    start = None
    for at, level in frames:
        if level > LOUD:
            start = None
        elif start is None:
            start = at
        elif at - start >= quiet_s:
            return start
    return None


async def start_long_answer(client: Client) -> float:
    await client.wait_for(lambda: client.agent_identity is not None, 30, "the agent's audio track")
    await client.wait_for(lambda: client.texts(client.agent_identity), 30, "the greeting")
    await client.quiet(0.6)
    await client.say(speak("Please tell me a long story."))
    asked = client.last_voiced_at
    await client.wait_for(lambda: client.speech_since(asked) is not None, 30, "the story to start")
    started = client.speech_since(asked)
    await client.wait_for(lambda: time.monotonic() - started > 2.0, 5, "two seconds of story")
    return started


async def test_speaking_over_the_agent_stops_it_quickly(stack):
    client = Client(stack.token_url, identity="interrupter")
    await client.join()
    try:
        await start_long_answer(client)
        interruption = speak("Wait, stop, stop. I have a question.")
        first_voiced = int(np.argmax(np.abs(interruption) > 0.02 * 32768)) / SAMPLE_RATE
        sent = time.monotonic()
        await client.say(interruption)
        speech_start = sent + first_voiced
        await client.wait_for(lambda: audio_stopped_at(client, speech_start) is not None, 10, "the agent to stop")
        stopped = audio_stopped_at(client, speech_start)
    finally:
        await client.close()
    barge_in = stopped - speech_start
    print(f"\nbarge-in: start of the user's speech -> agent audio stopped at the client: {barge_in * 1000:.0f} ms")
    assert 0 < barge_in < 2.0
    story = " ".join(client.texts(client.agent_identity))
    assert "Sentence 12" not in story, "the agent finished its story despite the interruption"


async def test_a_cough_does_not_stop_the_agent(stack):
    client = Client(stack.token_url, identity="cougher")
    await client.join()
    try:
        await start_long_answer(client)
        rng = np.random.default_rng(7)
        cough = rng.normal(0, 0.3, int(0.15 * SAMPLE_RATE)) * 32767 * np.hanning(int(0.15 * SAMPLE_RATE))
        coughed = time.monotonic()
        await client.say(cough.astype(np.int16))
        await client.wait_for(lambda: time.monotonic() - coughed > 4.0, 6, "four seconds after the cough")
    finally:
        await client.close()
    # The story kept playing: audio within every second after the cough.
    loud = [at for at, pcm in client.agent_frames if at > coughed and rms(pcm) > LOUD]
    assert loud, "the agent went silent after a cough"
    gaps = np.diff([coughed, *loud])
    assert gaps.max() < 1.5, f"the agent paused {gaps.max():.1f} s after a cough"
