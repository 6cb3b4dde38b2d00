"""Silence never becomes a turn: silence, near-silence, a hum and clicks are not decoded on any path of the local STT
(whole utterance, interim, streaming final), and Whisper's stock phrases for non-speech ("you", "Thank you.", ...)
are kept only from clear speech.

The decoder here is a spy that "hears" what Whisper base heard in 2 s of digital silence on an AMD EPYC: "you",
scored well enough to pass Whisper's own no-speech rule. So these tests do not depend on this CPU's numerics: before
the gate, every non-speech case below returned "you" through the spy."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from faster_whisper.tokenizer import Tokenizer
from livekit import rtc
from livekit.agents import stt, vad
from livekit.plugins import silero

from agent.providers import speech_gate
from agent.providers.speech_gate import Heard, keep, level_dbfs, stock_phrase
from agent.providers.whisper_stt import Whisper, WhisperSTT
from tests.support.speech import SAMPLE_RATE, hibari_speech, speak
from tests.support.stt_stream import listen, texts

pytestmark = pytest.mark.models


def db(value: float) -> float:
    return 10 ** (value / 20)


def at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """Float32 speech scaled so that its loudest 30 ms windows sit at `dbfs`."""
    audio = samples.astype(np.float32) / 32768
    return (audio * db(dbfs - level_dbfs(audio))).astype(np.float32)


def digital_silence() -> np.ndarray:
    return np.zeros(2 * SAMPLE_RATE, dtype=np.float32)


def faint_noise() -> np.ndarray:
    return np.random.default_rng(3).normal(0, db(-60), 2 * SAMPLE_RATE).astype(np.float32)


def hum() -> np.ndarray:
    """Mains hum with its harmonics, loud (-25 dBFS): a fridge or a ground loop."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 6))
    return (db(-20) * wave / np.max(np.abs(wave))).astype(np.float32)


def clicks() -> np.ndarray:
    """A clock ticking, or a cable knocked about: short loud pulses in silence."""
    audio = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    for start in range(1600, audio.size - 16, 4000):
        audio[start : start + 16] = 0.5 * np.hanning(16)
    return audio


NOT_SPEECH = {"digital silence": digital_silence, "noise at -60 dBFS": faint_noise, "hum": hum, "clicks": clicks}


class SpyModel:
    """Stands in for faster-whisper's WhisperModel on every way into the decoder (features, encode, generate, the
    long-audio `transcribe`), counts the calls, and decodes everything as `says` with a confident score."""

    def __init__(self, real, says: str = "you", no_speech_prob: float = 0.5) -> None:
        self.hf_tokenizer = real.hf_tokenizer
        self.says, self.no_speech_prob = says, no_speech_prob
        self.calls = 0
        self.model = SimpleNamespace(
            is_multilingual=real.model.is_multilingual, encode=self._encode, generate=self._generate
        )

    def feature_extractor(self, audio: np.ndarray, padding: int = 160) -> np.ndarray:
        self.calls += 1
        return np.zeros((80, (audio.size + padding) // 160), dtype=np.float32)

    def _encode(self, features):
        self.calls += 1
        return features

    def _generate(self, encoded, prompts, **options):
        self.calls += 1
        tokenizer = Tokenizer(self.hf_tokenizer, self.model.is_multilingual, task="transcribe", language="en")
        ids = [*tokenizer.encode(" " + self.says), tokenizer.eot]
        return [SimpleNamespace(sequences_ids=[ids], scores=[-0.3], no_speech_prob=self.no_speech_prob)]

    def transcribe(self, audio: np.ndarray, **options):
        self.calls += 1
        segment = SimpleNamespace(
            text=" " + self.says,
            start=0.0,
            end=audio.size / SAMPLE_RATE,
            no_speech_prob=self.no_speech_prob,
            avg_logprob=-0.3,
        )
        return iter([segment]), None


def spied(whisper: WhisperSTT, **says) -> SpyModel:
    spy = SpyModel(whisper._whisper.model, **says)
    whisper._whisper = Whisper(spy, threading.Semaphore(2))
    return spy


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT(model="base")


def frame(audio: np.ndarray) -> rtc.AudioFrame:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, pcm.size)


@pytest.mark.parametrize("sound", list(NOT_SPEECH))
async def test_non_speech_never_reaches_the_decoder_on_any_whole_utterance_path(sound):
    whisper = WhisperSTT(model="base")
    spy = spied(whisper)
    audio = NOT_SPEECH[sound]()
    assert (await whisper.recognize(frame(audio))).alternatives[0].text == ""
    assert whisper.transcribe(audio) == ""
    assert whisper.timed_transcribe(audio) == ("", 0.0, 0.0)
    assert whisper.interim(audio, "en", stale=lambda: False) == ""
    long = np.tile(audio, 16)  # 32 s: past the fitted window, Whisper's own long-audio path
    assert whisper.transcribe(long) == ""
    assert spy.calls == 0


class HearsSpeechEverywhere(vad.VAD):
    """A VAD fooled by everything (a noisy room, another CPU's numerics): the STT's own gate is what is left."""

    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.02))

    def stream(self) -> vad.VADStream:
        return _EverywhereStream(self)


class _EverywhereStream(vad.VADStream):
    async def _main_task(self) -> None:
        frames: list[rtc.AudioFrame] = []

        def event(kind: vad.VADEventType, **fields) -> vad.VADEvent:
            return vad.VADEvent(
                type=kind, samples_index=0, timestamp=0.0, speech_duration=0.1, silence_duration=0.0, **fields
            )

        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                if frames:
                    self._event_ch.send_nowait(event(vad.VADEventType.END_OF_SPEECH, frames=frames))
                frames = []
                continue
            kind = vad.VADEventType.INFERENCE_DONE if frames else vad.VADEventType.START_OF_SPEECH
            frames.append(item)
            self._event_ch.send_nowait(event(kind, frames=[item], probability=0.95, speaking=True))
            await asyncio.sleep(0)


def int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


@pytest.mark.parametrize("sound", list(NOT_SPEECH))
async def test_non_speech_gives_no_transcript_when_streaming_even_past_a_fooled_vad(sound):
    audio = int16(np.concatenate([NOT_SPEECH[sound](), NOT_SPEECH[sound]()]))  # 4 s: interims are due meanwhile
    for detector in (silero.VAD.load(min_silence_duration=0.35), HearsSpeechEverywhere()):
        whisper = WhisperSTT(model="base", vad=detector)
        spy = spied(whisper)
        events = await listen(whisper, audio, realtime=False)
        said = [ev.alternatives[0].text for _, ev in events if ev.alternatives and ev.alternatives[0].text]
        assert said == [] and spy.calls == 0, (type(detector).__name__, said, spy.calls)
        if isinstance(detector, HearsSpeechEverywhere):  # the stream did hear an "utterance": it was not decoded
            assert [ev.type for _, ev in events] == [
                stt.SpeechEventType.START_OF_SPEECH,
                stt.SpeechEventType.END_OF_SPEECH,
            ]


async def test_the_real_model_gives_nothing_for_silence_and_noise(whisper):
    for sound, make in NOT_SPEECH.items():
        assert (await whisper.recognize(frame(make()))).alternatives[0].text == "", sound


async def test_a_stock_phrase_is_kept_only_from_clear_speech():
    whisper = WhisperSTT(model="base")
    speech = at_level(speak("Thank you."), -18)
    spy = spied(whisper, says="Thank you.", no_speech_prob=0.05)
    assert whisper.transcribe(speech) == "Thank you."  # said, loud and clear
    spy.no_speech_prob = 0.5  # Whisper itself doubts there was speech
    assert whisper.transcribe(speech) == ""
    spy.says = "Please hold the line."  # any other words stand: only Whisper's stock phrases are suspect
    assert whisper.transcribe(speech) == "Please hold the line."
    assert spy.calls > 0


async def test_someone_really_saying_thank_you_is_heard(whisper):
    for voice in (speak("Thank you."), hibari_speech("Thank you.")):
        heard = (await whisper.recognize(frame(at_level(voice, -18)))).alternatives[0].text
        assert "thank you" in heard.lower(), heard


async def test_quiet_speech_is_still_transcribed(whisper):
    quiet = at_level(speak("Please turn off the kitchen lights."), -35)
    heard = (await whisper.recognize(frame(quiet))).alternatives[0].text.lower()
    assert "kitchen" in heard and "light" in heard, heard
    streaming = WhisperSTT(model="base", vad=silero.VAD.load(min_silence_duration=0.35))
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.int16), int16(quiet), np.zeros(SAMPLE_RATE, np.int16)])
    finals = texts(await listen(streaming, pcm, realtime=False), stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(finals) == 1 and "kitchen" in finals[0].lower(), finals


def test_the_level_is_that_of_the_loudest_windows():
    assert level_dbfs(digital_silence()) == float("-inf")
    assert level_dbfs(faint_noise()) == pytest.approx(-60, abs=1)
    tone = np.concatenate([np.zeros(SAMPLE_RATE), 0.1 * np.ones(SAMPLE_RATE // 5)]).astype(np.float32)
    assert level_dbfs(tone) == pytest.approx(-20, abs=0.1)  # a short loud stretch counts in full, not averaged away
    assert level_dbfs(np.float32([0.5, -0.5])) == pytest.approx(-6, abs=0.1)


@pytest.mark.parametrize(
    ("text", "stock"),
    [
        ("you", True),
        ("You...", True),
        ("Thank you.", True),
        ("Thanks for watching!", True),
        ("Thank you for watching.", True),
        ("Bye.", True),
        ("Bye-bye!", True),
        ("Subtitles by the Amara.org community", True),
        ("♪", True),
        ("[Music]", True),
        ("...", True),
        ("Thank you, that's all I needed.", False),
        ("Do you have a table for two?", False),
        ("Bye for now, see you tomorrow at nine.", False),
    ],
)
def test_whispers_stock_phrases(text, stock):
    assert stock_phrase(text) == stock


def test_a_stock_phrase_needs_clear_speech_and_wordless_text_is_never_a_turn():
    clear, weak, brief = Heard(-18.0, 0.2), Heard(-48.0, 0.2), Heard(-18.0, 0.064)
    assert keep("Thank you.", clear, 0.05) == "Thank you."
    assert keep("Thank you.", weak, 0.05) == ""  # barely over the floor
    assert keep("Thank you.", brief, 0.05) == ""  # a cough the VAD let through
    assert keep("Thank you.", clear, speech_gate.MODEST_NO_SPEECH + 0.1) == ""
    assert keep("Turn on the lights.", brief, 0.5) == "Turn on the lights."
    assert keep("[Music]", clear, 0.0) == keep("♪", clear, 0.0) == ""
