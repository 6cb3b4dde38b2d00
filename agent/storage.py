"""A SQLite file for what outlives a call (notes, memories): one short connection per use."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import ClassVar


class SqliteStore:
    SCHEMA: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            for statement in self.SCHEMA:
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        # Tools and session events run on different threads and event loops: no shared connection.
        return sqlite3.connect(self.path, timeout=5)
