"""The README's two commands, run the way a fresh machine runs them: uv is not on PATH (nor is the user's local bin
folder), so every tool the scripts install must be reachable from the scripts' own shell, not only from a child."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import loopback_ports

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
HIDDEN = {"uv", "uvx"}


def path_without_uv(tmp_path: Path) -> str:
    """A PATH with every program this one has, except uv (and without ~/.local/bin at all)."""
    bins = tmp_path / "bin"
    bins.mkdir(exist_ok=True)
    local_bin = Path.home() / ".local" / "bin"
    for folder in os.environ["PATH"].split(os.pathsep):
        if not folder or Path(folder) == local_bin or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            link = bins / entry.name
            if entry.name in HIDDEN or link.exists() or not os.access(entry, os.X_OK) or entry.is_dir():
                continue
            link.symlink_to(entry)
    assert shutil.which("uv", path=str(bins)) is None
    return str(bins)


def fresh_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "PYTEST"))}
    return {**env, "PATH": path_without_uv(tmp_path), **extra}


def test_uv_is_installed_into_a_cache_that_does_not_exist_yet_and_is_reachable(tmp_path):
    cache = tmp_path / "cache" / "voice-agent"
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail; source scripts/lib.sh; ensure_uv; uv --version; command -v uv"],
        cwd=REPO,
        env=fresh_env(tmp_path, VOICE_AGENT_CACHE=str(cache)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    version, where = result.stdout.strip().splitlines()[-2:]
    assert version.startswith("uv "), result.stdout
    assert Path(where).is_relative_to(cache), where


def test_scripts_up_prints_ready_and_serves_without_uv_on_path(tmp_path):
    ports = loopback_ports()
    env = fresh_env(
        tmp_path,
        **{name.upper(): str(value) for name, value in ports.model_dump().items() if name.endswith("_port")},
        DATA_DIR=str(tmp_path / "data"),
        LLM_BASE_URL="",
        OPENAI_API_KEY="",
    )
    proc = subprocess.Popen(
        ["bash", "scripts/up"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("Ready.") or time.monotonic() > deadline:
                break
        assert any(line.startswith("Ready.") for line in lines), "\n".join(lines[-30:])
        url = f"http://127.0.0.1:{ports.token_server_port}"
        assert any(url in line for line in lines), "\n".join(lines[-30:])
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "\n".join(lines[-20:]) + rest
    assert "stopped." in rest


def test_scripts_test_runs_without_uv_on_path(tmp_path):
    """The README's test command (what CI runs), on one quick test file."""
    result = subprocess.run(
        ["bash", "scripts/test", "-q", "tests/stack/test_startup_errors.py", "-k", "port_in_use"],
        cwd=REPO,
        env=fresh_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "1 passed" in result.stdout, result.stdout[-2000:]
