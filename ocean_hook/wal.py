"""What touches the disk for the SQLite files `serve` writes (journal, local catalog), done on a
helper thread instead of the event loop: WAL fsyncs and checkpoints.

Both files are in WAL mode with `synchronous=NORMAL`: a commit writes the WAL without syncing it,
and the writer has the WAL fsynced off the loop before it tells anyone the write happened.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: it
copies the WAL back into the database file and syncs both, on the thread that committed. In
`serve` that is the event loop, so every sender and every worker waited for it (35 stalls of 2
to 14 ms per 6,000 local-catalog upserts, measured). A file opened with `wal_autocheckpoint=0`
instead counts its commits here and runs `Checkpoints.run` on a helper thread when `wrote` says
so, while none of its own writes is under way: then the checkpoint can copy the whole WAL, and
the next commit starts the WAL over from the beginning instead of growing it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import Executor
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


class SharedSync:
    """fsyncs of one WAL file on a helper thread, shared by the writers that ask at once.

    `wait()` returns once an fsync that started after the call has finished, so whatever the
    caller committed before calling is on disk. Callers arriving while an fsync runs share the
    next one: a handful of concurrent writers cost one fsync, not one each.
    """

    def __init__(self, wal: Path, executor: Executor) -> None:
        # the WAL file exists from the first transaction on, and lives as long as a connection
        self._fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        self._executor = executor
        #: the one call made off the loop (replaceable, so a test can hold it back)
        self.fsync: Callable[[int], None] = os.fsync
        self._asked = 0  # calls to wait() so far
        self._synced = 0  # of those, how many a finished fsync covers
        self._running: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        """Raises OSError when the fsync fails (the caller's write may then not be on disk)."""
        self._asked += 1
        mine = self._asked
        while self._synced < mine:
            if self._running is None or self._running.done():
                self._running = asyncio.create_task(self._sync(self._asked))
            await asyncio.shield(self._running)

    async def _sync(self, covers: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.fsync, self._fd)
        self._synced = max(self._synced, covers)

    def sync_now(self) -> None:
        """For callers with no event loop (a command importing entities)."""
        self.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
