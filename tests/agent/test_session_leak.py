"""Nothing of a call outlives it: a worker runs call after call in one process (jobs are threads), so anything a
module keeps per session grows the worker's memory with every call (bench.soak measures that; this checks it in
seconds)."""

from __future__ import annotations

import gc
import weakref

from livekit import rtc
from livekit.agents import AgentSession, llm

from agent import memory, metrics, pipeline, waterfall
from agent.main import ROUTED, PersonaAgent, prefill_while_listening
from agent.memory import MemoryStore
from agent.skills import CallContext
from agent.skills.notes import NoteStore
from tests.support.scripted_llm import ScriptedLLM

CALLS = 3


def script(ctx: llm.ChatContext):
    return "Sure, I can help with that."


async def one_call(path) -> tuple[weakref.ref, weakref.ref]:
    """A session wired as `agent.main.entrypoint` wires it, in a room that refers back to the session (as a job's
    room does: its JobContext, which holds the session, listens to it)."""
    store = MemoryStore(path)
    scripted = ScriptedLLM(script)
    room = rtc.Room()
    userdata = CallContext(identity="ana", notes=NoteStore(path), memory=store)
    async with scripted, AgentSession(llm=scripted, userdata=userdata) as session:
        room.on("participant_connected", lambda p, session=session: session)  # like JobContext's own listener
        pipeline.log_turn_metrics(session)
        waterfall.attach(session, room)
        metrics.attach(session, fast_path_prefix=ROUTED)
        prefill_while_listening(session)
        memory.record(session, store, "ana")
        agent = PersonaAgent(chat_ctx=memory.recap(store, "ana", turns=3))
        await session.start(agent)
        await session.run(user_input="Hello there")
    return weakref.ref(session), weakref.ref(agent)


async def test_sessions_are_freed_when_their_calls_end(tmp_path):
    clocks = len(waterfall._clocks)
    ended = [await one_call(tmp_path / "agent.db") for _ in range(CALLS)]
    gc.collect()
    alive = [n for n, (session, agent) in enumerate(ended) if session() is not None or agent() is not None]
    assert not alive, f"calls {alive} of {CALLS} are still held in memory after they ended"
    assert len(waterfall._clocks) <= clocks  # (an earlier test's session may be collected meanwhile)
