"""Whisper sizes that are not packaged (STT_MODEL=small, large-v3, ...): downloaded once on first use from the Hugging
Face hub with a progress bar, cached, reused without asking the hub again, and a clear one-line stop at start-up when
the hub cannot be reached and nothing is cached. The downloads go through huggingface_hub's real code (the code
faster-whisper's own download_model uses) against a loopback stand-in for the hub that speaks its HTTP API and serves,
as "Systran/faster-whisper-small", the files of the packaged Whisper base model."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import faster_whisper.utils
import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.utils import _detect_agent, _http

from agent import models, pipeline
from agent.providers.whisper_stt import WhisperSTT, load_whisper
from agent.settings import AgentSettings
from stack.services import free_port
from tests.stack.test_startup_errors import one_line
from tests.support.hf_hub_standin import HubRepo, HubStandIn
from tests.support.speech import speak

pytestmark = [pytest.mark.models, pytest.mark.timeout(120)]

REPO = "Systran/faster-whisper-small"
MODEL_FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.json")
REPO_INFO = ("GET", f"/api/models/{REPO}/revision/main")


@pytest.fixture(scope="module")
def base_folder() -> Path:
    return Path(models.whisper_model("base"))


def point_hub_at(endpoint: str, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported: set the
    variables (for anything that reads them later) and the module constants; monkeypatch restores both."""
    home.mkdir(parents=True, exist_ok=True)
    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_OFFLINE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(_detect_agent, "_registry", None)  # fetched once per process: from this hub, in this test
    _http.close_session()  # no kept-alive connection to another test's hub


@pytest.fixture
def hub(base_folder, monkeypatch, tmp_path) -> Iterator[HubStandIn]:
    """The stand-in hub serving REPO (the packaged base model plus a README, which is not a model file), with
    huggingface_hub pointed at it and its cache in tmp_path."""
    repo = HubRepo(REPO, base_folder, extra={"README.md": b"# faster-whisper small\n"}, workdir=tmp_path / "extra")
    load_whisper.cache_clear()
    with HubStandIn([repo]) as server:
        point_hub_at(server.endpoint, monkeypatch, tmp_path / "hf")
        yield server
    load_whisper.cache_clear()
    _http.close_session()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_size_not_packaged_is_downloaded_once_with_progress_and_transcribes(hub, base_folder, tmp_path, capfd):
    stt = WhisperSTT(model="small")
    progress = capfd.readouterr().err

    assert {name: hub.fetches(name) for name in (*MODEL_FILES, "README.md")} == {
        "config.json": 1,
        "model.bin": 1,
        "tokenizer.json": 1,
        "vocabulary.json": 1,
        "README.md": 0,  # faster-whisper's allow-list: model files only
    }
    assert REPO_INFO in hub.requests
    assert any(path.startswith("/cdn/") for _, path in hub.requests)  # model.bin came the LFS way: Hub -> CDN
    assert f"{REPO}: Fetching 4 files: 100%" in progress, progress
    assert f"{REPO}: Reconstruction complete: 100%" in progress, progress

    folder = Path(models.whisper_model("small"))
    assert folder.is_relative_to(tmp_path / "hf" / "hub" / "models--Systran--faster-whisper-small" / "snapshots")
    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    assert sha256(folder / "model.bin") == sha256(base_folder / "model.bin")

    samples = speak("What time is it in Tokyo?")
    text = stt.transcribe(samples.astype(np.float32) / 32768.0)
    assert "tokyo" in text.lower(), text


def test_a_downloaded_size_is_reused_without_the_hub(hub, capfd):
    WhisperSTT(model="small")
    assert hub.fetches("model.bin") == 1
    capfd.readouterr()
    hub.requests.clear()

    load_whisper.cache_clear()
    WhisperSTT(model="small")  # a second start: taken from the cache, the hub is not even asked
    assert hub.requests == []
    assert "100%" not in capfd.readouterr().err

    # faster-whisper's own download code finds the same complete snapshot: it only asks which commit main is
    folder = models.whisper_model("small")
    assert faster_whisper.utils.download_model("small") == folder
    assert hub.requests == [REPO_INFO]

    hub.stop()  # offline now (as a fresh process would be: no kept-alive connection): the cached model still loads
    _http.close_session()
    load_whisper.cache_clear()
    assert WhisperSTT(model="small").model == "whisper-small"
    assert huggingface_hub.snapshot_download(REPO, allow_patterns=list(MODEL_FILES)) == folder  # hub gone: cache


def test_an_unreachable_hub_stops_the_agent_with_one_line(monkeypatch, tmp_path, capfd):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    point_hub_at(endpoint, monkeypatch, tmp_path / "hf")
    capfd.readouterr()
    settings = AgentSettings(_env_file=None, stt_model="small", llm_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(SystemExit) as exit_info:
        pipeline.preflight(settings)
    assert exit_info.value.code == 2
    line = one_line(capfd.readouterr().err)
    assert line.startswith("agent: cannot download Whisper model 'small'"), line
    assert REPO in line and endpoint in line and "ConnectError" in line, line
    assert "internet" in line and "STT_MODEL" in line, line
    assert not list((tmp_path / "hf").rglob("model.bin*"))


def test_other_names_are_left_to_faster_whisper(tmp_path):
    assert models.whisper_model(str(tmp_path)) == str(tmp_path)  # a folder holding a converted model
    assert models.whisper_model("someone/faster-whisper-custom") == "someone/faster-whisper-custom"
