"""One spoken turn through a real livekit-server: question audio in, the agent's spoken answer out; then the
metrics of that turn, scraped by a real Prometheus and read by the Grafana dashboard's queries."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest

from agent.main import Assistant
from agent.providers.whisper_stt import WhisperSTT
from tests.support.prometheus import dashboard_queries, exported_names, metric_names, prometheus, query, wait_until_up
from tests.support.rtc_client import Client
from tests.support.speech import SAMPLE_RATE, speak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_spoken_question_gets_spoken_answer_with_tool(stack, scripted_llm):
    client = Client(stack.token_url)
    await client.join()
    try:
        # The agent is dispatched by the token's room config, greets, then listens.
        await client.wait_for(lambda: client.agent_identity is not None, 30, "the agent's audio track")
        await client.wait_for(
            lambda: any("help" in t.lower() for t in client.texts(client.agent_identity)),
            30,
            "the greeting transcript",
        )
        await client.quiet(0.6)

        asked_at = time.monotonic()
        await client.say(speak("What time is it in Tokyo?"))
        question_end = client.last_voiced_at
        assert question_end is not None

        await client.wait_for(lambda: len(scripted_llm.requests) >= 1, 30, "the LLM's request")
        await client.wait_for(lambda: client.speech_since(question_end) is not None, 30, "the agent's spoken answer")
        first_audio = client.speech_since(question_end)
        await client.wait_for(
            lambda: any("tokyo" in t.lower() for t in client.texts(client.agent_identity)),
            30,
            "the answer transcript",
        )
        await client.quiet(1.0)
    finally:
        await client.close()

    voice_to_voice = first_audio - question_end
    print(f"\nvoice-to-voice (last voiced frame of the question -> first agent audio): {voice_to_voice * 1000:.0f} ms")

    # The user's words reached the agent's STT and came back on lk.transcription with the user's identity.
    heard = " ".join(client.texts("e2e-user")).lower()
    assert "time" in heard and "tokyo" in heard, heard

    # The LLM was asked once, with the tool offered, and called it: the tool's real result is the answer, said as it
    # is (no second LLM round to phrase it).
    first = scripted_llm.requests[0]
    assert all(r["messages"][-1]["role"] != "tool" for r in scripted_llm.requests), "asked again after the tool"
    offered = [t["function"]["name"] for t in first["tools"]]
    assert offered == [getattr(tool, "id", "") for tool in Assistant().tools]
    assert "get_time" in offered
    assert scripted_llm.headers[0]["Authorization"] == "Bearer test-key"
    assert first["model"] == "scripted-model"

    # What the agent said (its transcript) is the tool's result ...
    said = " ".join(client.texts(client.agent_identity))
    answer = re.search(r"It is \d\d:\d\d on \w+day, \w+ \d+ in Tokyo\.", said)
    assert answer, said

    # ... and the audio the client received says it too.
    reply = client.agent_audio(asked_at).astype(np.float32) / 32768.0
    assert reply.size > SAMPLE_RATE, "less than a second of agent audio"
    words = WhisperSTT(model="base").transcribe(reply).lower()
    print(f"agent audio transcribed: {words!r}")
    month = re.search(r"on \w+day, (\w+) \d+", answer.group()).group(1).lower()
    assert "tokyo" in words and month in words, words


def test_metrics_are_scraped_and_every_dashboard_query_reads_real_metrics(stack):
    """After the spoken turn above: each service's /metrics, then Debian's Prometheus scraping all three, and
    every query of the Grafana dashboard naming metrics the services export and evaluating in Prometheus."""
    s = stack.settings
    targets = {
        "agent": f"127.0.0.1:{s.agent_metrics_port}",
        "token-server": f"127.0.0.1:{s.token_server_port}",
        "livekit-server": f"127.0.0.1:{s.livekit_prometheus_port}",
    }
    exported: set[str] = set()
    for job, target in targets.items():
        response = httpx.get(f"http://{target}/metrics", timeout=5)
        assert response.status_code == 200, (job, response.status_code)
        exported |= exported_names(response.text)
    queries = dashboard_queries()
    missing = {(title, name) for title, expr in queries for name in metric_names(expr) if name not in exported}
    assert not missing, f"dashboard panels read metrics no service exports: {sorted(missing)}"

    with prometheus(targets) as base:
        wait_until_up(base, set(targets))
        for _title, expr in queries:
            query(base, expr)  # valid PromQL over what was scraped
        deadline = time.monotonic() + 15
        while not query(base, "voice_agent_voice_to_voice_seconds_count > 0") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert query(base, "voice_agent_voice_to_voice_seconds_count > 0"), "the spoken turn was not measured"
        assert query(base, 'voice_agent_audio_frames_total{direction="in"} > 0')
        assert query(base, 'token_server_requests_total{route="/api/token"} > 0')
