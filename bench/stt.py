"""STT benchmark: what the local Whisper makes of whole spoken requests, per decoding setting.

Each request is spoken by hibari (three seeds, three speeds) and by espeak-ng (three speeds), then decoded the way
the agent decodes a final transcript (`WhisperSTT._decode_window`). It prints, per beam setting, the share of
requests cut short (the transcript stops more than two words before the request does: Whisper ended its text early),
the word error rate (numbers written as digits count as their words), and the median decode time.

Run: `uv run python -m bench.stt` (about 3 minutes), `--beams 1 5` to compare settings.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np

from agent.providers.whisper_stt import WhisperSTT
from tests.support.speech import hibari_speech, speak

REQUESTS = [
    "Could you tell me what time it is in Singapore at the moment?",
    "I want to reserve a room for two nights starting next Friday.",
    "How much is thirty five percent of two hundred and forty?",
    "Please make a note that the plumber comes on Thursday morning.",
    "What did I ask you to remember about my mother's birthday?",
    "Turn eighty kilometres into miles for me, would you?",
    "Is it already the weekend or is today still a weekday?",
    "Tell me a short joke about penguins and then say goodbye.",
    "My flight lands at nine in the evening, can you note that down?",
    "What was the name of the painter who did the Mona Lisa?",
    "Um, so, what's the date going to be a week from today?",
    "Can you please remind me what notes I have saved so far?",
]

NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten", "35": "thirty five", "80": "eighty", "240": "two hundred and forty",
}  # fmt: skip


def words(text: str) -> list[str]:
    text = re.sub(r"\d+", lambda m: NUMBERS.get(m.group(), m.group()), text.lower().replace("%", " percent"))
    return re.sub(r"[^a-z0-9' ]", " ", text).split()


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def cut_short(said: list[str], heard: list[str]) -> bool:
    """The transcript matches the start of the request but stops more than two words before its end."""
    return len(heard) < len(said) - 2 and edit_distance(said[: len(heard)], heard) <= max(1, len(heard) // 4)


def voices(text: str):
    for seed, speed in ((1, 1.0), (2, 0.85), (3, 1.15)):
        yield f"hibari x{speed}", hibari_speech(text, seed=seed, speed=speed)
    for speed in (130, 160, 190):
        yield f"espeak {speed}", speak(text, speed=speed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()

    whisper = WhisperSTT(model="base")
    clips = [(text, voice, pcm.astype(np.float32) / 32768.0) for text in REQUESTS for voice, pcm in voices(text)]
    print(f"{len(clips)} clips: {len(REQUESTS)} requests x {len(clips) // len(REQUESTS)} voices")
    print(f"{'beam':>4} {'cut short':>10} {'WER':>6} {'decode p50':>11}")
    for beam in args.beams:
        short, errors, total, times = [], 0, 0, []
        for text, voice, audio in clips:
            began = time.perf_counter()
            heard = whisper._decode_window(audio, "en", beam, whisper.hear(audio))
            times.append(time.perf_counter() - began)
            said, got = words(text), words(heard)
            errors, total = errors + edit_distance(said, got), total + len(said)
            if cut_short(said, got):
                short.append(f"{voice}: {heard!r}")
        p50 = statistics.median(times) * 1000
        print(f"{beam:>4} {len(short):>4}/{len(clips):<5} {errors / total:>6.1%} {p50:>8.0f} ms")
        for line in short:
            print(f"       cut short, {line}")


if __name__ == "__main__":
    main()
