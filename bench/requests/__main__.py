"""Spoken-request benchmark: 200+ requests spoken to the real agent through a real livekit-server, each answer
judged by its content (a benchmark that cannot be overfit: tune on one half, judge on the other).

Starts its own stack on free loopback ports (livekit-server, agent worker, token server, the offline default models)
and joins as a `livekit.rtc` participant. Each request (bench/requests/tuning.yaml, held_out.yaml) is spoken in a
voice fixed by its id: hibari's neural voice (seed and speed 0.85-1.15 varied) or espeak-ng (voice variant and
130-190 words per minute varied). Per turn it records:

- the reply: the agent's transcription as the client receives it (topic lk.transcription);
- voice-to-voice: from the request's last voiced frame sent to the agent's first audible frame received;
- gaps: silences over 400 ms inside the reply audio, between its first and last audible frame, from the received
  frames (10 ms RMS frames below the client's audible level, plus any hole in the frame stream);
- the path ("fast", "llm", "llm_tool") and the tools called, from the agent's waterfall record (topic
  voice-agent.waterfall), "?" where the agent does not report them;
- the checks (bench/requests/checks.py): the request's own (the local time or date where it names, computed now;
  the arithmetic; the conversion within 2 %; the seeded notes read back; the note in the store after a save; the
  call ended after a goodbye; no tool and no claim on a request to decline) and every reply's (an answer, no markup
  or tool syntax voiced, no announcement in place of the answer, no action claimed that was not done, no call ended
  or notes deleted unasked).

Modes: `first` (default) makes each request the first turn of a new call (a new room and token; the greeting
heard out), new and returning callers in turn (a returning caller has notes and an earlier call in the agent's
store, written before the call); `warm` asks them inside longer calls (9 requests per call, goodbyes last).

Run: `uv run python -m bench.requests` (both halves, first mode; 2 cores: about 12 s a call answered by the fast
path, 20-40 s one answered by the local LLM, so an hour or more). Options: `--half tuning|held-out|both`,
`--mode first|warm|both`, `--limit N` (the first N of each half), `--only ID,...`, `--set KEY=VALUE` (agent
settings, e.g. `--set SKILL_FAST_PATH=false`), `--json FILE`. Failures are listed in full for the tuning half only;
the held-out half's are counted by category, never quoted (nor written to the JSON file).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from livekit import rtc

from agent.memory import MemoryStore
from agent.settings import AgentSettings
from agent.skills.notes import NoteStore
from agent.waterfall import TOPIC
from bench.requests import checks
from bench.requests.spec import HALVES, Request, earlier_calls, load, voice_for
from stack.services import Stack
from tests.support.ports import loopback_ports
from tests.support.rtc_client import AUDIBLE, Client
from tests.support.speech import SAMPLE_RATE, hibari_speech, rms, speak

GREETING_S = 30.0  # the agent joins and its greeting ends
ANSWER_S = 20.0  # the first audible answer
REPLY_S = 45.0  # the whole reply, tools and all
QUIET_S = 0.8  # no audible agent audio for this long (and the agent listening again): the reply is over
END_S = 10.0  # a goodbye: the agent ends the call
GAP_S = 0.4
WARM_CALL = 9  # requests per call in warm mode
PATHS = ("fast", "llm", "llm_tool", "?")


@dataclass
class Turn:
    half: str
    mode: str
    id: str
    category: str
    text: str
    voice: str
    caller: str  # "new" or "returning"
    expects_tool: bool
    heard: str = ""  # the agent's transcription of the request
    reply: str = ""
    v2v: float | None = None
    gaps: list[float] = field(default_factory=list)
    path: str = "?"
    tools: list[str] | None = None
    checkable: bool = False
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def right(self) -> bool:
        return not self.failed


def voiced(requests: list[Request]) -> dict[str, np.ndarray]:
    """Each request as speech, made before the stack starts (hibari takes the CPU while it speaks)."""
    out = {}
    for n, request in enumerate(requests, 1):
        voice = voice_for(request.id)
        if voice.engine == "hibari":
            out[request.id] = hibari_speech(request.text, seed=voice.seed, speed=voice.speed)
        else:
            out[request.id] = speak(request.text, speed=int(voice.speed), voice=voice.name)
        if n % 25 == 0:
            print(f"  voiced {n}/{len(requests)}", flush=True)
    return out


def first_calls(requests: list[Request]) -> list[tuple[bool, list[Request]]]:
    """One call per request, a new and a returning caller in turn (a request about notes: a returning one)."""
    return [(request.returning or n % 2 == 1, [request]) for n, request in enumerate(requests)]


def warm_calls(requests: list[Request], size: int = WARM_CALL) -> list[tuple[bool, list[Request]]]:
    """Calls of `size` requests, new and returning callers in turn; requests about notes go to returning callers
    (three at most per call), and each goodbye ends a call."""
    byes = [r for r in requests if r.ends_call]
    need = [r for r in requests if r.returning and not r.ends_call]
    other = [r for r in requests if not r.returning and not r.ends_call]
    calls: list[tuple[bool, list[Request]]] = []
    while need or other:
        returning = len(calls) % 2 == 1 or not other
        chunk = need[:3] if returning else []
        need = need[len(chunk) :]
        room = size - len(chunk)
        chunk, other = chunk + other[:room], other[room:]
        if len(chunk) < size and returning:
            extra, need = need[: size - len(chunk)], need[size - len(chunk) :]
            chunk += extra
        calls.append((returning, chunk))
    for n, bye in enumerate(byes):
        if n < len(calls):
            calls[n][1].append(bye)
        else:
            calls.append((False, [bye]))
    return calls


def agent_state(client: Client) -> str | None:
    agent = client.room.remote_participants.get(client.agent_identity or "")
    return agent.attributes.get("lk.agent.state") if agent else None


def call_ended(client: Client) -> bool:
    """The agent left the room, or marked it ended (agent/pipeline.py ENDED)."""
    with contextlib.suppress(ValueError, TypeError):
        if json.loads(client.room.metadata or "{}").get("agent") == "ended":
            return True
    return client.agent_identity is not None and client.agent_identity not in client.room.remote_participants


def silences(client: Client, since: float, until: float) -> list[float]:
    """Silences over GAP_S between the first and the last audible agent frame after `since` (up to `until`)."""
    first = client.speech_since(since)
    if first is None:
        return []
    last = client.audible_at[bisect.bisect_right(client.audible_at, until) - 1]
    frames = client.agent_frames[bisect.bisect_left(client.agent_frames, first, key=lambda f: f[0]) :]
    gaps: list[float] = []
    silent, previous = 0.0, None
    for at, pcm in frames:
        if at > last:
            break
        duration = len(pcm) / SAMPLE_RATE
        if previous is not None and at - previous > duration + 0.1:
            silent += at - previous - duration  # no frames came: a hole in the stream
        previous = at
        if rms(pcm) > AUDIBLE:
            if silent > GAP_S:
                gaps.append(round(silent, 3))
            silent = 0.0
        else:
            silent += duration
    return gaps


class Bench:
    def __init__(self, stack: Stack, db: Path, home: str, speech: dict[str, np.ndarray]) -> None:
        self.stack, self.home, self.speech = stack, home, speech
        self.notes, self.memory = NoteStore(db), MemoryStore(db)
        self.tag = secrets.token_hex(3)
        self.calls = 0
        self.done = 0
        self.total = 0

    def caller(self, returning: bool, requests: list[Request]) -> tuple[str, list[dict]]:
        """A fresh identity; a returning one gets notes and an earlier call in the agent's store."""
        self.calls += 1
        identity = f"{'returning' if returning else 'new'}-{self.tag}-{self.calls}"
        if not returning:
            return identity, []
        notes, lines = earlier_calls(requests[0].id, requests)
        for note in notes:
            self.notes.add(identity, note["text"])
        for role, text in lines:
            self.memory.add(identity, role, text)
        return identity, notes

    async def call(self, half: str, mode: str, returning: bool, requests: list[Request]) -> list[Turn]:
        identity, seeded = self.caller(returning, requests)
        client = Client(self.stack.token_url, identity=identity, name="Caller")
        records: list[dict] = []

        def on_waterfall(reader: rtc.TextStreamReader, _identity: str) -> None:
            async def read() -> None:
                with contextlib.suppress(Exception):
                    records.append(json.loads(await reader.read_all()))

            asyncio.ensure_future(read())

        client.room.register_text_stream_handler(TOPIC, on_waterfall)
        turns: list[Turn] = []
        try:
            await client.join(room_name=f"bench-{identity}")
            greeted = lambda: client.agent_identity is not None and client.texts(client.agent_identity)  # noqa: E731
            await client.wait_for(greeted, GREETING_S, "the greeting")
            await client.quiet(0.5, timeout=GREETING_S)
        except Exception as exc:  # no agent, no greeting: each request of the call is unanswered
            for request in requests:
                turns.append(self.turn_of(half, mode, request, returning))
                turns[-1].failed["answered"] = f"no call: {exc}"
                self.progress(turns[-1])
            with contextlib.suppress(Exception):
                await client.close()
            return turns
        try:
            for request in requests:
                turns.append(await self.ask(client, records, half, mode, request, identity, returning, seeded))
                self.progress(turns[-1])
                if call_ended(client):
                    break
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        return turns

    def turn_of(self, half: str, mode: str, request: Request, returning: bool) -> Turn:
        return Turn(
            half=half,
            mode=mode,
            id=request.id,
            category=request.category,
            text=request.text,
            voice=str(voice_for(request.id)),
            caller="returning" if returning else "new",
            expects_tool=bool(request.tools),
            checkable=request.checkable,
        )

    async def ask(
        self,
        client: Client,
        records: list[dict],
        half: str,
        mode: str,
        request: Request,
        identity: str,
        returning: bool,
        seeded: list[dict],
    ) -> Turn:
        turn = self.turn_of(half, mode, request, returning)
        said_before = len(client.texts(client.agent_identity))
        heard_before = len(client.texts(client.identity))
        records_before = len(records)
        notes_before = self.notes.find(identity, limit=1000)
        await client.say(self.speech[request.id])
        end = client.last_voiced_at or time.monotonic()
        asked_at = datetime.now(UTC)
        timeout = None
        try:
            answered = lambda: client.speech_since(end) is not None or call_ended(client)  # noqa: E731
            await client.wait_for(answered, ANSWER_S, "an answer")
            if (first := client.speech_since(end)) is not None:
                turn.v2v = first - end
            await self.reply_over(client, said_before, records, records_before)
        except AssertionError as exc:
            timeout = str(exc)
        finished = time.monotonic()
        if request.ends_call:
            with contextlib.suppress(AssertionError):
                await client.wait_for(lambda: call_ended(client), END_S, "the end of the call")
        await asyncio.sleep(0.2)  # a last transcript segment in flight
        turn.reply = " ".join(client.texts(client.agent_identity)[said_before:]).strip()
        turn.heard = " ".join(client.texts(client.identity)[heard_before:]).strip()
        turn.gaps = silences(client, end, finished)
        turn.path, turn.tools = checks.path_of(records[records_before:])
        notes_after = self.notes.find(identity, limit=1000)
        outcome = checks.Outcome(
            reply=turn.reply,
            asked_at=asked_at,
            answered_at=datetime.now(UTC),
            home=self.home,
            tools=turn.tools,
            notes_added=[n for n in notes_after if n not in notes_before],
            notes_removed=max(0, len(notes_before) - len(notes_after)),
            ended=call_ended(client),
            seeded=seeded,
        )
        verdict = checks.judge(request.checks, outcome, request.ends_call)
        turn.passed, turn.failed = verdict.passed, verdict.failed
        if turn.v2v is None and "answered" not in turn.failed:
            turn.failed["answered"] = timeout or "no audible answer"
        elif timeout and turn.v2v is not None:
            turn.failed["answered"] = f"the reply did not finish: {timeout}"
        return turn

    async def reply_over(self, client: Client, said_before: int, records: list[dict], records_before: int) -> None:
        """Waits until the agent is listening again after a reply, quiet for QUIET_S, with its transcript (and its
        waterfall record, given 2 s more)."""
        deadline = time.monotonic() + REPLY_S
        ready_since = None
        while time.monotonic() < deadline:
            if call_ended(client):
                return
            now = time.monotonic()
            quiet = not client.audible_at or now - client.audible_at[-1] > QUIET_S
            texted = len(client.texts(client.agent_identity)) > said_before
            if quiet and texted and agent_state(client) in ("listening", "idle", None):
                ready_since = ready_since or now
                if len(records) > records_before or now - ready_since > 2.0:
                    return
            else:
                ready_since = None
            await asyncio.sleep(0.05)
        raise AssertionError(f"the reply was not over after {REPLY_S:.0f} s")

    def progress(self, turn: Turn) -> None:
        self.done += 1
        ok = "ok " if turn.right else "BAD"
        line = (
            f"  {self.done:3d}/{self.total} {turn.half[:4]} {turn.mode[:4]} {turn.id:10s} {turn.caller[:3]} "
            f"v2v {fmt(turn.v2v)} {turn.path:8s} {ok} {','.join(turn.failed)}"
        )
        if turn.half == "tuning":
            line += f"  {turn.text!r} -> {turn.reply[:90]!r}"
        print(line, flush=True)


async def run(args, env: dict[str, str], home: str, speech, selected: dict[str, list[Request]]) -> list[Turn]:
    log_dir = Path(env["DATA_DIR"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting the stack (logs in {log_dir}) ...", flush=True)
    modes = ("first", "warm") if args.mode == "both" else (args.mode,)
    with Stack(loopback_ports(), env=env, log_dir=log_dir, progress=lambda m: print("  " + m, flush=True)) as stack:
        bench = Bench(stack, Path(env["DATA_DIR"]) / "agent.db", home, speech)
        bench.total = len(modes) * sum(len(r) for r in selected.values())
        turns: list[Turn] = []
        for mode in modes:
            for half, requests in selected.items():
                started = time.monotonic()
                plan = first_calls(requests) if mode == "first" else warm_calls(requests)
                for returning, call in plan:
                    while call:  # a call the agent ended early: the rest in a new call
                        done = await bench.call(half, mode, returning, call)
                        turns += done
                        call = call[len(done) :]
                minutes = (time.monotonic() - started) / 60
                print(f"  {half}, {mode} mode: {len(requests)} requests in {minutes:.1f} min", flush=True)
    return turns


def fmt(value: float | None) -> str:
    return f"{value * 1000:5.0f}" if value is not None else "    -"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(turns: list[Turn]) -> None:
    print(
        f"  {'path':8s} {'share':>6s} {'right':>9s} {'v2v p50':>8s} {'p95':>6s} {'gap>400':>7s} {'markup':>6s} "
        f"{'non-ans':>7s} {'claimed':>7s} {'tool v2v p50':>12s}"
    )
    for path in (*PATHS, "all"):
        sel = [t for t in turns if path in ("all", t.path)]
        if not sel:
            continue
        checkable = [t for t in sel if t.checkable]
        v2v = [t.v2v for t in sel if t.v2v is not None]
        tool_v2v = [t.v2v for t in sel if t.v2v is not None and t.tools]
        count = {name: sum(name in t.failed for t in sel) for name in ("markup", "non_answer", "claimed")}
        right = f"{sum(t.right for t in checkable)}/{len(checkable)}"
        print(
            f"  {path:8s} {len(sel) / len(turns):6.0%} {right:>9s} {fmt(pct(v2v, 0.5)):>8s} {fmt(pct(v2v, 0.95)):>6s} "
            f"{sum(bool(t.gaps) for t in sel):7d} {count['markup']:6d} {count['non_answer']:7d} "
            f"{count['claimed']:7d} {fmt(pct(tool_v2v, 0.5)):>12s}"
        )
    expected = [t.v2v for t in turns if t.expects_tool and t.v2v is not None]
    plain = [t.v2v for t in turns if not t.expects_tool and t.v2v is not None]
    print(
        f"  by request: skill requests v2v p50 {fmt(pct(expected, 0.5)).strip()} ms (n={len(expected)}), "
        f"others {fmt(pct(plain, 0.5)).strip()} ms (n={len(plain)}); unanswered "
        f"{sum('answered' in t.failed for t in turns)}"
    )
    categories = sorted({t.category for t in turns})
    cells = []
    for category in categories:
        sel = [t for t in turns if t.category == category]
        cells.append(f"{category} {sum(t.right for t in sel)}/{len(sel)}")
    print("  right by category: " + ", ".join(cells))


def report(turns: list[Turn]) -> None:
    print("\nright = every check passed (over checkable requests); v2v in ms; path '?' = not reported by the agent")
    for mode in ("first", "warm"):
        for half in HALVES:
            sel = [t for t in turns if t.mode == mode and t.half == half]
            if sel:
                print(f"\n{half} half, {mode} mode: {len(sel)} turns")
                table(sel)
    failed = [t for t in turns if t.failed and t.half == "tuning"]
    if failed:
        print(f"\nFailed checks, tuning half ({len(failed)} turns):")
        for t in failed:
            print(f"- {t.id} [{t.category}, {t.mode}, {t.caller} caller, {t.voice}, path {t.path}, tools {t.tools}]")
            print(f"    asked: {t.text!r}\n    heard: {t.heard!r}\n    reply: {t.reply!r}")
            for name, why in t.failed.items():
                print(f"    {name}: {why}")
    for mode in ("first", "warm"):
        held = [t for t in turns if t.failed and t.half == "held-out" and t.mode == mode]
        if held:
            by: dict[str, dict[str, int]] = {}
            for t in held:
                for name in t.failed:
                    by.setdefault(t.category, {}).setdefault(name, 0)
                    by[t.category][name] += 1
            cells = [f"{c} ({', '.join(f'{n} {k}' for n, k in v.items())})" for c, v in sorted(by.items())]
            print(f"\nheld-out half, {mode} mode: {len(held)} turns failed: " + "; ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", choices=("tuning", "held-out", "both"), default="both")
    parser.add_argument("--mode", choices=("first", "warm", "both"), default="first")
    parser.add_argument("--limit", type=int, help="only the first N requests of each half")
    parser.add_argument("--only", help="only these request ids (comma-separated)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent setting (env)")
    parser.add_argument("--json", type=Path, help="write the turns here (the held-out half's without their words)")
    args = parser.parse_args()
    env = {"LLM_BASE_URL": "", "DATA_DIR": tempfile.mkdtemp(prefix="bench-requests-")}
    for item in args.set:
        key, _, value = item.partition("=")
        env[key.upper()] = value
    home = env.get("HOME_TIMEZONE") or AgentSettings().home_timezone
    halves = list(HALVES) if args.half == "both" else [args.half]
    only = set(args.only.split(",")) if args.only else None
    selected = {half: [r for r in load(half) if only is None or r.id in only][: args.limit] for half in halves}
    selected = {half: requests for half, requests in selected.items() if requests}
    print("settings:", " ".join(f"{k}={v}" for k, v in env.items() if k != "DATA_DIR"), f"(home time zone {home})")
    requests = [r for rs in selected.values() for r in rs]
    print(f"voicing {len(requests)} requests ...", flush=True)
    speech = voiced(requests)
    started = time.monotonic()
    turns = asyncio.run(run(args, env, home, speech, selected))
    report(turns)
    print(f"\n{len(turns)} turns in {(time.monotonic() - started) / 60:.1f} min")
    if args.json:
        rows = [asdict(t) | ({"text": "", "heard": "", "reply": ""} if t.half == "held-out" else {}) for t in turns]
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if turns else 1


if __name__ == "__main__":
    sys.exit(main())
