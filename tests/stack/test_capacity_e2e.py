"""Truthful capacity through a real livekit-server: with MAX_SESSIONS callers every one gets an agent; with twice as
many, every caller either gets an agent or is told "busy" (the room's metadata, which the web page shows) within
3 s, and a caller told "busy" is served once a slot frees (the launcher's watcher dispatches the agent again)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc

from stack import redispatch
from stack.services import Stack
from tests.support.ports import loopback_ports
from tests.support.rtc_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CAPACITY = 2


@pytest.fixture(scope="module")
def full_stack(scripted_env: dict[str, str], artifacts: Path) -> Iterator[Stack]:
    log_dir = artifacts / "logs-capacity"
    log_dir.mkdir(exist_ok=True)
    env = {**scripted_env, "MAX_SESSIONS": str(CAPACITY)}
    with Stack(loopback_ports(), env=env, log_dir=log_dir) as stack:
        watcher = redispatch.watch(stack)
        try:
            yield stack
        finally:
            watcher.stop()


def has_agent(client: Client) -> bool:
    return any(p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in client.room.remote_participants.values())


def told_busy(client: Client) -> bool:
    try:
        return json.loads(client.room.metadata or "{}").get("agent") == "busy"
    except (json.JSONDecodeError, AttributeError):
        return False


async def outcome(client: Client, within: float) -> tuple[str, float]:
    """'agent' or 'busy', whichever comes first, and when (from the join); 'nothing' after `within` seconds."""
    start = time.monotonic()
    await client.join()
    while time.monotonic() - start < within:
        if has_agent(client):
            return "agent", time.monotonic() - start
        if told_busy(client):
            return "busy", time.monotonic() - start
        await asyncio.sleep(0.05)
    return "nothing", time.monotonic() - start


async def wait_idle(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(3.0)  # the sessions close and their slots are reported free


async def test_as_many_callers_as_slots_all_get_an_agent(full_stack):
    clients = [Client(full_stack.token_url, identity=f"fits-{n}", subscribe=False) for n in range(CAPACITY)]
    try:
        results = await asyncio.gather(*(outcome(c, 10.0) for c in clients))
    finally:
        await wait_idle(clients)
    print(f"\n{CAPACITY} callers: {[(o, round(t, 2)) for o, t in results]}")
    assert [o for o, _ in results] == ["agent"] * CAPACITY, results
    assert max(t for _, t in results) < 3.0, results


async def test_twice_as_many_callers_are_answered_or_told_busy_and_served_when_a_slot_frees(full_stack):
    clients = [Client(full_stack.token_url, identity=f"crowd-{n}", subscribe=False) for n in range(2 * CAPACITY)]
    try:
        results = await asyncio.gather(*(outcome(c, 10.0) for c in clients))
        print(f"\n{2 * CAPACITY} callers: {[(o, round(t, 2)) for o, t in results]}")
        kinds = [o for o, _ in results]
        assert kinds.count("agent") == CAPACITY and kinds.count("busy") == CAPACITY, results
        assert max(t for _, t in results) <= 3.0, "a caller waited more than 3 s to be answered or told"

        served = [c for c, (o, _) in zip(clients, results, strict=True) if o == "agent"]
        waiting = [c for c, (o, _) in zip(clients, results, strict=True) if o == "busy"]
        await served[0].close()  # a call ends: its slot frees
        freed = time.monotonic()
        deadline = freed + 20
        while time.monotonic() < deadline and not any(has_agent(c) for c in waiting):
            await asyncio.sleep(0.1)
        taken = time.monotonic() - freed
        print(f"a waiting caller got the freed slot {taken:.1f} s after a call ended")
        assert any(has_agent(c) for c in waiting), "no waiting caller was served after a slot freed"
    finally:
        await wait_idle(clients)
