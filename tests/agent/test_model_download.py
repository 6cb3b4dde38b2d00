"""Model files fetched from a URL (what users with internet point LLM_GGUF_URL at): downloaded once with a progress
bar into the cache, reused after, and a clear error when the URL fails. Served here from a loopback HTTP server
holding a packaged model, since the model hubs cannot be reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import models, pipeline
from agent.settings import AgentSettings
from tests.support.file_server import serve_folder


@pytest.fixture
def hub(monkeypatch, tmp_path) -> Iterator[tuple[str, Path, list[str]]]:
    """A loopback file server for the packaged tiny.en model's folder; yields its URL, the folder and the paths hit."""
    monkeypatch.setenv("VOICE_AGENT_CACHE", str(tmp_path / "cache"))
    folder = Path(models.whisper_model("tiny.en"))
    with serve_folder(folder) as (url, hits):
        yield url.rstrip("/"), folder, hits


def test_a_model_url_is_downloaded_once_with_progress(hub, capfd):
    base, folder, hits = hub
    url = f"{base}/model.bin"
    path = models.download(url)
    assert path.read_bytes() == (folder / "model.bin").read_bytes()
    progress = capfd.readouterr().err
    assert "model.bin" in progress and "100%" in progress
    assert models.download(url) == path and hits == ["/model.bin"]  # the second time from the cache


def test_the_llm_setting_uses_the_downloaded_file(hub):
    base, _folder, _hits = hub
    settings = AgentSettings(_env_file=None, llm_gguf_url=f"{base}/config.json")
    path = Path(pipeline.gguf_path(settings))
    assert path.exists() and path.name.endswith("config.json") and "downloads" in str(path)


def test_a_url_that_fails_names_itself_and_leaves_no_partial_file(hub):
    base, _folder, _hits = hub
    with pytest.raises(models.ModelMissingError, match=r"cannot download .*/missing\.gguf.*404"):
        models.download(f"{base}/missing.gguf")
    assert not list((models.cache_dir() / "downloads").glob("*missing*"))
