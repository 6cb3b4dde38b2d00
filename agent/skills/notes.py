"""Notes a caller saves and recalls, kept per participant identity in SQLite."""

from __future__ import annotations

import time
from contextlib import closing

from agent.storage import SqliteStore

MAX_NOTE = 500
MAX_NOTES = 200


class NoteStore(SqliteStore):
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, identity TEXT NOT NULL,"
        " text TEXT NOT NULL, created REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS notes_identity ON notes (identity, created)",
    )

    def add(self, identity: str, text: str) -> None:
        text = " ".join(text.split())[:MAX_NOTE]
        if not text:
            raise ValueError("the note is empty")
        with closing(self._connect()) as db, db:
            db.execute("INSERT INTO notes (identity, text, created) VALUES (?, ?, ?)", (identity, text, time.time()))
            db.execute(
                "DELETE FROM notes WHERE identity = ? AND id NOT IN "
                "(SELECT id FROM notes WHERE identity = ? ORDER BY created DESC LIMIT ?)",
                (identity, identity, MAX_NOTES),
            )

    def find(self, identity: str, topic: str = "", limit: int = 10) -> list[str]:
        words = [w for w in topic.lower().split() if len(w) > 2]
        with closing(self._connect()) as db:
            rows = db.execute("SELECT text FROM notes WHERE identity = ? ORDER BY created DESC", (identity,)).fetchall()
        texts = [text for (text,) in rows]
        if words:
            texts = [t for t in texts if any(w in t.lower() for w in words)]
        return list(reversed(texts[:limit]))

    def count(self, identity: str) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM notes WHERE identity = ?", (identity,)).fetchone()[0]

    def forget(self, identity: str) -> int:
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM notes WHERE identity = ?", (identity,)).rowcount
