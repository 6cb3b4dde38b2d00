"""The load a worker reports agrees with livekit-server's dispatch rule: livekit-server v1.13 offers a call only to a
worker whose load is below its `agents.target_load` (0.7 by default), so every free slot must keep the load below it
and a full worker must reach it. A call frees its slot as soon as its session closes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import yaml

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

    async def accept(self) -> None:
        self.outcome = "accepted"

    async def reject(self) -> None:
        self.outcome = "rejected"


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


async def test_calls_arriving_together_are_counted_before_they_start():
    server = FakeServer()
    capacity = Capacity(server, 2, 0.7)  # type: ignore[arg-type]
    first, second, third = FakeRequest("a"), FakeRequest("b"), FakeRequest("c")
    for request in (first, second, third):
        await capacity.on_request(request)  # type: ignore[arg-type]
    assert [first.outcome, second.outcome, third.outcome] == ["accepted", "accepted", "rejected"]
