"""Memory across calls: what a caller said comes back at the start of their next call, and can be erased."""

from __future__ import annotations

from livekit.agents import AgentSession, llm

from agent import memory
from agent.main import Assistant
from agent.memory import MemoryStore
from agent.skills import CallContext
from agent.skills.notes import NoteStore
from tests.support.scripted_llm import ScriptedLLM


def test_store_keeps_recent_exchanges_per_caller(tmp_path):
    store = MemoryStore(tmp_path / "agent.db")
    for n in range(60):
        store.add("ana", "user", f"message {n}")
    store.add("bob", "user", "hello from bob")
    store.add("ana", "assistant", "   ")  # nothing said: nothing kept
    assert store.recent("ana", 2) == [("user", "message 58"), ("user", "message 59")]
    assert len(store.recent("ana", 100)) == memory.KEEP_PER_CALLER
    assert store.recent("bob", 5) == [("user", "hello from bob")]
    assert store.forget("ana") == memory.KEEP_PER_CALLER and store.recent("ana", 5) == []


async def call(path, identity: str, *says: str) -> llm.ChatContext:
    """One call (a fresh store and session, as after a restart); returns what the LLM was first shown."""
    store = MemoryStore(path)
    scripted = ScriptedLLM(
        lambda ctx: "Nice to meet you." if "sailing" in (ctx.items[-1].text_content or "") else "Okay."
    )
    userdata = CallContext(identity=identity, notes=NoteStore(path), memory=store)
    async with scripted, AgentSession(llm=scripted, userdata=userdata) as session:
        memory.record(session, store, identity)
        await session.start(Assistant(chat_ctx=memory.recap(store, identity, turns=3)))
        for words in says:
            await session.run(user_input=words)
    return scripted.calls[0] if scripted.calls else llm.ChatContext()


def recalled(ctx: llm.ChatContext) -> str:
    return " ".join(item.text_content or "" for item in ctx.items if item.type == "message" and item.role == "system")


async def test_the_next_call_starts_with_what_was_said(tmp_path):
    path = tmp_path / "agent.db"
    await call(path, "ana", "My name is Ana and I love sailing.")
    seen = recalled(await call(path, "ana", "Do you remember me?"))
    assert "My name is Ana and I love sailing." in seen
    # The agent's own earlier answers never come back: a small LLM repeats them, right or wrong, to other questions.
    assert "Nice to meet you" not in seen
    assert "sailing" not in recalled(await call(path, "bob", "Do you remember me?"))


async def test_forgetting_erases_the_memory(tmp_path):
    path = tmp_path / "agent.db"
    await call(path, "ana", "My name is Ana and I love sailing.")
    await call(path, "ana", "Forget my notes", "Yes.")  # the fast path: forget_notes asks, and the yes confirms it
    assert "sailing" not in recalled(await call(path, "ana", "Do you remember me?"))
