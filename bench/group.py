"""Group-room benchmark: what each extra listening participant costs the agent, and how fast it answers its name.

Starts its own stack on free loopback ports (livekit-server, the agent worker with local Whisper and hibari, the
scripted OpenAI-compatible LLM stand-in so the LLM's own time does not drown the rest, and the token server), opens
a group room (dispatch metadata {"mode": "group"}) with one host, then:

1. adds listening participants in steps (each publishes a microphone: quiet room noise, or with `--speaking`,
   speech on a loop) and measures the agent worker's CPU (process tree, % of one core) and resident memory after
   each step settles; prints the cost per extra participant (least-squares slope);
2. the host says "Jarvis, what time is it in Tokyo?" `--turns` times while the listeners stay; prints the time from
   the end of the spoken name ("Jarvis") and from the end of the question to the agent's first audio at the host.

Run: `uv run python -m bench.group` (about 3 minutes on 2 cores). Options: `--steps 0,2,4,8`, `--speaking`,
`--turns N`, `--settle S`, `--set KEY=VALUE` (agent settings, e.g. `--set GROUP_SILENCE_GATE_DBFS=-100` to run
every listener's audio through the VAD), `--json FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.concurrency import cpu_seconds, rss_mb, worker_tree
from stack.services import Stack
from tests.support.openai_standin import OpenAIStandIn
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client
from tests.support.speech import SAMPLE_RATE, last_voiced_index, rms, speak

GROUP = {"agents": [{"metadata": json.dumps({"mode": "group"})}]}
QUESTION = "Jarvis, what time is it in Tokyo?"


def name_end_s(samples: np.ndarray, frame: int = 160, level: float = 0.01) -> float:
    """End of the first voiced stretch (the name, before the comma's pause), in seconds from the start."""
    voiced = [rms(samples[i : i + frame]) > level for i in range(0, len(samples), frame)]
    start = voiced.index(True)
    quiet = 0
    for n in range(start, len(voiced)):
        quiet = 0 if voiced[n] else quiet + 1
        if quiet >= 8:  # 80 ms of pause ends the name
            return (n - quiet + 1) * frame / SAMPLE_RATE
    return len(samples) / SAMPLE_RATE


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(xs, ys, 1)[0]) if len(set(xs)) > 1 else float("nan")


async def keep_talking(client: Client, speech: np.ndarray) -> None:
    while True:
        await client.say(speech)
        await asyncio.sleep(1.0)


async def measure(procs, seconds: float) -> tuple[float, float]:
    before, started = cpu_seconds(procs), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(procs) - before) / (time.monotonic() - started), rss_mb(procs)


async def run(args: argparse.Namespace, stack: Stack) -> dict:
    procs = worker_tree(stack)
    room = "bench-group"
    host = Client(stack.token_url, identity="host", name="Host", room_config=GROUP, agent_only=True)
    await host.join(room)
    await host.wait_for(lambda: host.agent_identity is not None, 60, "the agent")
    await host.wait_for(lambda: host.texts(host.agent_identity), 30, "the greeting")
    await host.quiet(1.0)

    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 0.0005, SAMPLE_RATE * 5) * 32767).astype(np.int16)  # about -66 dBFS room noise
    chatter = speak("We were just talking about the weather and the trip next week, nothing for the agent.")
    listeners: list[Client] = []
    talkers: list[asyncio.Task] = []
    rows = []
    for target in args.steps:
        while len(listeners) < target:
            n = len(listeners)
            guest = Client(
                stack.token_url, identity=f"listener-{n}", name=f"Listener {n}", room_config=GROUP, subscribe=False
            )
            await guest.join(room)
            listeners.append(guest)
            talkers.append(asyncio.create_task(keep_talking(guest, chatter if args.speaking else noise)))
        await asyncio.sleep(args.settle)
        cpu, mem = await measure(procs, args.window)
        rows.append({"listeners": target, "cpu_percent": cpu, "rss_mb": mem})
        print(f"  {target:3d} extra participants: agent CPU {cpu:6.1f} % of a core, RSS {mem:7.1f} MB", flush=True)

    question = speak(QUESTION)
    name_offset = name_end_s(question)
    voiced_end = last_voiced_index(question) / SAMPLE_RATE
    from_name, from_end = [], []
    unanswered = 0
    for _ in range(args.turns):
        await host.quiet(1.5)
        await host.say(question)
        end = host.last_voiced_at or time.monotonic()
        start = end - voiced_end  # when the first sample of the question played
        try:
            await host.wait_for(lambda end=end: host.speech_since(end) is not None, 30, "the agent's answer")
        except AssertionError:
            unanswered += 1
            print("  turn: no answer within 30 s", flush=True)
            continue
        first = host.speech_since(end)
        from_name.append(first - (start + name_offset))
        from_end.append(first - end)
        print(
            f"  turn: name spoken -> agent audio {from_name[-1] * 1000:6.0f} ms; "
            f"end of question -> agent audio {from_end[-1] * 1000:6.0f} ms",
            flush=True,
        )
    for task in talkers:
        task.cancel()
    for client in [host, *listeners]:
        await client.close()
    xs = [r["listeners"] for r in rows]
    return {
        "steps": rows,
        "cpu_percent_per_listener": slope(xs, [r["cpu_percent"] for r in rows]),
        "rss_mb_per_listener": slope(xs, [r["rss_mb"] for r in rows]),
        "listeners_during_turns": len(listeners),
        "speaking": args.speaking,
        "name_to_audio_ms": [round(v * 1000) for v in from_name],
        "end_to_audio_ms": [round(v * 1000) for v in from_end],
        "unanswered": unanswered,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="0,2,4,8", help="extra listening participants to measure at")
    parser.add_argument("--speaking", action="store_true", help="the listeners talk among themselves on a loop")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--settle", type=float, default=4.0, help="seconds after joining before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of CPU measurement per step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an agent setting")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        args.steps = sorted({int(n) for n in args.steps.split(",")})
    except ValueError:
        parser.error("--steps takes comma-separated counts, e.g. 0,2,4,8")
    if args.steps[0] < 0 or args.turns < 1:
        parser.error("--steps must be >= 0 and --turns >= 1")
    overrides = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(overrides) != len(args.set):
        parser.error("--set takes KEY=VALUE, e.g. --set GROUP_SILENCE_GATE_DBFS=-100")

    llm = OpenAIStandIn().start()
    env = {
        "LLM_BASE_URL": llm.base_url,
        "LLM_API_KEY": "bench",
        "LLM_MODEL": "scripted",
        "SKILL_FAST_PATH": "false",
        "DATA_DIR": tempfile.mkdtemp(prefix="bench-group-"),
        "TOKEN_RATE_PER_S": "0",  # every simulated person joins from this one address
        **overrides,
    }
    print("starting the stack (livekit-server, agent worker, token server)...", flush=True)
    try:
        with Stack(loopback_ports(), env=env, log_dir=Path(tempfile.mkdtemp(prefix="bench-group-logs-"))) as stack:
            result = asyncio.run(run(args, stack))
    finally:
        llm.stop()
    kind = "talking" if args.speaking else "quiet"
    print(
        f"\nper extra {kind} participant: {result['cpu_percent_per_listener']:+.1f} % of a core, "
        f"{result['rss_mb_per_listener']:+.1f} MB RSS (agent worker, {args.steps[0]}-{args.steps[-1]} participants)"
    )
    if result["name_to_audio_ms"]:
        print(
            f"agent name spoken -> agent audio: median {statistics.median(result['name_to_audio_ms']):.0f} ms; "
            f"end of question -> agent audio: median {statistics.median(result['end_to_audio_ms']):.0f} ms "
            f"({len(result['name_to_audio_ms'])} of {args.turns} turns answered, "
            f"{result['listeners_during_turns']} listeners in the room)"
        )
    else:
        print(f"no turn of {args.turns} was answered")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
