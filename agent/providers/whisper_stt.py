"""Local speech-to-text with faster-whisper (CTranslate2), as a livekit-agents `stt.STT`.

Non-streaming: AgentSession runs it behind the VAD, decoding each utterance once it ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import lru_cache

import numpy as np
from faster_whisper import WhisperModel
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agent.models import whisper_model

logger = logging.getLogger("agent.stt")

SAMPLE_RATE = 16000


@lru_cache(maxsize=4)
def load_whisper(name: str, cpu_threads: int) -> tuple[WhisperModel, threading.Lock]:
    """One model per process, shared by every session; its lock queues decodes (2 cores fit one)."""
    model = WhisperModel(whisper_model(name), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    return model, threading.Lock()


def to_mono_16k(frames: list[rtc.AudioFrame] | rtc.AudioFrame) -> np.ndarray:
    """Merge frames and return float32 mono samples at 16 kHz."""
    frame = utils.merge_frames(frames) if isinstance(frames, list) else frames
    if frame.samples_per_channel == 0:
        return np.zeros(0, dtype=np.float32)
    if frame.sample_rate != SAMPLE_RATE:
        resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE, num_channels=frame.num_channels)
        out = resampler.push(frame) + resampler.flush()
        frame = utils.merge_frames(out) if out else frame
    pcm = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    return (pcm.mean(axis=1) / 32768.0).astype(np.float32)


class WhisperSTT(stt.STT):
    def __init__(self, *, model: str = "base", language: str = "en", beam_size: int = 5, cpu_threads: int = 2) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._model_name = model
        self._language = language
        self._beam_size = beam_size
        self._whisper, self._lock = load_whisper(model, cpu_threads)

    @property
    def model(self) -> str:
        return f"whisper-{self._model_name}"

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Blocking decode of float32 16 kHz mono samples; returns the text (may be empty)."""
        if audio.size < SAMPLE_RATE // 10:
            return ""
        with self._lock:
            segments, _ = self._whisper.transcribe(
                audio,
                language=language or self._language,
                beam_size=self._beam_size,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            texts = [s.text for s in segments if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0)]
        return " ".join(t.strip() for t in texts).strip()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        audio = to_mono_16k(buffer)
        lang = language if isinstance(language, str) else self._language
        text = await asyncio.to_thread(self.transcribe, audio, lang)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=lang, text=text)],
        )
