"""Voice-to-voice benchmark: spoken requests from a real LiveKit client through livekit-server, on the offline default.

Starts its own stack on free loopback ports (livekit-server, agent worker, token server), joins as a `livekit.rtc`
participant, speaks each request (espeak-ng, or hibari: `--voice`), and measures at the client the time from the last
voiced frame of the request to the agent's first audible frame. The agent's per-turn waterfall (topic
`voice-agent.waterfall`) says where the time went. It also checks what was heard (word error rate) and answered
(expected words).

Run: `uv run python -m bench.voice` (about 5 minutes on 2 cores). Options: `--turns N`, `--set KEY=VALUE` (agent
settings, e.g. `--set STT_BEAM_SIZE=1`), `--json FILE`, `--voice espeak|hibari|mixed` (the person's voice: espeak-ng's
flat formant voice, which Whisper base mishears more, hibari's neural one, or the two in turn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from livekit import rtc

from agent.waterfall import STAGES, TOPIC
from stack.services import Stack
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client
from tests.support.speech import hibari_speech, speak

VOICES = ("espeak", "hibari", "mixed")


def clock_in(zone: str) -> str:
    now = datetime.now(ZoneInfo(zone))
    times = {(now + timedelta(minutes=m)).strftime("%H:%M") for m in range(-1, 3)}
    return "|".join(sorted(times | {t.lstrip("0") for t in times}))


def today() -> str:
    now = datetime.now()
    return f"{now:%B}|{now.day}"


# (kind, request, what the answer must contain: a regex, or None for any answer)
REQUESTS: list[tuple[str, str, str | None]] = [
    ("chat", "Hi there, how are you doing today?", None),
    ("skill", "What time is it in Tokyo?", "TIME:Asia/Tokyo"),
    ("skill", "What is twelve times fourteen?", r"168|one hundred (and )?sixty[- ]eight"),
    ("chat", "Tell me a fun fact about octopuses.", r"octop|arm|heart|tentacle"),
    ("skill", "How many kilometers is ten miles?", r"16"),
    ("chat", "What is the capital of Japan?", r"tokyo"),
    ("skill", "Please save a note that the garage code is four five six one.", r"4\s?5\s?6\s?1|saved|noted"),
    ("skill", "What's the date today?", "TODAY"),
    ("chat", "Can you suggest a name for a black cat?", None),
    ("skill", "Convert seventy degrees Fahrenheit to Celsius.", r"21"),
    ("skill", "Read me my notes.", r"4\s?5\s?6\s?1|garage"),
    ("chat", "Why is the sky blue?", r"scatter|light|wavelength|blue"),
    ("skill", "What is one hundred divided by eight?", r"12\.5|twelve point five"),
    ("skill", "What time is it in London?", "TIME:Europe/London"),
    ("chat", "Give me one tip for sleeping better.", None),
    ("skill", "How many ounces are in a pound?", r"16|sixteen"),
    ("chat", "Who wrote Romeo and Juliet?", r"shakespeare"),
    ("skill", "What is seven plus eight?", r"15|fifteen"),
    ("chat", "Tell me a short joke.", None),
    ("chat", "What is the largest planet in the solar system?", r"jupiter"),
    ("skill", "How much is fifteen percent of eighty?", r"12|twelve"),
    ("chat", "What should I cook for dinner tonight?", None),
]


@dataclass
class Turn:
    kind: str
    request: str
    heard: str = ""
    reply: str = ""
    v2v: float | None = None  # client: last voiced frame sent -> first audible agent frame received
    vad_lag: float | None = None  # the agent's speech-end estimate minus the client's last voiced frame
    network: float | None = None  # of which: until that frame arrived at the agent (the rest is the VAD's)
    stages: dict[str, float] = field(default_factory=dict)
    correct: bool | None = None
    word_errors: int = 0
    words: int = 0


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


NUMBERS = {
    "twelve": "12",
    "fourteen": "14",
    "ten": "10",
    "seventy": "70",
    "four": "4",
    "five": "5",
    "six": "6",
    "one": "1",
    "seven": "7",
    "eight": "8",
    "fifteen": "15",
    "eighty": "80",
    "hundred": "100",
}


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word-level edit distance, with spelled-out and written numbers made equal."""
    ref = [NUMBERS.get(w, w) for w in words(reference)]
    hyp = [NUMBERS.get(w, w) for w in words(hypothesis.replace(",", ""))]
    hyp = [piece for w in hyp for piece in (list(w) if w.isdigit() and len(w) == 4 and w not in ref else [w])]
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
    return row[len(hyp)], len(ref)


def check(expect: str | None, reply: str) -> bool:
    if expect is None:
        return bool(reply.strip())
    if expect.startswith("TIME:"):
        expect = clock_in(expect[5:])
    elif expect == "TODAY":
        expect = today()
    return re.search(expect, reply, re.IGNORECASE) is not None


def voiced(turns: int, voice: str) -> list[np.ndarray]:
    """Each turn's request as speech, made before the stack starts (hibari takes the CPU while it speaks)."""
    out = []
    for n in range(turns):
        request = REQUESTS[n % len(REQUESTS)][1]
        hibari = voice == "hibari" or (voice == "mixed" and n % 2 == 1)
        out.append(hibari_speech(request) if hibari else speak(request))
    return out


async def run(turns: int, env: dict[str, str], log_dir: Path, voice: str = "espeak") -> list[Turn]:
    log_dir.mkdir(parents=True, exist_ok=True)
    speech = voiced(turns, voice)
    print(f"starting the stack (logs in {log_dir}) ...", flush=True)
    with Stack(loopback_ports(), env=env, log_dir=log_dir, progress=lambda m: print("  " + m, flush=True)) as stack:
        client = Client(stack.token_url, identity="bench-user")
        records: list[dict] = []

        def on_waterfall(reader: rtc.TextStreamReader, _identity: str) -> None:
            async def read() -> None:
                records.append(json.loads(await reader.read_all()))

            asyncio.ensure_future(read())

        client.room.register_text_stream_handler(TOPIC, on_waterfall)
        await client.join()
        epoch = time.time() - time.monotonic()
        results: list[Turn] = []
        try:
            await client.wait_for(lambda: client.agent_identity is not None, 60, "the agent's audio track")
            await client.wait_for(lambda: client.texts(client.agent_identity), 60, "the greeting")
            await client.quiet(1.0)
            for n in range(turns):
                kind, request, expect = REQUESTS[n % len(REQUESTS)]
                turn = Turn(kind, request)
                heard_before = len(client.texts(client.identity))
                said_before = len(client.texts(client.agent_identity))
                records_before = len(records)
                await client.say(speech[n])
                end = client.last_voiced_at
                try:
                    await client.wait_for(lambda end=end: client.speech_since(end) is not None, 60, "an answer")
                    turn.v2v = client.speech_since(end) - end
                    await client.wait_for(lambda n=records_before: len(records) > n, 90, "the turn's waterfall")
                    await client.quiet(1.0, timeout=90)
                except AssertionError as exc:
                    print(f"  turn {n + 1}: {exc}", flush=True)
                    await client.quiet(1.0, timeout=90)
                await asyncio.sleep(0.3)
                turn.heard = " ".join(client.texts(client.identity)[heard_before:])
                turn.reply = " ".join(client.texts(client.agent_identity)[said_before:])
                turn.word_errors, turn.words = word_errors(request, turn.heard)
                turn.correct = check(expect, turn.reply)
                if len(records) > records_before:
                    record = records[records_before]
                    turn.stages = {k: record[k] for k in STAGES if k in record}
                    turn.vad_lag = record["speech_end"] - (end + epoch)
                    if "vad_delay" in record:
                        turn.network = turn.vad_lag - record["vad_delay"]
                results.append(turn)
                print(
                    f"  {n + 1:2d}/{turns} {kind:5s} v2v {fmt(turn.v2v)}  {'ok ' if turn.correct else 'BAD'} "
                    f"heard {turn.heard!r} -> {turn.reply[:70]!r}",
                    flush=True,
                )
        finally:
            await client.close()
        return results


def fmt(value: float | None) -> str:
    return f"{value * 1000:5.0f}" if value is not None else "    -"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(results: list[Turn]) -> None:
    columns = ["v2v", "network", "vad_lag", *STAGES]
    print("\nPer turn, milliseconds (stages counted from the end of speech as the agent's VAD saw it):")
    print(f"{'#':>3} {'kind':5s} " + " ".join(f"{c[:11]:>11s}" for c in columns) + "  ok  request")
    for n, t in enumerate(results, 1):
        cells = [fmt(t.v2v), fmt(t.network), fmt(t.vad_lag), *(fmt(t.stages.get(s)) for s in STAGES)]
        ok = "yes" if t.correct else "NO "
        print(f"{n:3d} {t.kind:5s} " + " ".join(f"{c:>11s}" for c in cells) + f"  {ok} {t.request}")
    print("\nSummary (ms):")
    for kind in ("all", "skill", "chat"):
        sel = [t for t in results if kind == "all" or t.kind == kind]
        v2v = [t.v2v for t in sel if t.v2v is not None]
        if not v2v:
            continue
        line = f"  {kind:5s} n={len(v2v):2d}  v2v p50 {pct(v2v, 0.5) * 1000:5.0f}  p95 {pct(v2v, 0.95) * 1000:5.0f}"
        medians = []
        for stage in ("network", "vad_lag", *STAGES):
            values = [getattr(t, stage) if stage in ("network", "vad_lag") else t.stages.get(stage) for t in sel]
            values = [v for v in values if v is not None]
            if values:
                medians.append(f"{stage} {statistics.median(values) * 1000:.0f}")
        print(line + "  | medians: " + ", ".join(medians))
    errors = sum(t.word_errors for t in results)
    total = sum(t.words for t in results)
    correct = sum(1 for t in results if t.correct)
    print(f"  transcription WER {errors / max(total, 1):.1%} ({errors}/{total} words)")
    print(f"  answers with the expected content: {correct}/{len(results)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=len(REQUESTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent setting (env)")
    parser.add_argument("--json", type=Path, help="write the per-turn results here")
    parser.add_argument("--voice", choices=VOICES, default="espeak", help="the person's voice (default: espeak)")
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="bench-voice-")
    env = {"LLM_BASE_URL": "", "DATA_DIR": data}
    for item in args.set:
        key, _, value = item.partition("=")
        env[key.upper()] = value
    print("settings:", " ".join(f"{k}={v}" for k, v in env.items() if k != "DATA_DIR") or "defaults", flush=True)
    print("voice:", args.voice, flush=True)
    results = asyncio.run(run(args.turns, env, Path(data) / "logs", args.voice))
    report(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(t) for t in results], indent=1))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
