"""Self-healing: the launcher restarts what dies (with a growing pause, naming the exit code or signal), stops on a
crash loop, re-dispatches the agent into rooms that lost it, and an agent worker sent SIGTERM finishes its calls and
exits as soon as the last one ends. Calls end as JS_SUCCESS in livekit-server, not JS_FAILED.

The first tests drive the supervisor over tiny programs on a fake clock; the rest run a real livekit-server, agent
worker (scripted LLM) and token server on loopback ports, a caller (livekit rtc), the supervisor and the re-dispatch
watcher, as `python -m stack up` runs them, and kill things: they print what they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from livekit import api, rtc

from stack import redispatch
from stack.services import REPO, Service, Stack, free_port
from stack.supervisor import Policy, Supervisor
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client

# --- the supervisor, over tiny programs, on a fake clock -------------------------------------------------------------

AGENT_NAME = os.environ.get("AGENT_NAME") or "voice-agent"
SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def said() -> list[str]:
    return []


def supervise(services: list[Service], said: list[str], policy: Policy | None = None) -> tuple[Supervisor, Clock]:
    clock = Clock()
    return Supervisor(SimpleNamespace(services=services), policy, say=said.append, clock=clock), clock


def poll_until(sup: Supervisor, predicate, timeout: float = 10.0) -> str | None:
    """Polls (real time passes for the processes, not for the supervisor's clock) until `predicate()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reason := sup.poll():
            return reason
        if predicate():
            return None
        time.sleep(0.02)
    raise AssertionError("timed out")


def sleeper(name: str = "svc") -> Service:
    svc = Service(name, SLEEPER, dict(os.environ), ready_line="up")
    svc.start()
    svc.wait_ready(10)
    return svc


def test_a_killed_service_restarts_with_a_growing_pause_and_its_signal_named(said):
    svc, other = sleeper(), sleeper("other")
    sup, clock = supervise([svc, other], said)
    try:
        first_pid = svc.pid
        os.kill(svc.pid, signal.SIGKILL)
        poll_until(sup, lambda: said)
        assert said == ["stack: svc exited with SIGKILL (signal 9); restarting in 1 s (restart 1)"]
        sup.poll()
        assert not svc.alive(), "restarted before its pause"
        clock.now += 1
        poll_until(sup, lambda: len(said) == 2)
        assert re.fullmatch(r"stack: svc is back \(ready in \d+\.\d s, pid \d+\)", said[1]), said
        assert svc.alive() and svc.pid != first_pid and other.alive()

        os.kill(svc.pid, signal.SIGTERM)  # dies again before it ran a healthy minute: twice the pause
        poll_until(sup, lambda: len(said) == 3)
        assert said[2] == "stack: svc exited with SIGTERM (signal 15); restarting in 2 s (restart 2)"
        clock.now += 2
        poll_until(sup, lambda: len(said) == 4)

        clock.now += 60  # a healthy minute: the pause starts again from 1 s
        sup.poll()
        os.kill(svc.pid, signal.SIGKILL)
        poll_until(sup, lambda: len(said) == 5)
        assert said[4] == "stack: svc exited with SIGKILL (signal 9); restarting in 1 s (restart 3)"
        assert other.alive(), "the other services stay up"
    finally:
        svc.stop()
        other.stop()


def test_the_pause_is_capped(said):
    svc = sleeper()
    sup, clock = supervise([svc], said, Policy(crash_limit=100))
    try:
        pauses = []
        for _ in range(7):
            os.kill(svc.pid, signal.SIGKILL)
            count = len(said)
            poll_until(sup, lambda n=count: len(said) > n)
            pauses.append(float(re.search(r"restarting in (\S+) s", said[-1]).group(1)))
            clock.now += pauses[-1]  # the pause, never a healthy minute
            poll_until(sup, lambda: "is back" in said[-1])
        assert pauses == [1, 2, 4, 8, 16, 30, 30]
    finally:
        svc.stop()


def test_a_service_that_keeps_crashing_at_start_stops_the_stack_with_one_line(said):
    crasher = Service(
        "agent",
        [sys.executable, "-c", "print('agent: bad keys'); raise SystemExit(2)"],
        dict(os.environ),
        ready_line="x",
    )
    crasher.start()
    crasher.proc.wait(10)
    deadline = time.monotonic() + 5
    while not crasher.tail and time.monotonic() < deadline:
        time.sleep(0.01)
    sup, clock = supervise([crasher], said)
    reason = None
    for _ in range(3000):
        if reason := sup.poll():
            break
        if not crasher.alive():
            clock.now += 0.5  # time passes for the supervisor while it waits to restart (not while it starts)
        time.sleep(0.005)
    assert reason is not None, said
    assert reason.startswith("agent exited with code 2 during start-up; it exited 5 times within 60 s, so the stack")
    assert "agent: bad keys" in reason
    assert said[0] == "stack: agent exited with code 2; restarting in 1 s (restart 1)"
    assert said[1] == "  agent's last output: agent: bad keys"
    assert said[2] == "stack: agent exited with code 2 during start-up; restarting in 2 s (restart 2)"
    crasher.stop()


ONCE = (
    "import os, sys, time; first = not os.path.exists(sys.argv[1]); open(sys.argv[1], 'w').close(); "
    "print('up', flush=True); sys.exit(0) if first else time.sleep(120)"
)


def test_a_clean_exit_is_a_stop_and_a_stop_on_purpose_is_left_alone(said, tmp_path):
    drained = Service("agent", [sys.executable, "-c", ONCE, str(tmp_path / "flag")], dict(os.environ), ready_line="up")
    drained.start()
    drained.proc.wait(10)  # a worker that finished its calls after SIGTERM exits 0
    kept = sleeper("token-server")
    sup, _clock = supervise([drained, kept], said)
    try:
        poll_until(sup, lambda: len(said) == 2)
        assert said[0] == "stack: agent stopped by itself (exited with code 0); starting it again (restart 1)"
        assert said[1].startswith("stack: agent is back")
        kept.stop()  # on purpose (the launcher's own stop): not restarted
        for _ in range(5):
            assert sup.poll() is None
        assert not kept.alive() and len(said) == 2
    finally:
        drained.stop()
        kept.stop()


def test_rooms_left_on_purpose_are_recognised():
    assert redispatch.left_on_purpose('{"agent": "ended"}')
    assert not redispatch.left_on_purpose('{"agent": "busy"}')
    assert not redispatch.left_on_purpose("")
    assert not redispatch.left_on_purpose("not json")


# --- the re-dispatch watcher's rules, against a fake livekit-server API --------------------------------------------


class FakeLiveKit:
    """Rooms, participants and dispatches as livekit-server's API returns them."""

    def __init__(self) -> None:
        self.rooms: dict[str, api.Room] = {}
        self.people: dict[str, list[api.ParticipantInfo]] = {}
        self.dispatches: dict[str, list[api.AgentDispatch]] = {}
        self.created: list[api.CreateAgentDispatchRequest] = []
        self.removed: list[str] = []
        self.room = SimpleNamespace(
            list_rooms=self._list_rooms, list_participants=self._people, remove_participant=self._remove
        )
        self.agent_dispatch = SimpleNamespace(list_dispatch=self._dispatches, create_dispatch=self._create)

    def add_room(self, name: str, metadata: str = "", dispatched_ago: float | None = 60, jobs: int = 1) -> None:
        self.rooms[name] = api.Room(name=name, sid=f"RM_{name}", metadata=metadata)
        self.people[name] = [api.ParticipantInfo(identity="caller", kind=api.ParticipantInfo.Kind.STANDARD)]
        self.dispatches[name] = []
        if dispatched_ago is not None:
            self.dispatch(name, dispatched_ago, jobs, metadata='{"persona": "concierge"}')

    def dispatch(self, room: str, ago: float, jobs: int, metadata: str = "", worker: str = "AW_1") -> None:
        state = api.AgentDispatchState(created_at=int((time.time() - ago) * 1e9))
        for n in range(jobs):
            job_state = api.JobState(participant_identity=f"agent-{room}-{n}", worker_id=worker)
            state.jobs.append(api.Job(id=f"AJ_{room}_{n}", state=job_state))
        self.dispatches[room].append(
            api.AgentDispatch(agent_name=AGENT_NAME, room=room, metadata=metadata, state=state)
        )

    def agent_joins(self, room: str, worker: str = "AW_1") -> None:
        """The agent of the room's latest dispatch joins (a job of `worker`)."""
        jobs = self.dispatches[room][-1].state.jobs
        identity = f"agent-{room}-{len(self.people[room])}-{len(self.created)}"
        jobs.append(api.Job(id=f"AJ_{identity}", state=api.JobState(participant_identity=identity, worker_id=worker)))
        attributes = {"lk.agent_name": AGENT_NAME}
        info = api.ParticipantInfo(identity=identity, kind=api.ParticipantInfo.Kind.AGENT, attributes=attributes)
        self.people[room].append(info)

    def agent_leaves(self, room: str) -> None:
        self.people[room] = [p for p in self.people[room] if p.kind != api.ParticipantInfo.Kind.AGENT]

    async def _list_rooms(self, _req):
        return api.ListRoomsResponse(rooms=list(self.rooms.values()))

    async def _people(self, req):
        return api.ListParticipantsResponse(participants=self.people[req.room])

    async def _remove(self, req):
        self.removed.append(req.identity)
        self.people[req.room] = [p for p in self.people[req.room] if p.identity != req.identity]

    async def _dispatches(self, room: str):
        return list(self.dispatches[room])

    async def _create(self, req):
        self.created.append(req)
        self.dispatch(req.room, 0, 0, req.metadata)


def watcher(said: list[str]) -> redispatch.Redispatcher:
    return redispatch.Redispatcher(
        "ws://unused", "key", "secret", AGENT_NAME, absent_after=0.2, retry_after=0.3, say=said.append
    )


async def test_the_watcher_sends_the_agent_back_once_and_only_where_it_belongs(said):
    lk, w = FakeLiveKit(), watcher(said)
    lk.add_room("lost")  # had its agent (dispatched a minute ago), has none now
    lk.add_room("joining", dispatched_ago=1)  # dispatched a second ago: the agent is on its way
    lk.add_room("ended", metadata='{"agent": "ended"}')  # the agent left on purpose
    lk.add_room("not-ours", dispatched_ago=None)  # never dispatched: another application's room
    lk.add_room("served")
    lk.agent_joins("served")
    assert await w.tick(lk) == []  # nobody has been absent for absent_after yet
    await asyncio.sleep(0.25)
    assert await w.tick(lk) == ["lost"]
    assert lk.created[0].metadata == '{"persona": "concierge"}', "the new dispatch keeps the call's options"
    assert said == [f"redispatch: room lost has a caller and has had no {AGENT_NAME} for 0 s; dispatching it again"]
    assert await w.tick(lk) == []  # no worker has taken it yet, but it was just made: no second one
    await asyncio.sleep(w.retry_after)
    assert await w.tick(lk) == ["lost"]  # still no worker took it: try again (said once per absence)
    assert len(said) == 1
    lk.agent_joins("lost")
    assert await w.tick(lk) == []
    assert said[-1] == f"redispatch: {AGENT_NAME} is back in room lost"
    lk.people["lost"] = [p for p in lk.people["lost"] if p.kind == api.ParticipantInfo.Kind.AGENT]
    assert await w.tick(lk) == []  # the caller left: nothing to do


async def test_agents_of_a_dead_worker_are_replaced_at_once_and_a_room_that_keeps_losing_them_is_given_up(said):
    lk, w = FakeLiveKit(), watcher(said)
    lk.add_room("call")
    lk.agent_joins("call")
    assert await w.tick(lk) == []
    dead = lk.people["call"][-1].identity
    w.workers_gone(["AW_1"])  # the launcher saw the worker die; livekit-server still lists its agent
    assert await w.tick(lk) == ["call"]  # removed and replaced at once, without waiting absent_after
    assert lk.removed == [dead]
    assert said[0] == f"redispatch: removed {dead} from room call: its worker died"
    sent = []
    for _ in range(w.max_losses):  # an agent that keeps leaving at once (a job failing at start)
        lk.agent_joins("call", worker="AW_2")
        assert await w.tick(lk) == []
        lk.agent_leaves("call")
        assert await w.tick(lk) == []  # gone: noticed, not yet absent_after
        await asyncio.sleep(0.21)
        w.worker_ready()  # as if a worker registered: no waiting for retry_after
        sent += await w.tick(lk)
    assert sent == ["call"] * (w.max_losses - 1)
    assert said[-1] == "redispatch: room call lost its agent 6 times; not dispatching it again"
    await asyncio.sleep(0.21)
    assert await w.tick(lk) == []


# --- a real stack, supervised as `python -m stack up` supervises it ---------------------------------------------------


@dataclass
class Supervised:
    stack: Stack
    watcher: redispatch.Redispatcher
    said: list[tuple[float, str]] = field(default_factory=list)

    def said_since(self, since: float, text: str) -> list[tuple[float, str]]:
        return [(at, line) for at, line in list(self.said) if at > since and text in line]

    async def wait_said(self, since: float, text: str, timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while not (found := self.said_since(since, text)):
            if time.monotonic() > deadline:
                raise AssertionError(f"the supervisor never said {text!r}; it said {[m for _, m in self.said]}")
            await asyncio.sleep(0.05)
        return found[0]

    def livekit_log(self) -> str:
        return (self.stack.log_dir / "livekit-server.log").read_text()


@pytest.fixture(scope="class")
def supervised(scripted_env: dict[str, str], artifacts: Path) -> Iterator[Supervised]:
    log_dir = artifacts / "logs-test_supervision"
    log_dir.mkdir(exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    with Stack(loopback_ports(), env=scripted_env, log_dir=log_dir) as stack:
        s = stack.settings
        said: list[tuple[float, str]] = []

        def say(line: str) -> None:
            said.append((time.monotonic(), line))
            print(line, flush=True)

        watcher = redispatch.Redispatcher(
            stack.livekit_url, s.livekit_api_key, s.livekit_api_secret, AGENT_NAME, say=say
        )
        supervisor = Supervisor(stack, say=say, **redispatch.hooks(watcher))
        stop = threading.Event()

        def supervise() -> None:
            while not stop.is_set():
                if reason := supervisor.poll():
                    say(f"STOP: {reason}")
                    return
                time.sleep(0.1)

        thread = threading.Thread(target=supervise, daemon=True)
        thread.start()
        watching = redispatch.Thread(watcher).start()
        try:
            yield Supervised(stack, watcher, said)
        finally:
            stop.set()
            watching.stop()
            thread.join(10)


def agents(client: Client) -> list[str]:
    return [
        p.identity
        for p in client.room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]


async def call(stack: Stack, identity: str, room: str | None = None) -> Client:
    """A caller in a room with the agent, greeted."""
    client = Client(stack.token_url, identity=identity)
    await client.join(room)
    await client.wait_for(lambda: agents(client), 30, "the agent to join")
    await client.wait_for(lambda: client.texts(agents(client)[0]), 30, "the greeting")
    return client


async def wait_exit(service: Service, timeout: float) -> float:
    """When the service's process ended (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while service.proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{service.name} still running after {timeout:.0f} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


def job_endings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "job ended" in line]


@pytest.mark.e2e
@pytest.mark.timeout(300)
class TestSupervisedStack:
    async def test_a_call_that_ends_is_a_success_in_livekit_server(self, supervised):
        client = await call(supervised.stack, "caller-success")
        await client.close()
        deadline = time.monotonic() + 15
        while not job_endings(supervised.livekit_log()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        endings = job_endings(supervised.livekit_log())
        print("\n" + "\n".join(endings))
        assert endings and all("JS_SUCCESS" in line for line in endings), endings
        assert "agent worker left the room" not in supervised.livekit_log()

    async def test_sigterm_finishes_the_call_sends_new_calls_elsewhere_and_exits_when_it_ends(self, supervised):
        stack = supervised.stack
        first = stack.service("agent")
        caller = await call(stack, "caller-draining")
        second = stack.start_agent({"AGENT_HTTP_PORT": str(free_port()), "AGENT_METRICS_PORT": "0"}, name="agent-2")
        newcomer = None
        try:
            signalled = time.monotonic()
            os.kill(first.pid, signal.SIGTERM)
            await asyncio.sleep(0.2)
            # A new call now goes to the other worker: the draining one told livekit-server it takes no more.
            newcomer = await call(stack, "caller-new")
            new_agent = agents(newcomer)[0]
            served_by = [svc.name for svc in (first, second) if any(new_agent[6:] in line for _, line in svc.history)]
            print(f"\nnew call during the drain served by {served_by} ({new_agent})")
            assert served_by == ["agent-2"], served_by
            # The call in progress goes on: it still answers.
            old_agent = agents(caller)[0]
            await caller.room.local_participant.send_text("tell me a joke", topic="lk.chat")
            await caller.wait_for(
                lambda: any("joke" in t for t in caller.texts(old_agent)), 30, "an answer during the drain"
            )
            assert first.alive(), "the draining worker exited with a call in progress"
            await caller.close()
            ended = time.monotonic()
            exited = await wait_exit(first, 30)
            print(
                f"SIGTERM -> call ended {ended - signalled:.1f} s later -> worker exited {exited - ended:.2f} s after "
                f"the call ended ({first.exit_description()})"
            )
            assert first.proc.returncode == 0
            assert exited - ended <= 1.5
            _, line = await supervised.wait_said(signalled, "agent stopped by itself", 5)
            assert line == "stack: agent stopped by itself (exited with code 0); starting it again (restart 1)"
            await supervised.wait_said(signalled, "agent is back", 120)
        finally:
            if newcomer:
                await newcomer.close()
            stack.stop_service(second)

    async def test_an_agent_killed_mid_call_is_back_in_the_room_within_5_s_of_its_restart(self, supervised):
        stack = supervised.stack
        agent = stack.service("agent")
        caller = await call(stack, "caller-killed")
        try:
            before = agents(caller)[0]
            killed = time.monotonic()
            os.kill(agent.pid, signal.SIGKILL)
            at, line = await supervised.wait_said(killed, "agent exited with SIGKILL", 5)
            assert re.fullmatch(
                r"stack: agent exited with SIGKILL \(signal 9\); restarting in 1 s \(restart \d+\)", line
            ), line
            await caller.wait_for(lambda: before not in agents(caller), 60, "the dead agent to leave the room")
            gone = time.monotonic()
            await supervised.wait_said(killed, "agent is back", 120)
            registered = agent.lines_since(killed, "registered worker")[0]
            await caller.wait_for(lambda: agents(caller), 30, "an agent back in the room")
            back = time.monotonic()
            await caller.wait_for(lambda: caller.texts(agents(caller)[0]), 30, "its greeting")
            print(
                f"\nkill -9 -> launcher noticed in {at - killed:.2f} s; dead agent left the room after "
                f"{gone - killed:.1f} s; worker registered again after {registered - killed:.1f} s; agent back in the "
                f"room {back - registered:.2f} s after that ({back - killed:.1f} s after the kill)"
            )
            assert back - registered <= 5
        finally:
            await caller.close()

    async def test_workers_register_again_when_livekit_server_comes_back(self, supervised):
        stack = supervised.stack
        livekit, agent = stack.service("livekit-server"), stack.service("agent")
        agent_pid = agent.pid
        caller = await call(stack, "caller-server-killed")  # mid-call
        try:
            before = agents(caller)[0]
            killed = time.monotonic()
            os.kill(livekit.pid, signal.SIGKILL)
            _, line = await supervised.wait_said(killed, "livekit-server exited with SIGKILL", 5)
            assert line.endswith("restarting in 1 s (restart 1)"), line
            back, _ = await supervised.wait_said(killed, "livekit-server is back", 60)
            deadline = time.monotonic() + 30
            while not agent.lines_since(back - 0.2, "registered worker") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            registered = agent.lines_since(back - 0.2, "registered worker")
            assert registered, "the worker never registered again"
            took = registered[0] - back
            assert agent.pid == agent_pid, "the agent worker was restarted instead of reconnecting"
            # Both ends rejoin the new server by themselves (the agent's job and the caller's client reconnect), and
            # the call goes on: the agent still answers.
            await caller.wait_for(lambda: agents(caller), 60, "the agent in the rejoined room")

            def answered_by_an_agent() -> bool:
                return any("still there" in t for a in agents(caller) for t in caller.texts(a))

            # Asked again, as a person would, if the words reached an agent whose session was still rejoining.
            for _ in range(5):
                await caller.room.local_participant.send_text("are you still there", topic="lk.chat")
                with contextlib.suppress(AssertionError):
                    await caller.wait_for(answered_by_an_agent, 8, "an answer")
                    break
            assert answered_by_an_agent(), "no agent answered after livekit-server came back"
            answered = time.monotonic()
            print(
                f"\nlivekit-server back {back - killed:.1f} s after kill -9; the worker registered {took:.2f} s later; "
                f"the call answered again {answered - back:.1f} s after the server was back "
                f"({'same agent' if agents(caller) == [before] else 'a new agent'})"
            )
            assert took <= 10
        finally:
            await caller.close()
        caller = await call(stack, "caller-after-restart")  # and new calls are served
        await caller.close()
        assert not supervised.said_since(0, "STOP")


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_launcher_restarts_a_killed_service_and_stops_cleanly_on_sigterm(scripted_env, tmp_path):
    ports = loopback_ports()
    env = {
        **os.environ,
        **scripted_env,
        **{name.upper(): str(value) for name, value in ports.model_dump().items() if name.endswith("_port")},
        "PYTHONUNBUFFERED": "1",
    }
    launcher = subprocess.Popen(
        [sys.executable, "-m", "stack", "up", "--log-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in launcher.stdout:
            lines.append((time.monotonic(), line.rstrip()))

    threading.Thread(target=read, daemon=True).start()

    def wait_line(text: str, timeout: float, since: float = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := [line for at, line in list(lines) if at > since and text in line]:
                return found[0]
            assert launcher.poll() is None, "\n".join(line for _, line in lines)
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in:\n" + "\n".join(line for _, line in lines))

    try:
        wait_line("Ready.", 300)
        pids = [int(p) for p in re.findall(r"ready in [\d.]+ s \(pid (\d+)\)", "\n".join(line for _, line in lines))]
        token_pid = int(re.search(r"\(pid (\d+)\)", wait_line("token-server ready", 1))[1])
        killed = time.monotonic()
        os.kill(token_pid, signal.SIGKILL)
        line = wait_line("token-server exited", 5, killed)
        assert line == "stack: token-server exited with SIGKILL (signal 9); restarting in 1 s (restart 1)"
        wait_line("token-server is back", 30, killed)
        stopping = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(60) == 0
        print(f"\nlauncher stopped {time.monotonic() - stopping:.1f} s after SIGTERM")
        wait_line("stopped.", 1)
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
