"""Memory across calls: the last few exchanges with each caller (by identity), kept in SQLite and given
back to the agent at the start of their next call. `forget` erases it (the forget_notes tool does too)."""

from __future__ import annotations

import time
from contextlib import closing

from livekit.agents import AgentSession, llm
from livekit.agents.voice import ConversationItemAddedEvent

from agent.storage import SqliteStore

KEEP_PER_CALLER = 40
MAX_TEXT = 300


class MemoryStore(SqliteStore):
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY, identity TEXT NOT NULL,"
        " role TEXT NOT NULL, text TEXT NOT NULL, created REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS memories_identity ON memories (identity, created)",
    )

    def add(self, identity: str, role: str, text: str) -> None:
        text = " ".join(text.split())[:MAX_TEXT]
        if not text:
            return
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO memories (identity, role, text, created) VALUES (?, ?, ?, ?)",
                (identity, role, text, time.time()),
            )
            db.execute(
                "DELETE FROM memories WHERE identity = ? AND id NOT IN "
                "(SELECT id FROM memories WHERE identity = ? ORDER BY id DESC LIMIT ?)",
                (identity, identity, KEEP_PER_CALLER),
            )

    def recent(self, identity: str, limit: int) -> list[tuple[str, str]]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT role, text FROM memories WHERE identity = ? ORDER BY id DESC LIMIT ?", (identity, limit)
            ).fetchall()
        return list(reversed(rows))

    def forget(self, identity: str) -> int:
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM memories WHERE identity = ?", (identity,)).rowcount


def recap(store: MemoryStore | None, identity: str, turns: int) -> llm.ChatContext:
    """The start of a call's context: what this caller said in their last calls, as one system message.

    Only the person's own words: the agent's earlier answers are left out, because a small LLM repeats them (a wrong
    "The current local time is 12:34 PM on April 15, 2023" came back in three later calls, to other questions)."""
    ctx = llm.ChatContext()
    lines = store.recent(identity, turns * 2) if store and turns > 0 else []
    said = [text for role, text in lines if role == "user"]
    if said:
        quoted = " ".join(f'"{text}"' for text in said)
        ctx.add_message(
            role="system",
            content=f"In earlier calls this person told you (oldest first): {quoted} Use it only if it helps now.",
        )
    return ctx


def record(session: AgentSession, store: MemoryStore, identity: str) -> None:
    """Keeps each finished user and agent message of this session for the caller's next call."""

    @session.on("conversation_item_added")
    def _on_item(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if item.type == "message" and item.role in ("user", "assistant") and not getattr(item, "interrupted", False):
            store.add(identity, item.role, item.text_content or "")
