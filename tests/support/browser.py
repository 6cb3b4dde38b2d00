"""Debian's Chromium driven by Playwright (never a downloaded browser), with a WAV as the microphone."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"
QUIET_FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
]


def launch(playwright: Playwright, microphone_wav: Path | None, *, allow_microphone: bool = True) -> Browser:
    if not shutil.which(CHROMIUM):
        raise RuntimeError("Debian's chromium is missing: run `bash scripts/setup --test` (it installs it)")
    args = list(QUIET_FLAGS)
    if microphone_wav is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone_wav}%noloop"]
    if allow_microphone:
        args.append("--use-fake-ui-for-media-stream")
    else:
        args.append("--deny-permission-prompts")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype(np.int16).tobytes())
    return path


def with_silence(samples: np.ndarray, before_s: float, after_s: float, sample_rate: int = 16000) -> np.ndarray:
    pad = lambda s: np.zeros(int(s * sample_rate), dtype=np.int16)  # noqa: E731
    return np.concatenate([pad(before_s), samples, pad(after_s)])
