"""Scale-out on LiveKit's own machinery, nothing home-made between the pieces.

More workers: agent worker processes registered under the same AGENT_NAME with one livekit-server share the calls;
livekit-server offers each call to a worker by the load the workers report (a full worker reports 1.0 and is offered
nothing), and when one worker dies the server sends new calls to the others. The calls here arrive further apart than
a worker's load report; a worker that is offered a call it cannot take refuses it without ending the job, so
livekit-server offers it to the next worker (tests/stack/test_capacity_e2e.py covers callers beyond capacity).

More nodes: two livekit-server nodes on one Redis (livekit.yaml's `redis:` section) are one cluster: a room lives on
one node and is joinable through either (the other node relays the signalling over Redis), and a job request for a
room on node B reaches a worker registered on node A. The nodes pick a room's node with LiveKit's `regionaware`
selector, each in its own region, so a room is placed on the node its first participant connected to and the test
knows which node holds it (Redis's `room_node_map` says so too).

Real livekit-server, agent workers (local STT/TTS, scripted LLM stand-in) and token servers on loopback ports; the
callers are livekit rtc clients. The tests print what they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from livekit import rtc

from stack.services import REPO, Service, Stack, free_port, http_ok, livekit_binary, redis_binary, redis_ok
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client

MAX_SESSIONS = 2


def log_dir_for(artifacts: Path, name: str) -> Path:
    log_dir = artifacts / f"logs-{name}"
    log_dir.mkdir(exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    return log_dir


def worker_env() -> dict[str, str]:
    """One more worker on this machine: its own health and metrics ports, two calls at most."""
    return {
        "AGENT_HTTP_PORT": str(free_port()),
        "AGENT_METRICS_PORT": str(free_port()),
        "MAX_SESSIONS": str(MAX_SESSIONS),
    }


def metric(port: int, name: str) -> float:
    """A worker's unlabelled metric from its /metrics (0 when it is not there)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def agents(client: Client) -> list[str]:
    return [
        p.identity
        for p in client.room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]


async def call(token_url: str, identity: str, room: str, timeout: float = 45.0) -> tuple[Client, dict, float]:
    """A caller in its room, greeted by an agent; with the token endpoint's answer and the seconds it took."""
    started = time.monotonic()
    client = Client(token_url, identity=identity)
    details = await client.join(room)
    await client.wait_for(lambda: agents(client), timeout, f"an agent in {room}")
    await client.wait_for(lambda: client.texts(agents(client)[0]), timeout, f"the greeting in {room}")
    return client, details, time.monotonic() - started


def served_by(client: Client, workers: dict[str, Service]) -> str:
    """The worker whose log names the job of the agent in the client's room (its identity is `agent-<job id>`)."""
    job = agents(client)[0].removeprefix("agent-")
    names = [name for name, svc in workers.items() if any(job in line for _, line in list(svc.history))]
    assert len(names) == 1, f"job {job} found in the logs of {names}"
    return names[0]


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


# --- several workers, one server ------------------------------------------------------------------------------------

# livekit-agents sends the worker's load to livekit-server every 2.5 s (UPDATE_STATUS_INTERVAL); calls that arrive
# further apart than this are offered by up-to-date loads.
LOAD_REPORT_S = 3.0


def worker_id(worker: Service) -> str:
    line = next(line for _, line in list(worker.history) if "registered worker" in line)
    return re.search(r'"id": "(AW_\w+)"', line).group(1)


@pytest.mark.e2e
@pytest.mark.timeout(420)
async def test_workers_share_the_calls_and_the_survivor_of_a_kill_9_takes_new_ones(scripted_env, artifacts):
    log_dir = log_dir_for(artifacts, "test_scale_out-workers")
    clients: list[Client] = []
    with Stack(loopback_ports(), env=scripted_env, log_dir=log_dir, with_agent=False) as stack:
        envs = {name: worker_env() for name in ("agent-a", "agent-b")}
        workers = {name: stack.start_agent(env, name=name) for name, env in envs.items()}
        metrics_port = {name: int(env["AGENT_METRICS_PORT"]) for name, env in envs.items()}
        livekit = stack.service("livekit-server")

        def active() -> dict[str, float]:
            return {name: metric(metrics_port[name], "voice_agent_sessions_active") for name in workers}

        try:
            # Four calls, each in its own room, one after another: two workers with two slots each.
            run = uuid.uuid4().hex[:6]
            calls: list[Client] = []
            for n in range(4):
                client, _, took = await call(stack.token_url, f"caller-{n}", f"scale-{run}-{n}")
                clients.append(client)
                calls.append(client)
                print(f"\ncall {n} greeted by {served_by(client, workers)} after {took:.1f} s", end="")
                await asyncio.sleep(LOAD_REPORT_S)
            split = {name: [n for n, c in enumerate(calls) if served_by(c, workers) == name] for name in workers}
            await wait_until(lambda: sum(active().values()) == 4, 10, "4 sessions in the workers' metrics")
            sessions = active()
            print(f"\n4 calls: {split}; voice_agent_sessions_active {sessions}")
            assert sessions == {"agent-a": MAX_SESSIONS, "agent-b": MAX_SESSIONS}, sessions
            assert {name: len(calls) for name, calls in split.items()} == {"agent-a": 2, "agent-b": 2}, split

            # agent-b's callers and one of agent-a's hang up: both workers have free slots, so livekit-server would
            # offer agent-a the next call too. Then agent-a dies with its last call in progress.
            for n in [*split["agent-b"], split["agent-a"][0]]:
                await calls[n].close()
            await wait_until(lambda: active() == {"agent-a": 1, "agent-b": 0}, 15, "the calls to end")
            await asyncio.sleep(LOAD_REPORT_S)
            victim, victim_id = workers["agent-a"], worker_id(workers["agent-a"])
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            first, _, _ = await call(stack.token_url, "caller-after-kill-1", f"scale-{run}-after-1")
            clients.append(first)
            first_served = time.monotonic() - killed
            second, _, took = await call(stack.token_url, "caller-after-kill-2", f"scale-{run}-after-2")
            clients.append(second)
            assert not victim.alive()
            closed = livekit.lines_since(killed, f'"workerID": "{victim_id}"')
            after = [served_by(c, workers) for c in (first, second)]
            print(
                f"kill -9 agent-a mid-call -> livekit-server closed it "
                f"{f'{closed[0] - killed:.2f} s' if closed else 'never'} later; the next new call was greeted by "
                f"{after[0]} {first_served:.1f} s after the kill, the one after it by {after[1]} in {took:.1f} s; "
                f"agent-b sessions now {metric(metrics_port['agent-b'], 'voice_agent_sessions_active'):.0f}"
            )
            assert closed, "livekit-server never noticed the dead worker"
            assert after == ["agent-b", "agent-b"], after
            assert first_served < 30
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.close()


# --- two livekit-server nodes, one Redis ----------------------------------------------------------------------------

REGIONS = [{"name": "node-a", "lat": 48.9, "lon": 2.3}, {"name": "node-b", "lat": 40.7, "lon": -74.0}]


def node_config(path: Path, *, region: str, port: int, tcp: int, udp: int, redis_port: int) -> Path:
    """livekit.yaml for one node of a cluster on this machine: its own ports, the shared Redis, its region."""
    config = yaml.safe_load((REPO / "livekit.yaml").read_text())
    config["port"] = port
    config["rtc"]["tcp_port"] = tcp
    config["rtc"]["udp_port"] = udp
    config.pop("prometheus", None)
    config.pop("prometheus_port", None)
    config["redis"] = {"address": f"127.0.0.1:{redis_port}"}
    config["region"] = region
    config["node_selector"] = {"kind": "regionaware", "regions": REGIONS}
    path.write_text(yaml.safe_dump(config))
    return path


def redis_command(port: int, *args: str) -> object:
    """One Redis command over RESP; the reply as str, int, None or a list."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args))
        reader = sock.makefile("rb")

        def reply() -> object:
            line = reader.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b"+":
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                return None if int(rest) < 0 else reader.read(int(rest) + 2)[:-2].decode("utf-8", "replace")
            if kind == b"*":
                return [reply() for _ in range(int(rest))]
            raise AssertionError(f"redis said {line!r}")

        return reply()


class Cluster:
    """Redis, two livekit-server nodes on it, a token server in front of each node, and agent workers on node A."""

    def __init__(self, scripted_env: dict[str, str], log_dir: Path, tmp: Path) -> None:
        self.log_dir, self.tmp = log_dir, tmp
        self.redis_port = free_port()
        self.nodes = {name: loopback_ports() for name in ("node-a", "node-b")}
        self.stacks = {name: Stack(ports, env=scripted_env, log_dir=log_dir) for name, ports in self.nodes.items()}
        self.services: list[Service] = []
        self.node_ids: dict[str, str] = {}
        self.livekit: dict[str, Service] = {}

    def run(self, service: Service, timeout: float) -> Service:
        self.services.append(service)
        service.start()
        service.wait_ready(timeout)
        return service

    def url(self, node: str) -> str:
        return self.stacks[node].livekit_url

    def token_url(self, node: str) -> str:
        return self.stacks[node].token_url

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        redis = [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "", "--appendonly"]
        self.run(
            Service("redis", [*redis, "no"], env, ready=redis_ok(self.redis_port), log_path=self._log("redis")), 15
        )
        for name, ports in self.nodes.items():
            config = node_config(
                self.tmp / f"{name}.yaml",
                region=name,
                port=ports.livekit_port,
                tcp=ports.livekit_rtc_tcp_port,
                udp=ports.livekit_rtc_udp_port,
                redis_port=self.redis_port,
            )
            keys = {"LIVEKIT_KEYS": f"{ports.livekit_api_key}: {ports.livekit_api_secret}"}
            node = Service(
                f"livekit-{name}",
                [livekit_binary(), "--config", str(config)],
                {**env, **keys},
                ready=http_ok(f"http://127.0.0.1:{ports.livekit_port}/"),
                log_path=self._log(f"livekit-{name}"),
            )
            self.livekit[name] = self.run(node, 30)
            started = next(line for _, line in node.history if "starting LiveKit server" in line)
            self.node_ids[name] = re.search(r'"nodeID": "([^"]+)"', started).group(1)
        for name, stack in self.stacks.items():
            token = Service(
                f"token-{name}",
                [sys.executable, "-m", "token_server"],
                stack.env,
                ready=http_ok(f"{stack.token_url}/healthz"),
                log_path=self._log(f"token-{name}"),
            )
            self.run(token, 30)

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def node_of(self, room: str) -> str | None:
        """The node Redis says holds the room."""
        node_id = redis_command(self.redis_port, "HGET", "room_node_map", room)
        return next((name for name, nid in self.node_ids.items() if nid == node_id), None)

    def logged(self, node: str, *texts: str) -> bool:
        """Whether the node printed a line containing every one of `texts`."""
        lines = self.livekit[node].history
        return any(all(text in line for text in texts) for _, line in list(lines))

    def stop(self) -> None:
        for stack in self.stacks.values():
            stack.stop()  # its agent workers
        for service in reversed(self.services):
            service.stop()


@pytest.fixture
def cluster(scripted_env: dict[str, str], artifacts: Path, tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(scripted_env, log_dir_for(artifacts, "test_scale_out-nodes"), tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_two_livekit_nodes_on_one_redis_route_rooms_and_agent_jobs_between_them(cluster: Cluster):
    started = time.monotonic()
    worker = cluster.stacks["node-a"].start_agent(worker_env(), name="agent-on-node-a")
    worker_ready = time.monotonic() - started
    assert "registered worker" in " ".join(line for _, line in worker.history)
    assert sorted(redis_command(cluster.redis_port, "HKEYS", "nodes")) == sorted(cluster.node_ids.values())
    clients: list[Client] = []
    try:
        run = uuid.uuid4().hex[:6]
        # A caller on node B; the only worker is registered on node A.
        room_b = f"nodes-{run}-b"
        caller, details, took = await call(cluster.token_url("node-b"), "caller-on-b", room_b)
        clients.append(caller)
        assert details["server_url"] == cluster.url("node-b")
        assert cluster.node_of(room_b) == "node-b"
        assert served_by(caller, {"agent-on-node-a": worker}) == "agent-on-node-a"
        # node A's agent service took the job for node B's room (the request came over Redis).
        assert cluster.logged("node-a", "assigned job to worker", f'"room": "{room_b}"')
        assert not cluster.logged("node-b", "assigned job to worker")
        print(
            f"\nnodes {cluster.node_ids}; worker registered on node-a in {worker_ready:.1f} s; a call on node-b "
            f"(room on {cluster.node_of(room_b)}) greeted by the node-a worker's agent in {took:.1f} s"
        )

        # A room made on node A, joined through node B: one room, the two people see each other, media flows.
        room_a = f"nodes-{run}-a"
        host, _, _ = await call(cluster.token_url("node-a"), "host-on-a", room_a)
        clients.append(host)
        assert cluster.node_of(room_a) == "node-a"
        joined = time.monotonic()
        guest = Client(cluster.token_url("node-b"), identity="guest-on-b")
        clients.append(guest)
        details = await guest.join(room_a)
        assert details["server_url"] == cluster.url("node-b")
        await guest.wait_for(lambda: "host-on-a" in guest.room.remote_participants, 20, "the host, seen from node B")
        await host.wait_for(lambda: "guest-on-b" in host.room.remote_participants, 20, "the guest, seen from node A")
        host_mic = guest.room.remote_participants["host-on-a"].track_publications

        def subscribed() -> bool:
            return any(pub.subscribed and pub.track is not None for pub in host_mic.values())

        await guest.wait_for(subscribed, 20, "the host's microphone, subscribed through node B")
        print(
            f"a room on {cluster.node_of(room_a)} joined through node-b: participants seen on both sides and the "
            f"host's audio subscribed {time.monotonic() - joined:.1f} s after joining; the agent there is "
            f"{agents(guest)}"
        )
        assert cluster.node_of(room_a) == "node-a", "the room moved"
        # The guest's RTC session runs on node A, where the room is; node B only relays its signalling.
        assert cluster.logged("node-a", "starting RTC session", '"participant": "guest-on-b"')
        assert not cluster.logged("node-b", "starting RTC session", '"participant": "guest-on-b"')
        assert agents(guest) == agents(host)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_launcher_starts_as_many_workers_as_asked(artifacts, scripted_env):
    """`scripts/up --workers 2`: two worker processes, each registered with livekit-server on its own ports."""
    env = {**scripted_env, "MAX_SESSIONS": str(MAX_SESSIONS)}
    with Stack(loopback_ports(), env=env, workers=2, log_dir=log_dir_for(artifacts, "two-workers")) as stack:
        agents = [svc for svc in stack.services if svc.name.startswith("agent")]
        assert [svc.name for svc in agents] == ["agent", "agent-2"]
        assert all(svc.alive() for svc in agents)
        ids = {m.group(1) for svc in agents for line in svc.tail if (m := re.search(r'"id": "(AW_\w+)"', line))}
        assert len(ids) == 2, f"the workers did not both register: {ids}"
