"""Sends the agent back into rooms that lost it.

A self-hosted livekit-server never dispatches a job again when the worker running it dies (livekit/agents#1472), and
a room created while no worker was registered never gets its agent. This watcher asks livekit-server once a second
(RoomService.ListRooms / ListParticipants, AgentDispatchService.ListDispatch) and dispatches the agent again
(CreateDispatch, with the metadata and attributes of the room's latest dispatch: persona, mode) into each room where

- a person (a standard or SIP participant) is present,
- the agent was dispatched there before (a dispatch for AGENT_NAME: the token endpoint's room configuration, a SIP
  dispatch rule, or the API),
- no agent participant of that name has been there for `absent_after` seconds,
- no dispatch is under way: the latest one was taken by a worker less than `join_grace` seconds ago (its agent is
  joining), or was taken by none less than `retry_after` seconds ago (no worker was free: it tries again, so the
  agent comes as soon as a worker registers),
- and the agent did not leave on purpose: a room whose metadata is the JSON object {"agent": "ended"} is left alone
  (an agent that ends a call with people still in the room sets it; a phone call's room is deleted instead).

A room that keeps losing its agent (`max_losses` times) is given up, with one line, so a job that fails at once is not
dispatched for ever.

`python -m stack up` runs it beside the services; `python -m stack redispatch` runs it alone (any deployment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from livekit import api

logger = logging.getLogger("stack.redispatch")

HUMAN_KINDS = (api.ParticipantInfo.Kind.STANDARD, api.ParticipantInfo.Kind.SIP)
AGENT_KIND = api.ParticipantInfo.Kind.AGENT
AGENT_NAME_ATTRIBUTE = "lk.agent_name"  # livekit-server puts it on every agent participant it dispatches
ENDED = "ended"  # room metadata {"agent": "ended"}: the agent left on purpose


@dataclass
class _Room:
    absent_since: float
    had_agent: bool = False
    losses: int = 0  # times an agent was here and went
    dispatches: int = 0  # made since the agent went (or since the room was seen without one)
    given_up: bool = False


def left_on_purpose(metadata: str) -> bool:
    try:
        parsed = json.loads(metadata) if metadata else None
    except json.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("agent") == ENDED


class Redispatcher:
    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        agent_name: str,
        *,
        interval: float = 1.0,
        absent_after: float = 2.0,
        join_grace: float = 10.0,
        retry_after: float = 2.0,
        max_losses: int = 5,
        say: Callable[[str], None] = print,
    ) -> None:
        self.http_url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        self.api_key, self.api_secret = api_key, api_secret
        self.agent_name = agent_name
        self.interval, self.absent_after = interval, absent_after
        self.join_grace, self.retry_after, self.max_losses = join_grace, retry_after, max_losses
        self.say = say
        self.rooms: dict[str, _Room] = {}  # by room sid
        self.dispatched: list[tuple[float, str]] = []  # (time.monotonic(), room name) of each dispatch it made
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        async with api.LiveKitAPI(self.http_url, self.api_key, self.api_secret) as lk:
            while not stop.is_set():
                try:
                    await self.tick(lk)
                    if self._failing:
                        self._failing = False
                        self.say("redispatch: livekit-server answers again")
                except Exception as exc:  # livekit-server restarting: try again next round
                    if not self._failing:
                        self._failing = True
                        logger.info("redispatch: livekit-server did not answer (%s); trying again", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

    async def tick(self, lk: api.LiveKitAPI) -> list[str]:
        """One look at every room; returns the rooms it dispatched the agent into."""
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
        live = {room.sid for room in rooms}
        self.rooms = {sid: state for sid, state in self.rooms.items() if sid in live}
        sent = []
        for room in rooms:
            if await self._check(lk, room):
                sent.append(room.name)
        return sent

    async def _check(self, lk: api.LiveKitAPI, room: api.Room) -> bool:
        now = time.monotonic()
        if left_on_purpose(room.metadata):
            self.rooms.pop(room.sid, None)
            return False
        people = (await lk.room.list_participants(api.ListParticipantsRequest(room=room.name))).participants
        humans = [p for p in people if p.kind in HUMAN_KINDS]
        agents = [
            p
            for p in people
            if p.kind == AGENT_KIND and p.attributes.get(AGENT_NAME_ATTRIBUTE, self.agent_name) == self.agent_name
        ]
        state = self.rooms.get(room.sid)
        if not humans:
            self.rooms.pop(room.sid, None)
            return False
        if agents:
            if state is None:
                self.rooms[room.sid] = _Room(absent_since=now, had_agent=True)
            elif not state.had_agent:
                if state.dispatches:
                    self.say(f"redispatch: {self.agent_name} is back in room {room.name}")
                state.had_agent, state.dispatches = True, 0
            return False
        if state is None:
            state = self.rooms[room.sid] = _Room(absent_since=now)
        elif state.had_agent:  # it was here and is gone
            state.had_agent, state.absent_since = False, now
            state.losses += 1
        if state.given_up or now - state.absent_since < self.absent_after:
            return False
        ours = [d for d in await lk.agent_dispatch.list_dispatch(room.name) if d.agent_name == self.agent_name]
        if not ours:
            return False  # never dispatched here: not this agent's room
        if state.losses > self.max_losses:
            state.given_up = True
            self.say(f"redispatch: room {room.name} lost its agent {state.losses} times; not dispatching it again")
            return False
        latest = max(ours, key=lambda d: d.state.created_at)
        age = time.time() - latest.state.created_at / 1e9
        if age < (self.join_grace if latest.state.jobs else self.retry_after):
            return False  # its agent is joining, or no worker took it just now
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=self.agent_name,
                room=room.name,
                metadata=latest.metadata,
                attributes=dict(latest.attributes),
            )
        )
        self.dispatched.append((now, room.name))
        state.dispatches += 1
        if state.dispatches == 1:  # once per absence: while no worker is free it tries every few seconds
            self.say(
                f"redispatch: room {room.name} has a caller and has had no {self.agent_name} for "
                f"{now - state.absent_since:.0f} s; dispatching it again"
            )
        return True


class Thread:
    """A Redispatcher on its own event loop in a daemon thread (the launcher's main thread supervises processes)."""

    def __init__(self, redispatcher: Redispatcher) -> None:
        self.redispatcher = redispatcher
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="redispatch", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        self._loop.run_until_complete(self.redispatcher.run(self._stop))
        self._loop.close()

    def start(self) -> Thread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
