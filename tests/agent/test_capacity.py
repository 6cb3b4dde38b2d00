"""The load a worker reports agrees with livekit-server's dispatch rule: livekit-server v1.13 offers a call only to a
worker whose load is below its `agents.target_load` (0.7 by default), so every free slot must keep the load below it
and a full worker must reach it. A call frees its slot as soon as its session closes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import yaml

from agent import pipeline
from agent.pipeline import Capacity
from agent.settings import AgentSettings
from stack.services import REPO


@dataclass
class FakeServer:
    jobs: list[str] = field(default_factory=list)

    @property
    def active_jobs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(job=SimpleNamespace(id=job)) for job in self.jobs]


@dataclass
class FakeRequest:
    id: str
    outcome: str = ""
    job: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(metadata=""))
    room: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(name="room-1"))

    async def accept(self) -> None:
        self.outcome = "accepted"

    async def reject(self, *, terminate: bool = True) -> None:
        # terminate=True would end the job for good: livekit-server would offer the call to no other worker.
        self.outcome = "rejected" if not terminate else "rejected for good"


@pytest.fixture(autouse=True)
def told(monkeypatch) -> list[tuple[str, bool]]:
    """The callers a refusing worker would tell (after other workers had their chance), instead of telling them."""
    calls: list[tuple[str, bool]] = []

    async def tell(room_name: str, phone_call: bool, _settings) -> None:
        calls.append((room_name, phone_call))

    monkeypatch.setattr(pipeline, "tell_if_unserved", tell)
    return calls


def server_offers(load: float, target: float) -> bool:
    """livekit-server's AgentHandler.JobRequestAffinity: max(0, target_load - load) > 0."""
    return max(0.0, target - load) > 0


async def test_every_free_slot_is_offered_and_a_full_worker_is_not():
    target = yaml.safe_load((REPO / "livekit.yaml").read_text())["agents"]["target_load"]
    assert target == AgentSettings(_env_file=None).livekit_target_load  # the worker and the server agree
    for max_sessions in (1, 2, 4, 7):
        server = FakeServer()
        capacity = Capacity(server, max_sessions, target)  # type: ignore[arg-type]
        for n in range(max_sessions):
            assert server_offers(capacity.load(), target), f"{n} of {max_sessions} calls: the server offers no more"
            request = FakeRequest(f"job-{n}")
            await capacity.on_request(request)  # type: ignore[arg-type]
            assert request.outcome == "accepted"
            server.jobs.append(request.id)
            capacity.started(request.id)
        assert not server_offers(capacity.load(), target), f"a full worker ({max_sessions}) is still offered calls"
        extra = FakeRequest("one-too-many")
        await capacity.on_request(extra)  # type: ignore[arg-type]
        assert extra.outcome == "rejected"


async def test_a_finished_call_frees_its_slot_at_once():
    server = FakeServer()
    capacity = Capacity(server, 2, 0.7)  # type: ignore[arg-type]
    for job in ("a", "b"):
        await capacity.on_request(FakeRequest(job))  # type: ignore[arg-type]
        server.jobs.append(job)
        capacity.started(job)
    assert capacity.load() >= 0.7
    capacity.finished("a")  # its session closed; livekit's job is still shutting down
    assert "a" in server.jobs and capacity.load() < 0.7
    late = FakeRequest("c")
    await capacity.on_request(late)  # type: ignore[arg-type]
    assert late.outcome == "accepted"


async def test_calls_arriving_together_are_counted_before_they_start(told):
    server = FakeServer()
    capacity = Capacity(server, 2, 0.7)  # type: ignore[arg-type]
    first, second, third = FakeRequest("a"), FakeRequest("b"), FakeRequest("c")
    third.job.metadata = '{"mode": "phone"}'
    for request in (first, second, third):
        await capacity.on_request(request)  # type: ignore[arg-type]
        await asyncio.sleep(0)
    # The third is refused without ending the job: another worker may take it; if none does, its caller is told.
    assert [first.outcome, second.outcome, third.outcome] == ["accepted", "accepted", "rejected"]
    assert told == [("room-1", True)]


def test_the_worker_internals_the_capacity_report_relies_on_exist():
    """Upgrade canary: Capacity reports a freed slot at once through AgentServer's private `_update_worker_status`
    and `_worker_load` (livekit-agents 1.8.9). If an upgrade renames them, the report silently waits 2.5 s again."""
    import inspect

    from livekit.agents import AgentServer

    server = AgentServer()
    assert callable(getattr(server, "_update_worker_status", None)), "AgentServer._update_worker_status is gone"
    # Set when the worker runs, and what _update_worker_status sends as the load.
    sent = inspect.getsource(AgentServer._update_worker_status)
    assert "load=self._worker_load" in sent, "AgentServer._update_worker_status no longer sends _worker_load"


async def test_an_accepted_call_whose_thread_is_still_starting_keeps_its_slot():
    """livekit lists a job as active as soon as it is accepted, while its thread (and entrypoint) may take a second
    to start: the slot stays taken meanwhile (three calls at once on a 2-slot worker all started, before)."""
    server = FakeServer()
    capacity = Capacity(server, 2, 0.7)  # type: ignore[arg-type]
    outcomes = []
    for job in ("a", "b", "c"):
        request = FakeRequest(job)
        await capacity.on_request(request)  # type: ignore[arg-type]
        outcomes.append(request.outcome)
        if request.outcome == "accepted":
            server.jobs.append(job)  # active at once; `started` only comes when its entrypoint runs
    assert outcomes == ["accepted", "accepted", "rejected"]
    server.jobs.remove("a")  # a job that ended before its entrypoint ran frees its slot
    late = FakeRequest("d")
    await capacity.on_request(late)  # type: ignore[arg-type]
    assert late.outcome == "accepted"
