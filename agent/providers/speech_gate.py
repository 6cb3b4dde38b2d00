"""What keeps non-speech from becoming a turn in the local STT: a gate before every Whisper decode, and a filter on
Whisper's stock phrases for audio that is not clearly speech.

Whisper, given silence or noise, writes something anyway: Whisper base (int8) on an AMD EPYC writes "you" for 2 s of
digital silence, with scores that pass its own no-speech rule; on this Intel CPU the same model writes "I'm", "So." or
"I'm not sure if I can get the right answer." for noise, a hum and clicks. Which words, and whether the no-speech rule
catches them, depend on the CPU's numerics, so the decision is made before decoding, on the audio:

1. level: the RMS of the loudest 30 ms windows (the top tenth, at least three). Under `FLOOR_DBFS` the audio is
   silence or near-silence and is not decoded (~30 us for 5 s; no model involved, so no numerics either).
2. speech: Silero (the VAD model livekit-plugins-silero ships) over the audio from its start, until it has heard
   `CLEAR_SPEECH_S` of speech. Under `MIN_SPEECH_S` (the VAD's own minimum to start an utterance) the audio is a hum,
   clicks or noise and is not decoded. Real speech stops the scan within its first syllables (~5 ms for an
   utterance with the VAD's 0.5 s of lead-in); non-speech is scanned whole (~6 ms per second of audio on a busy
   2-core box) and saves the decode (0.3-0.8 s). Silero hears speech down to about -45 dBFS, as the VAD does.
3. after decoding: a transcript that is one of Whisper's known non-speech phrases ("you", "Thank you.", "Thanks for
   watching!", "Bye.", "Subtitles by ...", "[Music]", ...) is dropped unless the audio was clearly speech: loud enough,
   `CLEAR_SPEECH_S` of it by Silero, and Whisper's no_speech_prob at most `MODEST_NO_SPEECH`. A transcript with no
   words at all ("♪", "...", "[BLANK_AUDIO]") is always dropped.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
LEVEL_WINDOW = 480  # 30 ms
LOUDEST_SHARE = 0.1  # the level is the RMS of the loudest tenth of the windows (at least three)
# Speech at -35 dBFS (a quiet talker far from the microphone) is transcribed word for word, and so is espeak at
# -45 dBFS; room noise through a microphone sits around -60 dBFS and 16-bit dither near -100. -50 leaves 15 dB of
# margin under quiet speech and 10 over quiet rooms.
FLOOR_DBFS = -50.0
CLEAR_DBFS = -45.0  # a stock phrase quieter than this is not taken as clearly said
SPEECH_PROBABILITY = 0.5  # Silero's activation threshold in livekit's VAD
MIN_SPEECH_S = 0.05  # livekit's VAD starts an utterance after 0.05 s of speech: two 32 ms windows
# Spoken stock phrases get 0.35-0.65 s of speech windows from Silero ("Bye." 11-12 windows, "Thank you." 14-21), the
# non-speech Whisper writes them for none (hum, clicks, noise: no window over 0.2).
CLEAR_SPEECH_S = 0.2
# Whisper's no_speech_prob on the spoken phrases: 0.03-0.19 (espeak and hibari, normal level down to -45 dBFS); on
# silence, noise, a hum and clicks 0.6-0.77 here. The stock rule (> 0.6 with a low log-probability) let "you"
# through on the AMD machine; for a stock phrase a modest value is reason enough.
MODEST_NO_SPEECH = 0.3


def level_dbfs(audio: np.ndarray) -> float:
    """The RMS of the loudest 30 ms windows of float32 samples in [-1, 1], in dB full scale (-inf for zeros)."""
    if audio.size == 0:
        return float("-inf")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < LEVEL_WINDOW:
        power = np.array([np.mean(np.square(audio))])
    else:
        windows = audio[: audio.size // LEVEL_WINDOW * LEVEL_WINDOW].reshape(-1, LEVEL_WINDOW)
        power = np.einsum("ij,ij->i", windows, windows) / LEVEL_WINDOW  # ~20 us for 5 s
    n = power.size
    k = min(n, max(3, int(np.ceil(n * LOUDEST_SHARE))))
    loudest = float(np.mean(np.partition(power, n - k)[n - k :]))
    return float(10.0 * np.log10(loudest)) if loudest > 0 else float("-inf")


@dataclass(frozen=True)
class Heard:
    """What the gate heard in an utterance."""

    level_dbfs: float
    speech_s: float  # seconds of Silero windows over the threshold, counted up to CLEAR_SPEECH_S (the scan stops there)

    @property
    def decodable(self) -> bool:
        return self.level_dbfs >= FLOOR_DBFS and self.speech_s >= MIN_SPEECH_S

    @property
    def clear(self) -> bool:
        return self.level_dbfs >= CLEAR_DBFS and self.speech_s >= CLEAR_SPEECH_S


_session = None
_session_lock = threading.Lock()


def load():
    """Silero's model (the one livekit-plugins-silero ships), loaded once per process (~0.1 s)."""
    global _session
    with _session_lock:
        if _session is None:
            from livekit.plugins.silero import onnx_model

            _session = onnx_model.new_inference_session(force_cpu=True)
        return _session


def speech_seconds(audio: np.ndarray, threshold: float = SPEECH_PROBABILITY, enough: float = CLEAR_SPEECH_S) -> float:
    """Seconds of 32 ms windows Silero rates at or over `threshold`, scanning from the start until `enough`."""
    from livekit.plugins.silero import onnx_model

    model = onnx_model.OnnxModel(onnx_session=load(), sample_rate=SAMPLE_RATE)
    size = model.window_size_samples
    window_s = size / SAMPLE_RATE
    heard = 0.0
    for start in range(0, audio.size - size + 1, size):
        if model(audio[start : start + size]) >= threshold:
            heard += window_s
            if heard >= enough:
                break
    return heard


def hear(audio: np.ndarray, threshold: float = SPEECH_PROBABILITY) -> Heard:
    """The gate's verdict on float32 16 kHz mono samples: Silero runs only on audio over the floor."""
    level = level_dbfs(audio)
    if level < FLOOR_DBFS:
        return Heard(level, 0.0)
    return Heard(level, speech_seconds(np.ascontiguousarray(audio, dtype=np.float32), threshold))


# Whisper's stock phrases on non-speech (its training data's subtitle credits and outros), compared without case,
# punctuation or spacing.
STOCK_PHRASES = frozenset(
    {
        "you",
        "so",
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks",
        "thank you for watching",
        "thanks for watching",
        "thank you for listening",
        "thanks for listening",
        "thank you for watching and see you next time",
        "please subscribe",
        "please subscribe to my channel",
        "like and subscribe",
        "see you next time",
        "see you in the next video",
        "bye",
        "bye bye",
        "goodbye",
    }
)
CREDITS = re.compile(
    r"^(subtitles?|subtitled|captions?|captioned|captioning|transcri\w*|translat\w*|edited)\s+(by|from)\b|amara\.org",
    re.IGNORECASE,
)
ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")  # [Music], (upbeat music), *sigh*


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower().replace("-", " ")))


def wordless(text: str) -> bool:
    """Nothing a person said: only symbols, punctuation or annotations ("♪", "...", "[Music]", "[BLANK_AUDIO]")."""
    return not re.search(r"\w", ANNOTATION.sub(" ", text))


def stock_phrase(text: str) -> bool:
    """One of Whisper's known transcripts of non-speech ("you", "Thank you.", "Thanks for watching!", "Bye.", ...)."""
    return wordless(text) or _normalized(text) in STOCK_PHRASES or bool(CREDITS.search(text.strip()))


def keep(text: str, heard: Heard, no_speech_prob: float) -> str:
    """`text`, or "" when it is no turn: wordless, or a stock phrase from audio that is not clearly speech."""
    if wordless(text):
        return ""
    if stock_phrase(text) and (not heard.clear or no_speech_prob > MODEST_NO_SPEECH):
        return ""
    return text
