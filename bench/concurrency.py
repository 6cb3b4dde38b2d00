"""Concurrency benchmark: K simultaneous calls on one agent worker, with fixed-latency stand-in providers.

The providers are a local OpenAI-compatible stand-in (speech to text, LLM, text to speech; real wire formats) that
answers after fixed delays and costs almost no CPU, so what grows with K is the framework's own work: VAD, audio
routing, the session loop, WebRTC. For each K it starts K `livekit.rtc` clients in K rooms, each asks a spoken
question at a random moment within a 1.5 s window, R rounds, and reports:
- overhead: the agent's time from the end of speech to its first audio, minus the fixed waits (VAD silence, STT,
  LLM first token, TTS first audio delays), p50/p95;
- voice-to-voice at the clients, p50/p95;
- the worker's CPU (percent of one core) and memory per session.
It ends with the largest K whose overhead p95 stays within 100 ms.

Run: `uv run python -m bench.concurrency` (about 5 minutes; `--levels 1,2,4,8 --rounds 3`); it stops at the first
level where calls are not even greeted within 60 s. The clients run in
this process, on the same 2 cores as the worker and livekit-server: their CPU counts against the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from livekit import rtc

from agent.settings import AgentSettings
from agent.waterfall import TOPIC
from stack.services import Stack
from tests.support.openai_standin import OpenAIStandIn
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client
from tests.support.speech import speak

STT_DELAY, LLM_DELAY, TTS_DELAY = 0.15, 0.20, 0.05
QUESTION = "Could you tell me something nice about today?"


@dataclass
class Level:
    sessions: int
    overhead: list[float] = field(default_factory=list)
    v2v: list[float] = field(default_factory=list)
    missed: int = 0
    cpu_percent: float = 0.0
    rss_per_session_mb: float = 0.0
    failed: str = ""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def worker_tree(stack: Stack) -> list[psutil.Process]:
    agent = next(s for s in stack.services if s.name == "agent")
    root = psutil.Process(agent.proc.pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


async def active_sessions(stack: Stack) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{stack.settings.agent_metrics_port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("voice_agent_sessions_active"):
            return float(line.split()[-1])
    return 0.0


async def run_level(stack: Stack, k: int, rounds: int, question, vad_silence: float) -> Level:
    level = Level(k)
    clients = [Client(stack.token_url, identity=f"caller-{k}-{n}") for n in range(k)]
    records: dict[str, list[dict]] = {c.identity: [] for c in clients}
    for client in clients:

        def on_waterfall(reader: rtc.TextStreamReader, _sender: str, who: str = client.identity) -> None:
            async def read() -> None:
                records[who].append(json.loads(await reader.read_all()))

            asyncio.ensure_future(read())

        client.room.register_text_stream_handler(TOPIC, on_waterfall)
    procs = worker_tree(stack)
    rss_before = rss_mb(procs)
    await asyncio.gather(*(c.join(room_name=f"bench-{k}-{n}-{random.randrange(10**6)}") for n, c in enumerate(clients)))
    try:
        try:
            await asyncio.gather(*(c.wait_for(lambda c=c: c.texts(c.agent_identity), 60, "greeting") for c in clients))
            await asyncio.gather(*(c.quiet(0.8, timeout=60) for c in clients))
        except AssertionError:
            level.missed = sum(1 for c in clients if not c.texts(c.agent_identity))
            level.failed = f"{level.missed} of {k} calls were not greeted within 60 s"
            return level
        procs = worker_tree(stack)
        level.rss_per_session_mb = (rss_mb(procs) - rss_before) / k
        cpu_start, wall_start = cpu_seconds(procs), time.monotonic()
        for _ in range(rounds):

            async def ask(client: Client) -> None:
                await asyncio.sleep(random.uniform(0, 1.5))
                before = len(records[client.identity])
                await client.say(question)
                end = client.last_voiced_at
                try:
                    await client.wait_for(lambda: client.speech_since(end) is not None, 20, "an answer")
                    level.v2v.append(client.speech_since(end) - end)
                    await client.wait_for(lambda: len(records[client.identity]) > before, 30, "the waterfall")
                    record = records[client.identity][before]
                    fixed = vad_silence + STT_DELAY + LLM_DELAY + TTS_DELAY
                    level.overhead.append(record["audio_out"] - fixed)
                except (AssertionError, KeyError):
                    level.missed += 1
                await client.quiet(0.8, timeout=60)

            await asyncio.gather(*(ask(c) for c in clients))
        level.cpu_percent = 100 * (cpu_seconds(procs) - cpu_start) / (time.monotonic() - wall_start)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    deadline = time.monotonic() + 30
    while await active_sessions(stack) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return level


def standin_env(standin: OpenAIStandIn, max_sessions: int, data_dir: Path) -> dict[str, str]:
    """The worker's environment with every provider on the fixed-latency stand-in (also used by bench.soak)."""
    return {
        "LLM_BASE_URL": standin.base_url,
        "STT_BASE_URL": standin.base_url,
        "TTS_BASE_URL": standin.base_url,
        "SKILL_FAST_PATH": "false",
        "MAX_SESSIONS": str(max_sessions),
        "MEMORY_TURNS": "0",
        "TOKEN_RATE_PER_S": "0",  # every simulated caller asks from this one address
        "DATA_DIR": str(data_dir),
    }


async def run(levels: list[int], rounds: int, log_dir: Path) -> list[Level]:
    standin = OpenAIStandIn(transcript=QUESTION, stt_delay=STT_DELAY, llm_delay=LLM_DELAY, tts_delay=TTS_DELAY).start()
    env = standin_env(standin, max_sessions=1000, data_dir=log_dir.parent)
    question = speak(QUESTION)
    vad_silence = AgentSettings(_env_file=None).vad_min_silence_s
    results = []
    try:
        with Stack(loopback_ports(), env=env, log_dir=log_dir) as stack:
            for k in levels:
                print(f"  {k} simultaneous calls ...", flush=True)
                level = await run_level(stack, k, rounds, question, vad_silence)
                results.append(level)
                if level.failed:
                    print(f"    overloaded: {level.failed}; stopping here", flush=True)
                    break
                overhead = f"{pct(level.overhead, 0.5) * 1000:.0f} ms p95 {pct(level.overhead, 0.95) * 1000:.0f} ms"
                print(
                    f"    overhead p50 {overhead}; v2v p50 {pct(level.v2v, 0.5) * 1000:.0f} ms;"
                    f" CPU {level.cpu_percent:.0f} %;"
                    f" {level.rss_per_session_mb:.1f} MB/session; missed {level.missed}",
                    flush=True,
                )
    finally:
        standin.stop()
    return results


def report(results: list[Level]) -> None:
    print(
        f"\nFixed provider delays: STT {STT_DELAY * 1000:.0f} ms, LLM first token {LLM_DELAY * 1000:.0f} ms, "
        f"TTS first audio {TTS_DELAY * 1000:.0f} ms (plus the VAD's silence), subtracted from the overhead."
    )
    print(
        f"{'calls':>5} {'turns':>5} {'overhead p50':>12} {'p95':>6} {'v2v p50':>8} {'p95':>6}"
        f" {'worker CPU %':>12} {'MB/call':>8} {'missed':>6}"
    )
    for lv in [lv for lv in results if not lv.failed]:
        print(
            f"{lv.sessions:5d} {len(lv.overhead):5d} {pct(lv.overhead, 0.5) * 1000:12.0f} "
            f"{pct(lv.overhead, 0.95) * 1000:6.0f} {pct(lv.v2v, 0.5) * 1000:8.0f} {pct(lv.v2v, 0.95) * 1000:6.0f}"
            f" {lv.cpu_percent:12.0f} {lv.rss_per_session_mb:8.1f} {lv.missed:6d}"
        )
    for lv in results:
        if lv.failed:
            print(f"{lv.sessions:5d} overloaded: {lv.failed}")
    within = [lv.sessions for lv in results if lv.overhead and pct(lv.overhead, 0.95) <= 0.1 and not lv.missed]
    print(f"largest K with overhead p95 <= 100 ms: {max(within) if within else 'none'}")
    if results:
        print(f"(median overhead at 1 call: {statistics.median(results[0].overhead or [float('nan')]) * 1000:.0f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,6,8,12")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    (data / "logs").mkdir()
    print(f"logs in {data / 'logs'}", flush=True)
    results = asyncio.run(run([int(k) for k in args.levels.split(",")], args.rounds, data / "logs"))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
