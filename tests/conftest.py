from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.services import Stack
from tests.support.openai_standin import OpenAIStandIn
from tests.support.ports import loopback_ports

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def scripted_llm() -> Iterator[OpenAIStandIn]:
    server = OpenAIStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scripted_env(scripted_llm: OpenAIStandIn, tmp_path_factory) -> dict[str, str]:
    """The agent's environment for a stack whose LLM is the scripted stand-in."""
    return {
        "LLM_BASE_URL": scripted_llm.base_url,
        "LLM_API_KEY": "test-key",
        "LLM_MODEL": "scripted-model",
        # These tests follow tool calls made by the LLM, so the skills fast path steps aside.
        "SKILL_FAST_PATH": "false",
        # Notes and memories of test callers stay out of the user's own data.
        "DATA_DIR": str(tmp_path_factory.mktemp("agent-data")),
    }


@pytest.fixture(scope="module")
def stack(scripted_env: dict[str, str], artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """livekit-server + agent worker (local STT/TTS, scripted OpenAI-compatible LLM) + token server."""
    log_dir = artifacts / f"logs-{request.module.__name__.rsplit('.', 1)[-1]}"
    log_dir.mkdir(exist_ok=True)
    with Stack(loopback_ports(), env=scripted_env, log_dir=log_dir) as running:
        yield running


@pytest.fixture(scope="module")
def local_stack(artifacts: Path, tmp_path_factory) -> Iterator[Stack]:
    """The offline default: local Whisper, local llama.cpp LLM, local hibari TTS."""
    log_dir = artifacts / "logs-local-default"
    log_dir.mkdir(exist_ok=True)
    env = {"LLM_BASE_URL": "", "DATA_DIR": str(tmp_path_factory.mktemp("agent-data"))}
    with Stack(loopback_ports(), env=env, log_dir=log_dir) as running:
        yield running
