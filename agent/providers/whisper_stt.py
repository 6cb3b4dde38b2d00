"""Local speech-to-text with faster-whisper (CTranslate2), as a streaming livekit-agents `stt.STT`.

Whisper has no streaming mode, so the stream makes one:
- its own VAD (the worker's Silero model) cuts the audio into utterances;
- while someone speaks, the growing utterance is re-decoded about once a second (greedy) for interim transcripts;
- as soon as the voice stops (two quiet windows while the VAD's probability falls), the utterance is decoded in
  full, speculatively, on a core of its own; when that silence becomes the end of speech, the final transcript is
  already there or nearly (it is decoded again only if the person spoke on in between).
Decoding uses an encoder window fitted to the utterance (10 s for short ones) instead of Whisper's fixed 30 s:
two to three times faster on CPU with the same accuracy on our clips; longer audio takes the regular path.

Every decode, streaming or not, interim or final, passes `speech_gate` first: silence, near-silence, hums, clicks
and noise are never decoded (Whisper writes words for them, "you" on some CPUs), and Whisper's stock phrases
("Thank you.", "Bye.", ...) are kept only from audio that is clearly speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, stt, utils, vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agent import cpu
from agent.models import whisper_model
from agent.providers import speech_gate
from agent.providers.speech_gate import Heard
from agent.providers.stt_fallback import unheard

logger = logging.getLogger("agent.stt")

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # Whisper's mel frames
MIN_WINDOW_S = 10.0  # shorter encoder windows start to repeat themselves
# Interim transcripts only feed the LLM's prefill and live captions: a 7 s window encodes in 78 instead of 133 ms, and
# their words agree with the final transcript's as often (509 of 577 vs 510 of 580 on 81 snapshots).
INTERIM_WINDOW_S = 7.0
MAX_WINDOW_S = 30.0
HOP = 160  # samples per mel frame
MAX_UTTERANCE_S = 60.0  # a longer monologue is cut into several finals (bounded memory)
QUIET = 10 ** (-30 / 20)  # a window 30 dB below the utterance's loudest one has no voice in it


@dataclass
class Whisper:
    """One model per process, shared by every session. Each decode runs on one core (on 2 cores, two threads per
    decode were no faster: 337 vs 349 ms median, and slower when the CPU is busy); `slots` lets one decode per core
    run at once, so a final transcript never waits for an interim one to finish."""

    model: WhisperModel
    slots: threading.Semaphore


@lru_cache(maxsize=4)
def load_whisper(name: str, cpu_threads: int) -> Whisper:
    model = WhisperModel(whisper_model(name), device="cpu", compute_type="int8", cpu_threads=1, num_workers=cpu_threads)
    return Whisper(model, threading.Semaphore(cpu_threads))


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
    def __init__(
        self,
        *,
        model: str = "base",
        language: str = "en",
        beam_size: int = 5,
        cpu_threads: int = 2,
        vad: vad.VAD | None = None,
        interim_interval_s: float = 1.0,
        speculate_after_s: float = 0.1,
    ) -> None:
        """With a `vad`, the STT streams (interim and early final transcripts); without, it decodes what it is given."""
        streaming = vad is not None
        super().__init__(capabilities=stt.STTCapabilities(streaming=streaming, interim_results=streaming))
        self._model_name = model
        self._language = language
        self._beam_size = beam_size
        self._vad = vad
        self._interim_interval_s = interim_interval_s
        self._speculate_after_s = speculate_after_s
        # The gate hears speech where the VAD would start an utterance.
        opts = getattr(vad, "_opts", None)
        self._speech_threshold = float(getattr(opts, "activation_threshold", speech_gate.SPEECH_PROBABILITY))
        self._whisper = load_whisper(model, cpu_threads)
        speech_gate.load()

    @property
    def model(self) -> str:
        return f"whisper-{self._model_name}"

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def hear(self, audio: np.ndarray) -> Heard | None:
        """The speech gate's verdict, or None when the audio is not to be decoded (too short, or no speech in it)."""
        if audio.size < SAMPLE_RATE // 10:
            return None
        heard = speech_gate.hear(audio, self._speech_threshold)
        if not heard.decodable:
            logger.debug("not decoded: %.1f dBFS, %.2f s of speech", heard.level_dbfs, heard.speech_s)
            return None
        return heard

    def transcribe(self, audio: np.ndarray, language: str | None = None, beam_size: int | None = None) -> str:
        """Blocking decode of float32 16 kHz mono samples; returns the text (may be empty)."""
        if (heard := self.hear(audio)) is None:
            return ""
        with self._whisper.slots:
            return self._transcribe(audio, language or self._language, beam_size or self._beam_size, heard)

    def interim(self, audio: np.ndarray, language: str, stale: Callable[[], bool]) -> str:
        """A quick greedy decode of the utterance so far, on a shorter window; empty when `stale()` says, once the
        audio is encoded, that the voice has stopped meanwhile: the final decode then runs beside it, and this one's
        words would come too late to be of use."""
        if not language or audio.size < SAMPLE_RATE // 10 or audio.size > (INTERIM_WINDOW_S - 1) * SAMPLE_RATE:
            return self.transcribe(audio, language, 1)
        if (heard := self.hear(audio)) is None:
            return ""
        with self._whisper.slots:
            return self._decode_window(audio, language, 1, heard, INTERIM_WINDOW_S, stale)

    def timed_transcribe(
        self, audio: np.ndarray, language: str | None = None, beam_size: int | None = None
    ) -> tuple[str, float, float]:
        """`transcribe` of a final transcript, which someone waits for: background work gives way meanwhile.
        Also returns the seconds spent waiting for the model and decoding."""
        if (heard := self.hear(audio)) is None:
            return "", 0.0, 0.0
        asked = time.perf_counter()
        with cpu.urgent(), self._whisper.slots:
            began = time.perf_counter()
            text = self._transcribe(audio, language or self._language, beam_size or self._beam_size, heard)
            return text, began - asked, time.perf_counter() - began

    def _transcribe(self, audio: np.ndarray, language: str, beam: int, heard: Heard) -> str:
        if audio.size <= (MAX_WINDOW_S - 1) * SAMPLE_RATE and language:
            return self._decode_window(audio, language, beam, heard)
        segments, _ = self._whisper.model.transcribe(
            audio,
            language=language or None,
            beam_size=beam,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        texts = []
        for s in segments:
            if s.no_speech_prob > 0.6 and s.avg_logprob < -1.0:
                continue
            judged = heard
            if speech_gate.stock_phrase(s.text):  # judged on the segment's own audio
                part = audio[int(s.start * SAMPLE_RATE) : int(s.end * SAMPLE_RATE)]
                judged = speech_gate.hear(part, self._speech_threshold)
            texts.append(_kept(s.text.strip(), judged, s.no_speech_prob))
        return " ".join(t for t in texts if t).strip()

    def _decode_window(
        self,
        audio: np.ndarray,
        language: str,
        beam: int,
        heard: Heard,
        min_window_s: float = MIN_WINDOW_S,
        stale: Callable[[], bool] | None = None,
    ) -> str:
        model = self._whisper.model
        seconds = audio.size / SAMPLE_RATE
        window = int(min(MAX_WINDOW_S, max(min_window_s, np.ceil(seconds + 1.0))) * FRAMES_PER_SECOND)
        # The window is padded with silent audio, as Whisper was trained: features padded with zeros read as sound
        # to it, and it ended its text early on a fifth of requests ("Could" for "Could you tell me what time...").
        features = model.feature_extractor(audio, padding=max(0, window * HOP - audio.size) + HOP)[:, :window]
        encoded = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])))
        if stale is not None and stale():
            return ""
        tokenizer = _tokenizer(model, language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=beam,
            max_length=int(seconds * 8) + 16,  # speech is < 8 tokens/s: a bound on runaway repetition
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        if result.no_speech_prob > 0.6 and result.scores[0] < -1.0:
            return ""
        text = without_repeats(tokenizer.decode([t for t in result.sequences_ids[0] if t < tokenizer.eot]).strip())
        return _kept(text, heard, result.no_speech_prob)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        audio = to_mono_16k(buffer)
        lang = language if isinstance(language, str) else self._language
        text, _, _ = await asyncio.to_thread(self.timed_transcribe, audio, lang)
        return _event(stt.SpeechEventType.FINAL_TRANSCRIPT, text, lang)

    def stream(
        self, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> WhisperStream:
        if self._vad is None:
            raise NotImplementedError("WhisperSTT streams only with a VAD: WhisperSTT(vad=...)")
        lang = language if isinstance(language, str) else self._language
        stream = WhisperStream(stt=self, vad=self._vad, language=lang, conn_options=conn_options)
        for frame in unheard():  # taking over from a cloud STT that died mid-utterance: start from its words
            stream.push_frame(frame)
        return stream


class VoiceEnd:
    """Window by window (the VAD's probability and the audio), whether the voice has stopped, so the final decode
    can start, and whether it is there, so a decode already started is stale.

    Silero's probability takes 2-4 windows of 32 ms to decay after the voice stops: two windows 30 dB under the
    utterance's loudest, with a falling probability, say it sooner (75 vs 111 ms after the voice, median of 66
    spoken requests, `bench.speech_end`) and start fewer decodes in vain inside a sentence (9 vs 15) than one window
    under the VAD's threshold. In a room too noisy for quiet windows, `silence_s` under the threshold says it.
    """

    def __init__(self, threshold: float, silence_s: float, quiet_windows: int = 2) -> None:
        self.threshold = threshold
        self.silence_s = silence_s
        self.quiet_windows = quiet_windows  # 0: the VAD's silence only
        self.silent_s = 0.0  # under the VAD's threshold
        self.quiet_s = 0.0  # no voice in the audio itself
        self._peak = 0.0  # the utterance's loudest window (RMS)
        self._last_p = 0.0

    def update(self, probability: float, chunk: np.ndarray) -> tuple[bool, bool]:
        """Returns (ended, voiced) for the next window: `chunk` is its float32 audio."""
        window_s = chunk.size / SAMPLE_RATE
        level = float(np.sqrt(np.mean(chunk * chunk))) if chunk.size else 0.0
        self._peak = max(self._peak, level)
        loud = level > self._peak * QUIET
        self.quiet_s = 0.0 if loud else self.quiet_s + window_s
        self.silent_s = self.silent_s + window_s if probability < self.threshold else 0.0
        falling = probability < self._last_p
        # Voiced: a probability over the threshold, with the voice's level or a probability that is not decaying.
        # (Not a loud window alone: in a noisy room every window after the voice is loud.)
        voiced = probability >= self.threshold and (loud or not falling)
        quiet = self.quiet_windows > 0 and self.quiet_s >= self.quiet_windows * window_s
        ended = self.silent_s >= self.silence_s or (quiet and falling and probability < 0.9)
        self._last_p = probability
        return ended, voiced


def _kept(text: str, heard: Heard, no_speech_prob: float) -> str:
    kept = speech_gate.keep(text, heard, no_speech_prob)
    if text and not kept:
        logger.info(
            "dropped %r: not clearly speech (%.1f dBFS, %.2f s of speech, no-speech %.2f)",
            text,
            heard.level_dbfs,
            heard.speech_s,
            no_speech_prob,
        )
    return kept


SENTENCE_BREAK = re.compile(r"(?<=[.?!])\s+")


def without_repeats(text: str) -> str:
    """Drops a sentence said again right after itself: Whisper, given a window longer than the speech, sometimes
    fills it by repeating the utterance ("How many ounces are in a pound? How many ounces are in a pound?")."""
    kept: list[str] = []
    for sentence in SENTENCE_BREAK.split(text):
        if not kept or _words(sentence) != _words(kept[-1]):
            kept.append(sentence)
    return " ".join(kept)


def _words(sentence: str) -> list[str]:
    return re.findall(r"[\w']+", sentence.lower())


@lru_cache(maxsize=8)
def _tokenizer(model: WhisperModel, language: str) -> Tokenizer:
    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)


def _event(kind: stt.SpeechEventType, text: str = "", language: str = "en") -> stt.SpeechEvent:
    alternatives = [stt.SpeechData(language=language, text=text)] if kind != stt.SpeechEventType.START_OF_SPEECH else []
    return stt.SpeechEvent(type=kind, alternatives=alternatives)


class WhisperStream(stt.RecognizeStream):
    def __init__(self, *, stt: WhisperSTT, vad: vad.VAD, language: str, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._whisper_stt = stt
        self._vad = vad
        self._language = language

    async def _run(self) -> None:
        vad_stream = self._vad.stream()

        async def feed() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(item)
            vad_stream.end_input()

        feeder = asyncio.create_task(feed())
        try:
            await self._listen(vad_stream)
        finally:
            await utils.aio.cancel_and_wait(feeder)
            await vad_stream.aclose()

    async def _listen(self, vad_stream: vad.VADStream) -> None:
        owner = self._whisper_stt
        # Below the VAD's own exit threshold a window is silence; a dip that stays above it is a soft consonant.
        threshold = getattr(getattr(self._vad, "_opts", None), "deactivation_threshold", 0.35)
        voice = VoiceEnd(threshold, owner._speculate_after_s)
        chunks: list[np.ndarray] = []
        samples = 0
        speaking = False
        interim_at = 0  # utterance length (samples) at the last interim decode
        decoding: asyncio.Task | None = None  # the interim decode in flight
        # (utterance length, quiet heard when it began, its decode)
        speculative: tuple[int, float, asyncio.Task[tuple[str, float, float]]] | None = None
        preflight_sent = ""  # the text of the preflight transcript sent for this utterance

        def audio() -> np.ndarray:
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

        async def interim(snapshot: np.ndarray) -> None:
            text = await asyncio.to_thread(
                owner.interim, snapshot, self._language, lambda: speculative is not None or not speaking
            )
            if text and speaking and not preflight_sent:  # an older, shorter guess would stop the preflight's reply
                self._event_ch.send_nowait(_event(stt.SpeechEventType.INTERIM_TRANSCRIPT, text, self._language))

        async def final(text: str) -> None:
            if text:
                self._event_ch.send_nowait(_event(stt.SpeechEventType.FINAL_TRANSCRIPT, text, self._language))

        def preflight(decode: asyncio.Task[tuple[str, float, float]]) -> None:
            """The speculative decode is done before the VAD's silence has confirmed the end of speech (~50 ms later):
            its text goes out as a preflight transcript, on which livekit starts the reply (preemptive generation)."""
            nonlocal preflight_sent
            if speculative is None or speculative[2] is not decode or not speaking or decode.cancelled():
                return
            if decode.exception() is None and (text := decode.result()[0]):
                preflight_sent = text
                self._event_ch.send_nowait(_event(stt.SpeechEventType.PREFLIGHT_TRANSCRIPT, text, self._language))

        def retract(text: str) -> None:
            """They spoke on after a preflight: an interim of its words but the last one, so that livekit stops the
            reply it began on it now (it compares each interim with the preflight), not when the next final comes."""
            words = text.split()
            if len(words) > 1:
                shorter = " ".join(words[:-1])
                self._event_ch.send_nowait(_event(stt.SpeechEventType.INTERIM_TRANSCRIPT, shorter, self._language))

        async for ev in vad_stream:
            if ev.type == vad.VADEventType.START_OF_SPEECH:
                speaking, interim_at, speculative, preflight_sent = True, 0, None, ""
                voice = VoiceEnd(threshold, owner._speculate_after_s)
                chunks = [to_mono_16k(ev.frames)] if ev.frames else []
                samples = sum(c.size for c in chunks)
                self._event_ch.send_nowait(_event(stt.SpeechEventType.START_OF_SPEECH))
            elif ev.type == vad.VADEventType.INFERENCE_DONE and speaking:
                chunk = to_mono_16k(ev.frames) if ev.frames else np.zeros(0, dtype=np.float32)
                chunks.append(chunk)
                samples += chunk.size
                ended, voiced = voice.update(ev.probability, chunk)
                if speculative is not None and voiced:  # they spoke on: that decode is stale
                    speculative = None
                    if preflight_sent:
                        retract(preflight_sent)
                        preflight_sent = ""
                if ended and speculative is None:
                    snapshot = audio()
                    decode = asyncio.create_task(asyncio.to_thread(owner.timed_transcribe, snapshot))
                    decode.add_done_callback(preflight)
                    speculative = (samples, voice.quiet_s, decode)
                elif (
                    voice.silent_s == 0.0
                    and samples - interim_at >= owner._interim_interval_s * SAMPLE_RATE
                    and samples <= (MAX_WINDOW_S - 1) * SAMPLE_RATE
                    and (decoding is None or decoding.done())
                    and not cpu.busy()
                ):
                    interim_at = samples
                    decoding = asyncio.create_task(interim(audio()))
                if samples >= MAX_UTTERANCE_S * SAMPLE_RATE:
                    await final((await asyncio.to_thread(owner.timed_transcribe, audio()))[0])
                    chunks, samples, interim_at, speculative, preflight_sent = [], 0, 0, None, ""
            elif ev.type == vad.VADEventType.END_OF_SPEECH and speaking:
                speaking = False
                started = time.perf_counter()
                if speculative is not None:
                    text, waited, took = await speculative[2]
                    how = f"decode began {speculative[1]:.3f} s after the voice stopped"
                else:
                    text, waited, took = await asyncio.to_thread(owner.timed_transcribe, audio())
                    how = "decoded at end of speech"
                logger.info(
                    "final transcript %.3f s after end of speech (%s; waited %.3f s for the model, decoded in %.3f s)",
                    time.perf_counter() - started,
                    how,
                    waited,
                    took,
                )
                await final(text)
                self._event_ch.send_nowait(_event(stt.SpeechEventType.END_OF_SPEECH))
                chunks, samples, speculative, preflight_sent = [], 0, None, ""
        if decoding is not None:
            with contextlib.suppress(Exception):
                await decoding
