"""Test speech as 16 kHz int16 samples: espeak-ng (a voice unlike the agent's, flat and hard for Whisper) or hibari's
packaged neural voice (natural prosody, the agent's own voice)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from livekit import rtc

SAMPLE_RATE = 16000


def read_wav(path: Path) -> np.ndarray:
    """Mono int16 samples at 16 kHz, resampled with livekit's resampler when needed."""
    with wave.open(str(path), "rb") as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate == SAMPLE_RATE:
        return pcm
    resampler = rtc.AudioResampler(rate, SAMPLE_RATE, num_channels=1)
    frame = rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))
    out = resampler.push(frame) + resampler.flush()
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


def speak(text: str, *, speed: int = 150, voice: str = "en-us") -> np.ndarray:
    """espeak-ng's `voice` (a language, with an optional variant: "en-us+f3") at `speed` words per minute."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: run `bash scripts/setup --test` (it installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
        return read_wav(path)


def hibari_speech(text: str, *, seed: int = 1, speed: float = 1.0) -> np.ndarray:
    """hibari's "heart" voice (the packaged voice: no download); the seed varies its delivery."""
    from agent.providers.hibari_tts import load_hibari, trim_silence

    audio = trim_silence(load_hibari("heart", 2)(text, speed=speed, seed=seed))
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    resampler = rtc.AudioResampler(24000, SAMPLE_RATE, num_channels=1)
    frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), 24000, 1, len(pcm))) + resampler.flush()
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


def rms(samples: np.ndarray) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean((samples.astype(np.float32) / 32768.0) ** 2)))


def last_voiced_index(samples: np.ndarray, frame: int = 160, level: float = 0.01) -> int:
    """Index just after the last 10 ms frame whose RMS is above level."""
    last = 0
    for start in range(0, len(samples), frame):
        if rms(samples[start : start + frame]) > level:
            last = start + frame
    return min(last, len(samples))
