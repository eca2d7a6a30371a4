"""WAL checkpoints off the event loop, for the SQLite files `serve` writes (journal, local catalog).

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: it
copies the WAL back into the database file and syncs both, on the thread that committed. In
`serve` that is the event loop, so every sender and every worker waited for it (35 stalls of 2
to 14 ms per 6,000 local-catalog upserts, measured). A file opened with `wal_autocheckpoint=0`
instead counts its commits here and runs `Checkpoints.run` on a helper thread when `wrote` says
so, while none of its own writes is under way: then the checkpoint can copy the whole WAL, and
the next commit starts the WAL over from the beginning instead of growing it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path


class Checkpoints:
    """The checkpoints of one SQLite file, on a connection of their own (used by one thread)."""

    def __init__(self, path: Path, *, every: int, what: str, log: logging.Logger) -> None:
        self.path = path
        self.every = every
        self.what = what  # "journal", "local catalog": how the log names the file
        self.log = log
        self._writes = 0
        self._conn: sqlite3.Connection | None = None

    def wrote(self, count: int = 1) -> bool:
        """Count committed writes; True once every `every` of them: a checkpoint is due."""
        self._writes += count
        if self._writes < self.every:
            return False
        self._writes = 0
        return True

    def run(self) -> None:
        """On the helper thread. PASSIVE: a reader or another process in the way makes it copy
        less, never wait; a failure is logged and left for the next one (the WAL holds
        everything, it only grows meanwhile), since the writer waiting for it must go on."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # whatever it is, it must not stop the writer that awaits it
            self.log.warning("%s %s: checkpoint failed, the WAL keeps growing until one succeeds: %s",
                             self.what, self.path, exc)

    def close(self) -> None:
        """On the helper thread, once no checkpoint can start any more."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
