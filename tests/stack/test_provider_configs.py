"""Every provider configuration a user can choose starts the real worker the way `scripts/up` starts it
(`python -m agent.main start`, the same preflight and model loading) and answers a spoken turn: each cloud key
alone, all of them together, each with the local fallback on and off (against stand-ins that speak each service's
wire format), and all keys set with every service unreachable (the local models answer)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stack.services import Stack, free_port
from tests.support.deepgram_standin import DeepgramStandIn
from tests.support.elevenlabs_standin import ElevenLabsStandIn
from tests.support.openai_standin import OpenAIStandIn
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client
from tests.support.speech import speak

pytestmark = [pytest.mark.e2e, pytest.mark.models, pytest.mark.timeout(420)]

SKILL = "What time is it in Tokyo?"  # the fast path answers it: no LLM needed, whichever LLM is configured
CHAT = "Tell me a fun fact about the moon."  # only an LLM answers it (the weather, the agent now declines at once)
NO_KEYS = {
    "DEEPGRAM_API_KEY": "",
    "ELEVEN_API_KEY": "",
    "OPENAI_API_KEY": "",
    "LLM_BASE_URL": "",
    "STT_BASE_URL": "",
    "TTS_BASE_URL": "",
    "STT_PROVIDER": "auto",
    "TTS_PROVIDER": "auto",
    "LLM_PROVIDER": "auto",
}


@dataclass
class Services:
    stack: Stack
    deepgram: DeepgramStandIn
    elevenlabs: ElevenLabsStandIn
    openai: OpenAIStandIn
    data: Path
    closed: list[int] = field(default_factory=list)

    def env(self, keys: set[str], fallback: bool) -> dict[str, str]:
        env = {**NO_KEYS, "PROVIDER_FALLBACK": str(fallback).lower(), "DATA_DIR": str(self.data)}
        if "deepgram" in keys:
            env |= {"DEEPGRAM_API_KEY": "dg-key", "DEEPGRAM_BASE_URL": self.deepgram.url}
        if "elevenlabs" in keys:
            env |= {"ELEVEN_API_KEY": "el-key", "ELEVENLABS_BASE_URL": self.elevenlabs.base_url}
        if "openai" in keys:
            env |= {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": self.openai.base_url}
        return env


@pytest.fixture(scope="module")
def services(artifacts: Path, tmp_path_factory) -> Iterator[Services]:
    log_dir = artifacts / "logs-provider-configs"
    log_dir.mkdir(exist_ok=True)
    deepgram = DeepgramStandIn(api_key="dg-key").start()
    elevenlabs = ElevenLabsStandIn(api_key="el-key").start()
    openai = OpenAIStandIn().start()
    try:
        with Stack(loopback_ports(), with_agent=False, log_dir=log_dir) as stack:
            yield Services(stack, deepgram, elevenlabs, openai, tmp_path_factory.mktemp("agent-data"))
    finally:
        openai.stop()
        elevenlabs.stop()
        deepgram.stop()


async def one_turn(services: Services, env: dict[str, str], question: str, identity: str) -> tuple[str, str]:
    """Starts a worker with `env`, asks one spoken question; returns what the caller was heard saying and what the
    agent answered (its transcript), after checking the answer was audible."""
    stack = services.stack
    agent = stack.start_agent(env, timeout=300)
    client = Client(stack.token_url, identity=identity)
    try:
        await client.join()
        await client.wait_for(lambda: client.agent_identity is not None, 30, "the agent's audio track")
        await client.wait_for(lambda: client.texts(client.agent_identity), 30, "the greeting")
        await client.quiet(0.6)
        before = len(client.texts(client.agent_identity))
        await client.say(speak(question))
        end = client.last_voiced_at
        await client.wait_for(lambda: client.speech_since(end) is not None, 90, f"a spoken answer to {question!r}")
        await client.wait_for(lambda: len(client.texts(client.agent_identity)) > before, 30, "the answer transcript")
        await client.quiet(0.8)
        heard = " ".join(client.texts(identity))
        answer = " ".join(client.texts(client.agent_identity)[before:])
    finally:
        await client.close()
        stack.stop_service(agent)
    assert agent.proc is not None and agent.proc.returncode is not None
    return heard, answer


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_deepgram_key_alone(services, fallback):
    services.deepgram.transcript = SKILL
    connections = len(services.deepgram.connections)
    heard, answer = await one_turn(services, services.env({"deepgram"}, fallback), SKILL, f"dg-{fallback}")
    assert heard.strip() == SKILL  # the words came from Deepgram (the stand-in's transcript), not local Whisper
    assert "tokyo" in answer.lower(), answer
    new = services.deepgram.connections[connections:]
    assert new and all(c.headers.get("Authorization") == "Token dg-key" for c in new)


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_elevenlabs_key_alone(services, fallback):
    spoken = len(services.elevenlabs.received_text())
    heard, answer = await one_turn(services, services.env({"elevenlabs"}, fallback), SKILL, f"el-{fallback}")
    assert "tokyo" in heard.lower(), heard  # local Whisper
    assert "tokyo" in answer.lower(), answer
    # The answer's words went to ElevenLabs, whose audio the caller heard.
    assert "Tokyo" in services.elevenlabs.received_text()[spoken:]


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_openai_key_alone_selects_openai(services, fallback):
    asked = len(services.openai.requests)
    heard, answer = await one_turn(services, services.env({"openai"}, fallback), CHAT, f"oa-{fallback}")
    requests = services.openai.requests[asked:]
    assert requests, "the LLM request did not go to OpenAI"
    assert requests[0]["model"] == "gpt-4o-mini"  # the default model for OPENAI_API_KEY alone
    assert services.openai.headers[asked]["Authorization"] == "Bearer sk-test"
    assert "moon" in heard.lower(), heard
    assert answer.startswith("You said"), answer  # the stand-in's reply, not the local model's


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
async def test_all_cloud_keys_together(services, fallback):
    services.deepgram.transcript = CHAT
    asked, spoken = len(services.openai.requests), len(services.elevenlabs.received_text())
    env = services.env({"deepgram", "elevenlabs", "openai"}, fallback)
    heard, answer = await one_turn(services, env, CHAT, f"all-{fallback}")
    assert heard.strip() == CHAT
    assert len(services.openai.requests) > asked
    assert answer == f"You said: {CHAT}", answer
    assert "You said" in services.elevenlabs.received_text()[spoken:]


async def test_all_cloud_keys_set_and_every_service_unreachable_the_local_models_answer(services):
    closed = [free_port() for _ in range(3)]  # nothing listens there: connections are refused
    env = {
        **NO_KEYS,
        "PROVIDER_FALLBACK": "true",
        "DATA_DIR": str(services.data),
        "DEEPGRAM_API_KEY": "dg-key",
        "DEEPGRAM_BASE_URL": f"ws://127.0.0.1:{closed[0]}/v1/listen",
        "ELEVEN_API_KEY": "el-key",
        "ELEVENLABS_BASE_URL": f"http://127.0.0.1:{closed[1]}/v1",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{closed[2]}/v1",
    }
    heard, answer = await one_turn(services, env, "What is the largest planet in the solar system?", "unreachable")
    assert "planet" in heard.lower(), heard  # local Whisper took over from Deepgram
    assert "jupiter" in answer.lower(), answer  # the local LLM took over from OpenAI; hibari spoke it
