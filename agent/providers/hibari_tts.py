"""Local text-to-speech with hibari (Apache-2.0, 24 kHz), as a livekit-agents `tts.TTS`.

Non-streaming per call; AgentSession feeds it one sentence at a time through `tts.StreamAdapter`,
so the first sentence is spoken while the LLM is still writing the rest.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

import numpy as np
from hibari import SAMPLE_RATE, Hibari
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts, utils

from agent import cpu
from agent.models import hibari_voice

# hibari pads each sentence with ~0.3 s of leading and ~0.5 s of trailing silence.
SILENCE_LEVEL = 0.01
KEEP_LEAD_S = 0.02
KEEP_TAIL_S = 0.12


@lru_cache(maxsize=4)
def load_hibari(voice: str, threads: int, voice_base_url: str | None = None) -> Hibari:
    """A voice other than the packaged one is downloaded once, with a progress bar (agent.models.hibari_voice)."""
    return Hibari(voice=voice, model=str(hibari_voice(voice, voice_base_url)), threads=threads)


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > SILENCE_LEVEL)
    if loud.size == 0:
        return audio[:0]
    start = max(0, loud[0] - int(KEEP_LEAD_S * sample_rate))
    end = min(audio.size, loud[-1] + int(KEEP_TAIL_S * sample_rate))
    return audio[start:end]


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


class HibariTTS(tts.TTS):
    def __init__(
        self, *, voice: str = "heart", speed: float = 1.0, threads: int = 2, voice_base_url: str | None = None
    ) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=SAMPLE_RATE, num_channels=1)
        self._voice = voice
        self._speed = speed
        self._engine = load_hibari(voice, threads, voice_base_url)

    @property
    def model(self) -> str:
        return f"hibari-{self._voice}"

    @property
    def provider(self) -> str:
        return "hibari"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _HibariStream(tts=self, input_text=text, conn_options=conn_options)


class _HibariStream(tts.ChunkedStream):
    def __init__(self, *, tts: HibariTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._hibari = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=20,
        )
        sentences = self._hibari._engine.stream(self.input_text, speed=self._hibari._speed)
        with cpu.urgent():  # someone waits for this voice (~40 ms a sentence): background prefills give way
            while (chunk := await asyncio.to_thread(next, sentences, None)) is not None:
                audio = trim_silence(np.asarray(chunk, dtype=np.float32))
                if audio.size:
                    output_emitter.push(to_pcm16(audio))
        output_emitter.flush()
