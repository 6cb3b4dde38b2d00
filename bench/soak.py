"""Soak benchmark: calls at capacity for a long time, through a real livekit-server and one agent worker.

K = MAX_SESSIONS callers each run call after call: join a new room (a new token, a new dispatch), wait for the
greeting, ask a spoken question, wait for the spoken answer, hang up, and start the next call. The providers are the
fixed-latency OpenAI-compatible stand-in of `bench.concurrency` (STT, LLM and TTS at almost no CPU), so what runs for
the whole soak is the framework: dispatch, sessions opening and closing, VAD, audio routing, WebRTC. The worker's
memory (its process tree's RSS) is sampled every 30 s. It reports calls made, answered, dropped (no agent, no
greeting or no answer in time), and the memory growth from the first to the last fifth of the soak.

Run: `uv run python -m bench.soak` (30 minutes, K=2), `--minutes 5 --calls 4` for a shorter one. The callers run in
this process, on the same cores as the worker and livekit-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.concurrency import LLM_DELAY, QUESTION, STT_DELAY, TTS_DELAY, rss_mb, standin_env, worker_tree
from stack.services import Stack
from tests.support.openai_standin import OpenAIStandIn
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client
from tests.support.speech import speak


@dataclass
class Soak:
    made: int = 0
    answered: int = 0
    dropped: list[str] = field(default_factory=list)
    v2v: list[float] = field(default_factory=list)
    memory: list[tuple[float, float]] = field(default_factory=list)  # (minutes in, MB)


async def one_call(stack: Stack, caller: str, n: int, question, soak: Soak) -> None:
    client = Client(stack.token_url, identity=f"{caller}-{n}")
    soak.made += 1
    try:
        await client.join(room_name=f"soak-{caller}-{n}-{random.randrange(10**6)}")
        await client.wait_for(lambda: client.texts(client.agent_identity), 30, "the greeting")
        await client.quiet(0.8, timeout=30)
        await client.say(question)
        end = client.last_voiced_at
        await client.wait_for(lambda: client.speech_since(end) is not None, 20, "the answer")
        soak.v2v.append(client.speech_since(end) - end)
        await client.quiet(0.8, timeout=30)
        soak.answered += 1
    except Exception as exc:  # a dropped call: counted, and the soak goes on
        soak.dropped.append(f"{caller}-{n}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def caller(stack: Stack, name: str, until: float, question, soak: Soak) -> None:
    n = 0
    while time.monotonic() < until:
        await one_call(stack, name, n, question, soak)
        n += 1
        await asyncio.sleep(random.uniform(0.5, 1.5))  # the slot frees; the next call comes


async def sample_memory(stack: Stack, started: float, until: float, soak: Soak) -> None:
    while time.monotonic() < until:
        soak.memory.append(((time.monotonic() - started) / 60, rss_mb(worker_tree(stack))))
        await asyncio.sleep(30)


async def run(minutes: float, calls: int, log_dir: Path) -> Soak:
    standin = OpenAIStandIn(transcript=QUESTION, stt_delay=STT_DELAY, llm_delay=LLM_DELAY, tts_delay=TTS_DELAY).start()
    env = standin_env(standin, max_sessions=calls, data_dir=log_dir.parent)
    soak = Soak()
    question = speak(QUESTION)
    try:
        with Stack(loopback_ports(), env=env, log_dir=log_dir) as stack:
            started = time.monotonic()
            until = started + minutes * 60
            await asyncio.gather(
                sample_memory(stack, started, until, soak),
                *(caller(stack, f"caller{k}", until, question, soak) for k in range(calls)),
            )
    finally:
        standin.stop()
    return soak


def report(soak: Soak, minutes: float, calls: int) -> None:
    fifth = max(1, len(soak.memory) // 5)
    first = statistics.median(mb for _, mb in soak.memory[:fifth]) if soak.memory else float("nan")
    last = statistics.median(mb for _, mb in soak.memory[-fifth:]) if soak.memory else float("nan")
    v2v = sorted(soak.v2v)
    p50 = v2v[len(v2v) // 2] * 1000 if v2v else float("nan")
    p95 = v2v[min(len(v2v) - 1, round(0.95 * (len(v2v) - 1)))] * 1000 if v2v else float("nan")
    print(f"\nsoak: {minutes:g} min at {calls} simultaneous calls (MAX_SESSIONS={calls})")
    print(f"calls made {soak.made}, answered {soak.answered}, dropped {len(soak.dropped)}")
    print(f"voice-to-voice p50 {p50:.0f} ms, p95 {p95:.0f} ms (stand-in providers)")
    print(
        f"worker memory: first fifth {first:.0f} MB, last fifth {last:.0f} MB, growth {100 * (last / first - 1):+.1f} %"
    )
    print("memory samples (min, MB): " + ", ".join(f"{m:.0f}:{mb:.0f}" for m, mb in soak.memory))
    for line in soak.dropped[:10]:
        print(f"  dropped: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=2, help="simultaneous calls, also the worker's MAX_SESSIONS")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    (data / "logs").mkdir()
    print(f"logs in {data / 'logs'}", flush=True)
    soak = asyncio.run(run(args.minutes, args.calls, data / "logs"))
    report(soak, args.minutes, args.calls)
    return 0 if not soak.dropped else 1


if __name__ == "__main__":
    raise SystemExit(main())
