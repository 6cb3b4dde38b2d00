"""The local STT as a stream, fed like a live microphone: interim words while the person speaks, one final per
utterance, nothing for silence or noise, telephone audio and long monologues handled."""

from __future__ import annotations

import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt
from livekit.plugins import silero

from agent.providers.whisper_stt import VoiceEnd, WhisperSTT, without_repeats
from tests.support.speech import SAMPLE_RATE, last_voiced_index, speak
from tests.support.stt_stream import listen, silence, texts

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT(model="base", vad=silero.VAD.load(min_silence_duration=0.35))


async def test_interim_words_while_speaking_then_one_final(whisper):
    question = speak("Could you tell me what the weather will be like in Paris over the weekend?")
    pushed = time.monotonic()
    events = await listen(whisper, np.concatenate([silence(0.5), question, silence(1.5)]))
    kinds = [ev.type for _, ev in events]
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH and kinds[-1] == stt.SpeechEventType.END_OF_SPEECH, kinds
    finals = texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(finals) == 1 and "paris" in finals[0].lower() and "weekend" in finals[0].lower(), finals
    # Words show up before the person has finished speaking.
    speech_end = pushed + 0.5 + len(question) / SAMPLE_RATE
    early = [ev.alternatives[0].text for at, ev in events if ev.type == stt.SpeechEventType.INTERIM_TRANSCRIPT]
    early_times = [at for at, ev in events if ev.type == stt.SpeechEventType.INTERIM_TRANSCRIPT]
    assert early and early_times[0] < speech_end, (early, early_times, speech_end)
    assert any("weather" in t.lower() for t in early), early


def test_an_interim_decode_gives_way_once_the_voice_has_stopped(whisper):
    so_far = speak("What should I cook for dinner tonight?")[: SAMPLE_RATE * 2].astype(np.float32) / 32768
    assert "cook" in whisper.interim(so_far, "en", stale=lambda: False).lower()
    # The person stopped while it was encoding: the final decode needs the core, and these words come too late.
    assert whisper.interim(so_far, "en", stale=lambda: True) == ""


async def test_a_pause_mid_sentence_does_not_split_or_lose_words(whisper):
    first, second = speak("I would like to order"), speak("a large pizza with mushrooms")
    first = first[: last_voiced_index(first)]  # espeak ends each clip with silence of its own
    audio = np.concatenate([silence(0.3), first, silence(0.2), second, silence(1.2)])
    finals = texts(await listen(whisper, audio), stt.SpeechEventType.FINAL_TRANSCRIPT)
    heard = " ".join(finals).lower()
    assert "order" in heard and "pizza" in heard and "mushroom" in heard, finals


@pytest.fixture(scope="module")
def patient_whisper() -> WhisperSTT:
    """A VAD that waits 1 s of silence: the speculative decode is then surely done before the end of speech."""
    return WhisperSTT(model="base", vad=silero.VAD.load(min_silence_duration=1.0))


def at(events, kind: stt.SpeechEventType) -> list[float]:
    return [when for when, ev in events if ev.type == kind]


async def test_the_transcript_goes_out_as_a_preflight_before_the_end_of_speech(patient_whisper):
    question = speak("What is the capital of Japan?")
    events = await listen(patient_whisper, np.concatenate([silence(0.3), question, silence(1.8)]))
    preflights = texts(events, stt.SpeechEventType.PREFLIGHT_TRANSCRIPT)
    finals = texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(finals) == 1 and "japan" in finals[0].lower(), finals
    # The same words, well before the VAD's silence ends: livekit starts the reply on them (preemptive generation).
    assert preflights == finals, (preflights, finals)
    preflight_at, final_at = (
        at(events, stt.SpeechEventType.PREFLIGHT_TRANSCRIPT),
        at(events, stt.SpeechEventType.FINAL_TRANSCRIPT),
    )
    assert preflight_at[0] < final_at[0] - 0.3, (preflight_at, final_at)


async def test_speaking_on_after_a_preflight_takes_it_back(patient_whisper):
    first, second = speak("What time is it"), speak("in Tokyo right now?")
    first = first[: last_voiced_index(first)]
    events = await listen(patient_whisper, np.concatenate([silence(0.3), first, silence(0.8), second, silence(1.8)]))
    kinds = [ev.type for _, ev in events]
    finals = texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(finals) == 1 and "time" in finals[0].lower() and "tokyo" in finals[0].lower(), finals
    preflights = texts(events, stt.SpeechEventType.PREFLIGHT_TRANSCRIPT)
    assert "tokyo" not in preflights[0].lower() and preflights[-1] == finals[0], preflights
    # After the early preflight, an interim whose words differ from it, so livekit drops the reply begun on it.
    after = kinds.index(stt.SpeechEventType.PREFLIGHT_TRANSCRIPT)
    retracted = [
        ev.alternatives[0].text for _, ev in events[after:] if ev.type == stt.SpeechEventType.INTERIM_TRANSCRIPT
    ]
    assert retracted and retracted[0].split() != preflights[0].split(), (retracted, preflights)


async def test_silence_and_noise_give_no_transcript(whisper):
    rng = np.random.default_rng(7)
    hiss = (rng.normal(0, 0.01, SAMPLE_RATE * 2) * 32767).astype(np.int16)
    events = await listen(whisper, np.concatenate([silence(1.0), hiss, silence(1.0)]), realtime=False)
    assert texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT) == []


async def test_telephone_audio_at_8khz(whisper):
    speech = speak("Please call me back tomorrow morning.")
    resampler = rtc.AudioResampler(SAMPLE_RATE, 8000, num_channels=1)
    narrow = resampler.push(rtc.AudioFrame(speech.tobytes(), SAMPLE_RATE, 1, len(speech))) + resampler.flush()
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in narrow])
    audio = np.concatenate([np.zeros(4000, dtype=np.int16), pcm, np.zeros(8000, dtype=np.int16)])
    finals = texts(await listen(whisper, audio, rate=8000, realtime=False), stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(finals) == 1 and "call me back" in finals[0].lower() and "tomorrow" in finals[0].lower(), finals


async def test_a_long_monologue_is_transcribed_whole(whisper):
    story = (
        "yesterday I drove to the coast with my brother, and we stopped at a small bakery for coffee, "
        "then the weather turned and it started raining heavily, so we waited in the car for an hour, "
        "listening to the radio and talking about our grandmother's garden, and when the rain finally stopped "
        "we walked along the beach, collected a few shells for my daughter, and watched the fishing boats "
        "coming back into the harbour before we drove home in the evening traffic"
    )
    speech = speak(story, speed=120)
    assert len(speech) > 31 * SAMPLE_RATE  # past Whisper's 30 s window
    events = await listen(whisper, np.concatenate([speech, silence(1.0)]), realtime=False)
    heard = " ".join(texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT)).lower()
    for word in ("coast", "bakery", "raining", "grandmother", "beach", "harbour", "traffic"):
        assert word in heard.replace("harbor", "harbour"), (word, heard)


async def test_clipped_audio_is_still_transcribed(whisper):
    speech = speak("Please turn off the kitchen lights.").astype(np.int32) * 12  # a microphone gain far too high
    clipped = np.clip(speech, -32768, 32767).astype(np.int16)
    assert np.mean(np.abs(clipped) == 32767) > 0.05  # heavily clipped
    events = await listen(whisper, np.concatenate([silence(0.3), clipped, silence(1.0)]), realtime=False)
    finals = texts(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert len(finals) == 1 and "kitchen" in finals[0].lower() and "light" in finals[0].lower(), finals


@pytest.mark.parametrize(
    ("decoded", "kept"),
    [
        ("How many ounces are in a pound? How many ounces are in a pound?", "How many ounces are in a pound?"),
        ("What is the capital of Japan? What is the capital of Japan.", "What is the capital of Japan?"),
        ("Hello. How are you? Hello.", "Hello. How are you? Hello."),  # said again later: kept
        ("It is four four four.", "It is four four four."),
    ],
)
def test_a_sentence_whisper_repeats_right_after_itself_is_dropped(decoded, kept):
    assert without_repeats(decoded) == kept


WINDOW = 512  # Silero's window at 16 kHz


def window(level: float) -> np.ndarray:
    return np.full(WINDOW, level, dtype=np.float32)


def test_the_voice_ends_when_its_audio_does_not_when_the_vad_has_decayed():
    voice = VoiceEnd(threshold=0.35, silence_s=0.1)
    for _ in range(20):
        assert voice.update(0.99, window(0.2)) == (False, True)
    # The audio stops; the VAD's probability decays over several windows.
    assert voice.update(0.88, window(0.0)) == (False, False)
    assert voice.update(0.72, window(0.0)) == (True, False)  # two quiet windows, still over the VAD's threshold
    # The person goes on: a decode started at the pause is stale, even while the probability is still easing off.
    assert voice.update(0.7, window(0.2))[1]
    assert voice.update(0.95, window(0.2))[1]


def test_in_a_noisy_room_the_vads_silence_ends_the_voice_and_noise_is_not_a_return():
    voice = VoiceEnd(threshold=0.35, silence_s=0.1)
    for _ in range(20):
        voice.update(0.99, window(0.2))
    results = [voice.update(p, window(0.05)) for p in (0.6, 0.3, 0.1, 0.05, 0.05, 0.05)]  # noise 12 dB under voice
    ended = [e for e, _ in results]
    assert not any(ended[:3]) and all(ended[4:])  # after 0.1 s under the threshold
    assert not any(voiced for _, voiced in results[1:])  # the noise after it never makes that decode stale
