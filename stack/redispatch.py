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

livekit-server keeps the participant of an agent whose process was killed in the room for ~20 s (waiting for it to
reconnect). The launcher tells the watcher when an agent worker dies (`workers_gone`, with the worker ids it
registered under): its agent participants are removed at once (their jobs' worker ids are in the room's dispatches) and
their rooms dispatched again without waiting. When a worker (re)registers (`worker_ready`), rooms waiting for an agent
are dispatched at once rather than at their next retry.

A room that keeps losing its agent (more than `max_losses` times) is given up, with one line, so a job that fails at
once is not dispatched for ever.

`python -m stack up` runs it beside the services; `python -m stack redispatch` runs it alone (any deployment).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit import api

from stack.services import Service, Stack

logger = logging.getLogger("stack.redispatch")

HUMAN_KINDS = (api.ParticipantInfo.Kind.STANDARD, api.ParticipantInfo.Kind.SIP)
AGENT_KIND = api.ParticipantInfo.Kind.AGENT
AGENT_NAME_ATTRIBUTE = "lk.agent_name"  # livekit-server puts it on every agent participant it dispatches
ENDED = "ended"  # room metadata {"agent": "ended"}: the agent left on purpose
WORKER_ID = re.compile(r'"message": "registered worker".*?"id": "(AW_\w+)"')


@dataclass
class _Room:
    absent_since: float
    had_agent: bool = False
    losses: int = 0  # times an agent was here and went
    dispatches: int = 0  # made since the agent went (or since the room was seen without one)
    known_dead: bool = False  # its agent's worker died: no need to wait and see
    given_up: bool = False
    told_busy: bool = False  # the caller was told no agent is free (room metadata), or the phone call refused
    seen: set[str] = field(default_factory=set)  # agent identities that have been in the room


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
        retry_after: float = 4.0,  # a worker answers a job request in milliseconds; livekit-server waits up to 10 s
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
        self.dispatched: collections.deque = collections.deque(maxlen=1000)  # (time.monotonic(), room) it dispatched
        self._gone: dict[str, float] = {}  # worker id -> when its process died (told by the launcher)
        self._hurry = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._failing = False

    # Told by the launcher, from its own thread.
    def workers_gone(self, worker_ids: list[str]) -> None:
        """These workers' processes died: their agent participants are dead at once (livekit-server would keep them
        in the room ~20 s, waiting for them to reconnect), so they are removed and their rooms served again now."""
        now = time.monotonic()
        for worker_id in worker_ids:
            self._gone[worker_id] = now
        self.wake()

    def worker_ready(self) -> None:
        """A worker has (re)registered: rooms waiting for an agent are dispatched now, not at their next retry."""
        self._hurry = True
        self.wake()

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        async with api.LiveKitAPI(self.http_url, self.api_key, self.api_secret) as lk:
            while not stop.is_set():
                try:
                    await self.tick(lk)
                    self._failing = False
                except Exception as exc:  # livekit-server restarting: try again next round
                    if not self._failing:
                        self._failing = True
                        logger.info("redispatch: livekit-server did not answer (%s); trying again", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()

    async def tick(self, lk: api.LiveKitAPI) -> list[str]:
        """One look at every room; returns the rooms it dispatched the agent into."""
        now = time.monotonic()
        self._gone = {w: t for w, t in self._gone.items() if now - t < 120}
        hurry, self._hurry = self._hurry, False
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
        live = {room.sid for room in rooms}
        self.rooms = {sid: state for sid, state in self.rooms.items() if sid in live}
        sent = []
        for room in rooms:
            if await self._check(lk, room, hurry):
                sent.append(room.name)
        return sent

    async def _tell_if_unserved(
        self, lk: api.LiveKitAPI, room: api.Room, humans: list, dispatches: list[api.AgentDispatch]
    ) -> bool:
        """A caller that no worker took within a moment is told so: a phone call is refused (the room deleted, so
        livekit-sip answers 486 instead of ringing on); anyone else reads "busy" in the room's metadata (the web page
        says it and offers a retry) while this watcher keeps dispatching until a slot frees."""
        waited = _unserved_for(dispatches, self.agent_name)
        if waited < UNSERVED_AFTER_S:
            return False
        if any(p.kind == api.ParticipantInfo.Kind.SIP for p in humans):
            self.say(f"redispatch: no {self.agent_name} free for the phone call in room {room.name}; refusing it")
            await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))
        else:
            self.say(
                f"redispatch: no {self.agent_name} free for room {room.name} after {waited:.1f} s; told the caller"
            )
            await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room.name, metadata=BUSY))
        return True

    async def _check(self, lk: api.LiveKitAPI, room: api.Room, hurry: bool) -> bool:
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
        dispatches: list[api.AgentDispatch] | None = None
        dead_since = None
        if agents and self._gone:
            dispatches = await lk.agent_dispatch.list_dispatch(room.name)
            worker_of = {
                job.state.participant_identity: job.state.worker_id for d in dispatches for job in d.state.jobs
            }
            for dead in [a for a in agents if worker_of.get(a.identity) in self._gone]:
                dead_since = self._gone[worker_of[dead.identity]]
                agents.remove(dead)
                with contextlib.suppress(Exception):  # it may have gone by itself meanwhile
                    await lk.room.remove_participant(
                        api.RoomParticipantIdentity(room=room.name, identity=dead.identity)
                    )
                self.say(f"redispatch: removed {dead.identity} from room {room.name}: its worker died")
        if agents:
            if state is None:
                state = self.rooms[room.sid] = _Room(absent_since=now, had_agent=True)
            elif not state.had_agent:
                if state.dispatches:
                    self.say(f"redispatch: {self.agent_name} is back in room {room.name}")
                state.had_agent, state.dispatches, state.known_dead = True, 0, False
            state.seen.update(a.identity for a in agents)
            state.told_busy = False
            return False
        if state is None:
            state = self.rooms[room.sid] = _Room(absent_since=now)
        elif state.had_agent:  # it was here and is gone
            state.had_agent, state.absent_since = False, now
            state.losses += 1
        if dead_since is not None:
            state.known_dead, state.absent_since = True, min(state.absent_since, dead_since)
        if not state.told_busy:
            dispatches = dispatches if dispatches is not None else await lk.agent_dispatch.list_dispatch(room.name)
            if await self._tell_if_unserved(lk, room, humans, dispatches):
                state.told_busy = True
                if any(p.kind == api.ParticipantInfo.Kind.SIP for p in humans):
                    return False  # a phone call nobody can take is refused, not kept ringing
        if state.given_up or (now - state.absent_since < self.absent_after and not state.known_dead):
            return False
        if dispatches is None:
            dispatches = await lk.agent_dispatch.list_dispatch(room.name)
        ours = [d for d in dispatches if d.agent_name == self.agent_name]
        if not ours:
            return False  # never dispatched here: not this agent's room
        if state.losses > self.max_losses:
            state.given_up = True
            self.say(f"redispatch: room {room.name} lost its agent {state.losses} times; not dispatching it again")
            return False
        latest = max(ours, key=lambda d: d.state.created_at)
        age = time.time() - latest.state.created_at / 1e9
        joining = [
            job
            for job in latest.state.jobs
            if job.state.worker_id not in self._gone and job.state.participant_identity not in state.seen
        ]
        if joining and age < self.join_grace:
            return False  # a worker took it: its agent is on its way
        if not latest.state.jobs and age < (min(1.0, self.retry_after) if hurry else self.retry_after):
            return False  # no worker took it (or its answer is on its way): try again soon
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


UNSERVED_AFTER_S = 1.5  # a dispatch no worker took for this long: every worker is full (or none is registered)
BUSY = '{"agent": "busy"}'


def _unserved_for(dispatches: list[api.AgentDispatch], agent_name: str) -> float:
    """Seconds the room's latest dispatch of the agent has gone untaken (0 when a worker took it or there is none)."""
    ours = [d for d in dispatches if d.agent_name == agent_name]
    if not ours:
        return 0.0
    latest = max(ours, key=lambda d: d.state.created_at)
    return 0.0 if latest.state.jobs else max(0.0, time.time() - latest.state.created_at / 1e9)


def hooks(watcher: Redispatcher) -> dict[str, Callable[[Service], None]]:
    """The Supervisor's on_exit / on_ready for an agent worker service: tell the watcher."""

    def on_exit(service: Service) -> None:
        if service.name.startswith("agent"):  # its agents died with it: the watcher sends new ones at once
            watcher.workers_gone(worker_ids(service))

    def on_ready(service: Service) -> None:
        if service.name.startswith("agent"):
            watcher.worker_ready()

    return {"on_exit": on_exit, "on_ready": on_ready}


def worker_ids(service: Service) -> list[str]:
    """The ids livekit-server gave an agent worker process (it registers again after livekit-server restarts)."""
    return list(dict.fromkeys(m[1] for _, line in list(service.history) if (m := WORKER_ID.search(line))))


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
            self.redispatcher.wake()
        self._thread.join(timeout)


def watch(stack: Stack, agent_name: str = "voice-agent", **options) -> Thread:
    """A started watcher for a running Stack, as `python -m stack up` runs one (tests use it the same way)."""
    s = stack.settings
    watcher = Redispatcher(stack.livekit_url, s.livekit_api_key, s.livekit_api_secret, agent_name, **options)
    return Thread(watcher).start()
