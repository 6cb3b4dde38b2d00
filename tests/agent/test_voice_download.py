"""TTS voices that are not packaged: fetched once on first use with a progress bar, checked against hibari's
registry, cached, and spoken with. Hugging Face cannot be reached here, so a loopback mirror serves the packaged
voice model under another voice's file name (TTS_VOICE_BASE_URL is how users point at such a mirror)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hibari import voices

from agent import models, pipeline
from agent.providers import hibari_tts
from agent.settings import AgentSettings
from tests.stack.test_startup_errors import one_line
from tests.support.file_server import serve_folder

VOICE = "emma"


@pytest.fixture
def mirror(monkeypatch, tmp_path) -> Iterator[tuple[str, list[str]]]:
    """A loopback mirror of hibari's voices folder; yields its URL and the paths requested."""
    monkeypatch.setenv("HIBARI_HOME", str(tmp_path / "hibari"))
    hibari_tts.load_hibari.cache_clear()
    served = tmp_path / "served"
    served.mkdir()
    (served / voices.VOICES[VOICE]["file"]).write_bytes((Path(voices.ASSETS) / "hibari.onnx").read_bytes())
    with serve_folder(served) as (url, hits):
        yield url, hits
    hibari_tts.load_hibari.cache_clear()


@pytest.fixture
def registry_matches_mirror(monkeypatch) -> None:
    """The registry's checksum for the voice is that of the file the mirror serves."""
    digest = hashlib.sha256((Path(voices.ASSETS) / "hibari.onnx").read_bytes()).hexdigest()
    monkeypatch.setitem(voices.VOICES, VOICE, {**voices.VOICES[VOICE], "sha256": digest})


async def test_a_voice_is_downloaded_once_with_progress_and_speaks(mirror, registry_matches_mirror, capfd):
    url, hits = mirror
    settings = AgentSettings(_env_file=None, tts_voice=VOICE, tts_voice_base_url=url)
    synth = pipeline.build_tts(settings)
    progress = capfd.readouterr().err
    file = voices.VOICES[VOICE]["file"]
    assert file in progress and "100%" in progress, progress
    cached = Path(voices.cache_dir()) / file
    assert cached.exists() and hits == [f"/{file}"]

    audio = b""
    async for chunk in synth.synthesize("Hello from a downloaded voice."):
        audio += chunk.frame.data.tobytes()
    assert len(audio) / 2 / 24000 > 0.8  # seconds of speech

    hibari_tts.load_hibari.cache_clear()  # a new worker: the cached file is used, nothing is fetched again
    pipeline.build_tts(settings)
    assert hits == [f"/{file}"]


def test_a_file_that_does_not_match_the_registry_is_not_kept(mirror):
    url, _hits = mirror
    with pytest.raises(models.ModelMissingError, match="sha256 .* is not the expected"):
        models.hibari_voice(VOICE, url, progress=False)
    assert not Path(voices.cache_dir()).exists() or not any(Path(voices.cache_dir()).iterdir())


def test_an_unreachable_voice_or_an_unknown_one_stops_the_agent_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HIBARI_HOME", str(tmp_path / "hibari"))
    for voice, expected in ((VOICE, "cannot download http://127.0.0.1:9/"), ("robot", "unknown TTS_VOICE 'robot'")):
        settings = AgentSettings(_env_file=None, tts_voice=voice, tts_voice_base_url="http://127.0.0.1:9/")
        with pytest.raises(SystemExit) as exit_info:
            pipeline.preflight(settings)
        assert exit_info.value.code == 2
        assert expected in one_line(capsys.readouterr().err)
