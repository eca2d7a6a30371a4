"""The embedded journal: one SQLite file in the state directory.

The promise is that a 2xx means the delivery is on disk: `put` returns only after its
transaction committed and the WAL file holding it was fsynced. An fsync per request would cap
the listener (and the workers' acks) at the disk's fsync rate, hence *group commit*: every write
(put, claim, ack, retry, ...) queues up while the previous round is being written, and the
single writer then runs all of them in one transaction and one fsync before resolving each
caller's future. `commits` counts those transactions.

Where it runs: the SQLite work on the event loop's thread (one connection, never shared), the
fsync alone on a helper thread, so the loop does not wait for the disk (but once per
CHECKPOINT_AFTER writes, when a commit starts the WAL over and SQLite syncs its new header).
The file is in WAL mode with `synchronous=NORMAL`, under which a commit writes the WAL without
syncing it, and the writer fsyncs the WAL itself before anyone hears of the commit: what
`synchronous=FULL` does at each commit, without a thread that owns the connection and needs
the GIL back after every statement while the loop is busy (that handover made each round
several times slower than its work, measured under load). The checkpoint runs on the helper
thread too (`checkpoints.py`), after every CHECKPOINT_AFTER writes, between two commit rounds
(in a micro-benchmark, COMMIT time on the loop fell from 1.4 to 0.8 s per 100,000 writes). A
write lock held by another process (`deliveries retry`, a second `serve`) is waited for on the
loop, between attempts, never inside SQLite's busy handler: it sleeps, and on the loop's thread
that would stall every connection.

Ordering: among unfinished deliveries (pending, in progress, failed) with the same non-empty
`order_key`, only the oldest is claimable, and only while none with that key is in progress.
Done and dead deliveries do not count, so a dead letter never blocks its key. An empty order key
means "no ordering": such deliveries are claimed independently.

That oldest delivery, the *head* of its key, is kept marked (`head = 1`; every unfinished
delivery without a key is its own head) by the writes that change it: put, ack, dead-letter and
requeue (claim, retry and recover keep a delivery unfinished, so they never do). A claim is then
an indexed look-up of the first claimable heads, whatever the backlog behind them; finding them
by grouping every unfinished delivery by key made each claim cost O(backlog), inside the
transaction every `put` waits for.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from ocean_hook.checkpoints import Checkpoints
from ocean_hook.queue.base import Delivery, DeliveryState, PutResult, Queue, QueueUnavailable, Requeued
from ocean_hook.queue.codec import (
    ALL_STATES,
    clip_error,
    decode_headers,
    decode_processors,
    empty_depth,
    encode_headers,
    encode_processors,
)
from ocean_hook.sqlitefiles import is_busy, look_into, may_write, take_over, unwritable_note, wal_descriptor

T = TypeVar("T")

log = logging.getLogger("ocean_hook.journal")

#: how long a write lock held by another connection is waited for before the journal gives up
BUSY_SECONDS = 10.0

#: writes (puts, claims, acks...) between two checkpoints: about SQLite's own 1,000 WAL pages
CHECKPOINT_AFTER = 500

SCHEMA_VERSION = 2

UNFINISHED = "('pending', 'in_progress', 'failed')"
FINISHED = "('done', 'dead')"

# AUTOINCREMENT: ids are shown to users (`deliveries requeue 42`), so a purged id is never reused.
TABLE = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    processors TEXT NOT NULL,
    order_key TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at REAL,
    received_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    head INTEGER NOT NULL DEFAULT 0
);
"""

# Partial indexes where they can be: a put touches only the first three.
INDEXES = f"""
CREATE INDEX IF NOT EXISTS deliveries_delivery_id ON deliveries (delivery_id, received_at);
CREATE INDEX IF NOT EXISTS deliveries_unfinished ON deliveries (order_key, id, state)
    WHERE state IN {UNFINISHED};
CREATE INDEX IF NOT EXISTS deliveries_pending_heads ON deliveries (id) WHERE head = 1 AND state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_failed_heads ON deliveries (next_attempt_at)
    WHERE head = 1 AND state = 'failed';
CREATE INDEX IF NOT EXISTS deliveries_busy ON deliveries (order_key) WHERE state = 'in_progress';
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (state, updated_at) WHERE state IN {FINISHED};
"""

# Version 1 files: no head marks yet, and indexes that every put had to update.
UPGRADE_TO_2 = f"""
ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS deliveries_due;
DROP INDEX IF EXISTS deliveries_key;
DROP INDEX IF EXISTS deliveries_updated;
UPDATE deliveries SET head = 1 WHERE state IN {UNFINISHED} AND (order_key = '' OR id IN (
    SELECT MIN(id) FROM deliveries WHERE state IN {UNFINISHED} AND order_key != '' GROUP BY order_key));
"""

# A head may run unless a delivery of its key is in progress (a requeued dead letter becomes the
# head again while a later delivery of its key may be running).
_NOT_BLOCKED = (
    "(d.order_key = '' OR NOT EXISTS (SELECT 1 FROM deliveries AS busy INDEXED BY deliveries_busy"
    " WHERE busy.order_key = d.order_key AND busy.state = 'in_progress'))"
)
# A failed head is due at its next attempt; one written "later" than now was scheduled before the
# clock stepped back, and is due now rather than after the step (an hour's step held its key an hour).
CLAIMABLE = f"""
SELECT id FROM (
    SELECT id FROM deliveries AS d INDEXED BY deliveries_pending_heads
    WHERE head = 1 AND state = 'pending' AND {_NOT_BLOCKED} ORDER BY id LIMIT :limit)
UNION ALL
SELECT id FROM (
    SELECT id FROM deliveries AS d INDEXED BY deliveries_failed_heads
    WHERE head = 1 AND state = 'failed' AND (next_attempt_at <= :now OR updated_at > :now) AND {_NOT_BLOCKED}
    ORDER BY id LIMIT :limit)
ORDER BY 1
LIMIT :limit
"""

# Dead letters with a newer delivery of their key applied since, or unfinished (its newer content
# is on the way, and one already started would be applied before the requeued dead letter, then
# overwritten by it): as Redis decides. One pass over those keys' rows (no index serves it;
# `deliveries retry` asks, never the listener).
SUPERSEDED = """
WITH dead AS (SELECT id, order_key FROM deliveries WHERE state = 'dead' AND order_key != ''),
     newest AS (SELECT order_key, MAX(id) AS id FROM deliveries
                WHERE state != 'dead' AND order_key IN (SELECT order_key FROM dead) GROUP BY order_key)
SELECT dead.id, newest.id FROM dead JOIN newest USING (order_key) WHERE newest.id > dead.id ORDER BY dead.id
"""

#: what a put's row holds, in order (`put` builds it, `_insert_rows` and INSERT_UNLESS_DUPLICATE store it)
ROW_FIELDS = ("delivery_id", "method", "path", "headers", "body", "processors", "order_key", "received_at")

# A new delivery is the head of its key when no earlier one is unfinished; a delivery id already
# journaled on the same path since :since (the dedup window) stores nothing (one sender's ids say
# nothing about another's). Named parameters: Python 3.14 refuses
# numbered ones (?1) bound from a sequence.
INSERT_UNLESS_DUPLICATE = f"""
INSERT INTO deliveries (delivery_id, method, path, headers, body, processors, order_key, received_at,
                        state, attempts, created_at, updated_at, head)
SELECT :delivery_id, :method, :path, :headers, :body, :processors, :order_key, :received_at, 'pending', 0,
    :now, :now,
    :order_key = '' OR NOT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_unfinished
                                   WHERE order_key = :order_key AND state IN {UNFINISHED})
WHERE :delivery_id = '' OR NOT EXISTS (SELECT 1 FROM deliveries WHERE delivery_id = :delivery_id
                                       AND path = :path AND received_at >= :since)
"""

# The oldest unfinished delivery of a key.
FIRST_UNFINISHED = (
    "SELECT id FROM deliveries INDEXED BY deliveries_unfinished"
    f" WHERE order_key = ? AND state IN {UNFINISHED} ORDER BY id LIMIT 1"
)

# Each part counted on its own (covering) index: there is no index on `state` alone.
DEPTH = f"""
SELECT state, COUNT(*) FROM deliveries INDEXED BY deliveries_unfinished WHERE state IN {UNFINISHED} GROUP BY state
UNION ALL
SELECT state, COUNT(*) FROM deliveries INDEXED BY deliveries_finished WHERE state IN {FINISHED} GROUP BY state
"""

COLUMNS = (
    "id, delivery_id, method, path, headers, body, processors, order_key, state, attempts,"
    " last_error, next_attempt_at, received_at, updated_at"
)

Row = tuple[Any, ...]
Work = Callable[[sqlite3.Connection, float], T]


class SqliteJournal(Queue):
    """Use `await SqliteJournal.open(path)`; `commits` counts committed write transactions."""

    def __init__(
        self,
        path: Path,
        *,
        dedup_window_seconds: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
        looking: bool = False,
    ) -> None:
        self.path = Path(path)
        #: only reads will be asked (`deliveries list`, `show`): a user who may not write can
        self.looking = looking
        self.dedup_window_seconds = dedup_window_seconds
        self.clock = clock
        self.commits = 0
        #: the one call made off the loop (replaceable, so a test can hold it back)
        self.fsync: Callable[[int], None] = os.fsync
        self._syncer: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._wal: int | None = None  # a descriptor of the WAL file, for the fsync
        self._pending: list[tuple[Work[Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._claimed: set[str] = set()  # ids this object handed to workers and not yet ended
        self._checkpoints = Checkpoints(self.path, every=CHECKPOINT_AFTER, what="journal", log=log)
        self._sync_first: list[Callable[[], None]] = []  # see sync_before
        self._serve_lock: int | None = None  # see _serve_alone

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        dedup_window_seconds: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
        looking: bool = False,
    ) -> SqliteJournal:
        journal = cls(path, dedup_window_seconds=dedup_window_seconds, clock=clock, looking=looking)
        await journal._run(journal._connect)
        journal._syncer = ThreadPoolExecutor(1, thread_name_prefix="ocean-hook-fsync")
        return journal

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ running SQLite

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the loop; a busy database is asked again until BUSY_SECONDS have
        passed, and any other SQLite or OS error becomes QueueUnavailable."""
        deadline, pause = time.monotonic() + BUSY_SECONDS, 0.002  # by the clock: a busy loop sleeps longer
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise QueueUnavailable(f"journal {self.path}: {exc}{unwritable_note(exc, self.path)}") from exc
            except (sqlite3.Error, OSError) as exc:
                raise QueueUnavailable(f"journal {self.path}: {exc}") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueUnavailable(f"journal {self.path} is closed")
        return self._conn

    def _connect(self) -> None:
        if self.looking and not may_write(self.path):
            self._conn = self._look()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # statements differ by how many puts they store at once: keep them all prepared;
        # timeout 0: a busy database answers at once, and `_run` waits off SQLite
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0, cached_statements=1024)
        try:
            take_over(conn, "deliveries", "a journal")
            self._create_or_upgrade(conn)
            self._wal = wal_descriptor(self.path)
        except (sqlite3.Error, OSError):
            conn.close()
            raise
        self._conn = conn

    def _look(self) -> sqlite3.Connection:
        conn = look_into(self.path, "deliveries", "a journal", isolation_level=None, timeout=0)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"it was written by an older ocean-hook (journal schema {version}): "
                                            "serve upgrades it when it starts; reading it needs that first")
            _refuse_newer(version)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _create_or_upgrade(conn: sqlite3.Connection) -> None:
        """One transaction, so two processes opening an old file cannot both upgrade it. A file
        already at this version is left alone: taking the write lock to find that out made
        `deliveries list` wait for, then fail on, any write transaction of another process."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        _refuse_newer(version)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(TABLE)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
            if "head" not in columns:
                for statement in UPGRADE_TO_2.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            for statement in INDEXES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _commit_batch(self, works: list[Work[Any]]) -> list[Any]:
        """Run every queued write in one IMMEDIATE transaction (the fsync follows in `_drain`).

        Puts (and acks) queued one after another are written by a few statements for all of
        them: a statement per put made each round, and every sender waiting on it, slower.
        """
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self.clock()
            results: list[Any] = []
            for run in _runs(works):
                # a run is all puts or all acks (`_runs` groups by type), so its first item tells
                if isinstance(run, list) and isinstance(run[0], _Put):
                    results += _insert_many(conn, now - self.dedup_window_seconds, now, cast(list[_Put], run))
                elif isinstance(run, list):
                    results += _ack_many(conn, now, cast(list[_Ack], run))
                else:
                    results.append(run(conn, now))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return results

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        return await self._run(lambda: self._connection().execute(sql, params).fetchall())

    def sync_before(self, sync: Callable[[], None]) -> None:
        """Have `sync()` run, on the helper thread, before each fsync of the journal's WAL: for a
        file whose writes must be on disk before the journal records them done (the local
        catalog). An OSError from it, naming its file, fails the round like the journal's own
        fsync would."""
        self._sync_first.append(sync)

    def _sync_wal(self) -> None:
        """On the helper thread: everything committed so far reaches the disk."""
        if self._wal is None:
            raise QueueUnavailable(f"journal {self.path} is closed")
        try:
            for sync in self._sync_first:
                sync()
        except OSError as exc:  # its message names its file
            raise QueueUnavailable(f"journal {self.path}: {exc}") from exc
        try:
            self.fsync(self._wal)
        except OSError as exc:
            raise QueueUnavailable(f"journal {self.path}: cannot sync the WAL: {exc}") from exc

    # ------------------------------------------------------------------ group commit

    async def _write(self, work: Work[T]) -> T:
        """Queue `work(conn, now)` for the writer; return once its transaction has committed
        and the WAL holding it was fsynced."""
        if self._conn is None:
            raise QueueUnavailable(f"journal {self.path} is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """The single writer: each round commits everything that queued up during the last,
        then waits for the fsync (off the loop) before telling anyone."""
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._run(self._commit_batch, [work for work, _ in batch])
                await loop.run_in_executor(self._syncer, self._sync_wal)
            except BaseException as exc:
                error = exc if isinstance(exc, QueueUnavailable) else QueueUnavailable(str(exc))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            if self._checkpoints.wrote(len(batch)):  # between two rounds: none is being written
                await loop.run_in_executor(self._syncer, self._checkpoints.run)

    # ------------------------------------------------------------------ put

    async def put(self, delivery: Delivery) -> PutResult:
        row = (
            delivery.delivery_id,
            delivery.method,
            delivery.path,
            encode_headers(delivery.headers),
            bytes(delivery.body),
            encode_processors(delivery.processors),
            delivery.order_key,
            delivery.received_at,
        )
        return await self._write(_Put(row, self.dedup_window_seconds))

    # ------------------------------------------------------------------ workers

    async def claim(self, limit: int) -> list[Delivery]:
        def work(conn: sqlite3.Connection, now: float) -> list[Delivery]:
            ids = [r[0] for r in conn.execute(CLAIMABLE, {"now": now, "limit": limit})]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            conn.execute(
                "UPDATE deliveries SET state = 'in_progress',"
                f" updated_at = ? WHERE id IN ({marks})",
                (now, *ids),
            )
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM deliveries WHERE id IN ({marks}) ORDER BY id", ids
            ).fetchall()
            claimed = []
            for row in rows:
                try:
                    claimed.append(to_delivery(row))
                except DamagedRow as exc:  # dead, not claimed again and again: the workers would stop there
                    _promote_next(conn, [int(row[0])])
                    conn.execute("UPDATE deliveries SET state = 'dead', last_error = ?, head = 0 WHERE id = ?",
                                 (clip_error(str(exc)), int(row[0])))
                    log.error("%s; dead-lettered", exc)
            return claimed

        if limit <= 0:
            return []
        claimed = await self._write(work)
        self._claimed.update(d.id for d in claimed)
        return claimed

    async def ack(self, delivery: Delivery) -> None:
        await self._finish(delivery, DeliveryState.DONE, None, None)

    async def retry_later(self, delivery: Delivery, error: str, delay_seconds: float) -> None:
        await self._finish(delivery, DeliveryState.FAILED, error, max(0.0, delay_seconds))

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        await self._finish(delivery, DeliveryState.DEAD, error, None)

    async def _finish(
        self, delivery: Delivery, state: DeliveryState, error: str | None, delay: float | None
    ) -> None:
        """End a claim. Only an in-progress row moves, so a late call cannot undo a requeue."""

        def work(conn: sqlite3.Connection, now: float) -> float:
            if state is DeliveryState.DEAD:  # it leaves the unfinished: the next of its key leads
                _promote_next(conn, [int(delivery.id)])
            conn.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " updated_at = ?, head = head AND ? WHERE id = ? AND state = 'in_progress'",
                (str(state), clip_error(error or ""), None if delay is None else now + delay, now,
                 int(state is DeliveryState.FAILED), int(delivery.id)),
            )
            return now

        write: Work[float] = work
        if state is DeliveryState.DONE:
            write = _Ack(int(delivery.id))
        now = await self._write(write)
        self._claimed.discard(delivery.id)
        delivery.state = state
        delivery.updated_at = now
        delivery.last_error = None if error is None else clip_error(error)  # done: no error, even an earlier one
        if delay is not None:
            delivery.next_attempt_at = now + delay

    async def recover(self) -> int:
        """Every in-progress row not claimed through this object belongs to a crashed process.

        The journal has one serving process (`_serve_alone` sees to it), so at start-up that is
        every in-progress row.
        """
        self._serve_alone()
        return await self._back_to_pending("NOT IN")

    async def _back_to_pending(self, among: str) -> int:
        """In-progress rows whose ids are (`IN`) or are not (`NOT IN`) this object's claims."""
        mine = sorted(self._claimed, key=int)

        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "UPDATE deliveries SET state = 'pending', updated_at = ? WHERE state = 'in_progress'"
                f" AND id {among} ({','.join('?' * len(mine))})",
                (now, *mine),
            )
            return cursor.rowcount

        return await self._write(work)

    async def hand_back(self) -> int:
        """Not left to the next start: until then `deliveries list` would show them in progress,
        and the next start would report them as a crash's."""
        if not self._claimed:
            return 0
        handed = await self._back_to_pending("IN")
        self._claimed.clear()
        return handed

    def _serve_alone(self) -> None:
        """Hold `<journal>-serve.lock` (flock) while this object is open. A second `serve` on the
        same journal would take the first one's claims for a crashed process's and run them
        again, out of order. The kernel drops the lock when the process ends, SIGKILL included."""
        if self._serve_lock is not None:
            return
        lock = f"{os.path.realpath(self.path)}-serve.lock"  # beside the file a symbolic link names, as SQLite is
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise QueueUnavailable(f"journal {self.path}: cannot open {lock}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 20).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise QueueUnavailable(
                f"journal {self.path}: another process (pid {holder}) is serving from it; one serve per "
                "journal (several instances share the Redis queue)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._serve_lock = fd

    # ------------------------------------------------------------------ inspection and repair

    async def list(self, state: DeliveryState | None = None, limit: int = 100) -> list[Delivery]:
        if state is None:
            rows = await self._read(
                f"SELECT {COLUMNS} FROM deliveries ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._read(
                f"SELECT {COLUMNS} FROM deliveries WHERE state = ? ORDER BY id DESC LIMIT ?",
                (str(state), limit),
            )
        return [to_listed(row) for row in rows]

    async def get(self, id_or_delivery_id: str) -> Delivery | None:
        """A queue id first (digits), then the newest delivery with that delivery id."""
        found = await self._matches(id_or_delivery_id)
        return found[0] if found else None

    async def _matches(self, id_or_delivery_id: str) -> builtins.list[Delivery]:
        """The delivery with that queue id, then the newest with that delivery id (a sender's id
        may be digits too)."""
        key = str(id_or_delivery_id)
        rows = []
        if key.isascii() and key.isdigit() and int(key) < 2**63:  # SQLite's INTEGER
            rows += await self._read(f"SELECT {COLUMNS} FROM deliveries WHERE id = ?", (int(key),))
        rows += await self._read(
            f"SELECT {COLUMNS} FROM deliveries WHERE delivery_id = ? ORDER BY id DESC LIMIT 1",
            (key,),
        )
        return [to_listed(row) for row in rows]

    async def requeue(self, id_or_delivery_id: str, *, spare_superseded: bool = False) -> Requeued:
        """The first match (see `_matches`) that is dead or failed."""
        retryable = (DeliveryState.DEAD, DeliveryState.FAILED)
        found = next((d for d in await self._matches(id_or_delivery_id) if d.state in retryable), None)
        if found is None:
            return Requeued(0)
        return await self._requeue("id = ? AND state IN ('dead', 'failed')", (int(found.id),), spare_superseded)

    async def requeue_dead(self, *, spare_superseded: bool = False) -> Requeued:
        return await self._requeue("state = 'dead'", (), spare_superseded)

    async def superseded(self) -> dict[str, str]:
        return {str(dead): str(newer) for dead, newer in await self._read(SUPERSEDED)}

    async def _requeue(self, where: str, params: tuple[Any, ...], spare_superseded: bool) -> Requeued:
        """Back to pending with a fresh attempt budget; the old id keeps its place per key."""

        def work(conn: sqlite3.Connection, now: float) -> Requeued:
            # in the same transaction as the requeue: nothing can be applied in between
            newer = dict(conn.execute(SUPERSEDED).fetchall()) if spare_superseded else {}
            found = conn.execute(f"SELECT id, order_key, state FROM deliveries WHERE {where} ORDER BY id",
                                 params).fetchall()
            rows = [row for row in found if row[0] not in newer]
            for id_, order_key, state in rows:
                # a dead letter rejoins the unfinished deliveries of its key, maybe as the oldest
                if state == DeliveryState.DEAD:
                    _take_head(conn, id_, order_key)
                conn.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = NULL,"
                    " updated_at = ? WHERE id = ?",
                    (now, id_),
                )
            return Requeued(len(rows), {str(row[0]): str(newer[row[0]]) for row in found if row[0] in newer})

        return await self._write(work)

    async def purge(self, older_than_seconds: float) -> int:
        """A delivery received within the de-duplication window is kept whatever its age: its row
        is what answers a redelivery as a duplicate (Redis keeps that record apart)."""
        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "DELETE FROM deliveries WHERE state IN ('done', 'dead') AND updated_at < ? AND received_at < ?",
                (now - older_than_seconds, now - self.dedup_window_seconds),
            )
            return cursor.rowcount

        return await self._write(work)

    async def depth(self) -> dict[str, int]:
        counts = empty_depth()
        for state, count in await self._read(DEPTH):
            counts[state] = count
        return counts

    async def close(self) -> None:
        if self._conn is None:
            return
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        if self._syncer is not None:
            self._syncer.submit(self._checkpoints.close)  # on the thread that opened it
            self._syncer.shutdown(wait=True)
            self._syncer = None
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = None
        if self._wal is not None:
            os.close(self._wal)
            self._wal = None
        if self._serve_lock is not None:
            os.close(self._serve_lock)  # and with it the lock
            self._serve_lock = None


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:  # its rows may mean what this version does not know: left as they are
        raise sqlite3.DatabaseError(f"it was written by a newer ocean-hook (journal schema {version}; this one "
                                    f"knows {SCHEMA_VERSION}): upgrade ocean-hook")


class _Put:
    """One delivery to store (a `Work`). Dedup sees earlier puts of the same batch: they are in
    the same transaction."""

    def __init__(self, row: Row, dedup_window_seconds: float) -> None:
        self.row = row
        self.dedup_window_seconds = dedup_window_seconds

    def __call__(self, conn: sqlite3.Connection, now: float) -> PutResult:
        since = now - self.dedup_window_seconds
        params = dict(zip(ROW_FIELDS, self.row, strict=True), now=now, since=since)
        cursor = conn.execute(INSERT_UNLESS_DUPLICATE, params)
        if cursor.rowcount == 1:
            return PutResult(accepted=True, id=str(cursor.lastrowid))
        existing = conn.execute(
            "SELECT id FROM deliveries WHERE delivery_id = ? AND path = ? AND received_at >= ?"
            " ORDER BY id DESC LIMIT 1",
            (self.row[0], self.row[2], since),
        ).fetchone()
        return PutResult(accepted=False, id=str(existing[0]))


def _runs(works: list[Work[Any]]) -> Iterator[Work[Any] | list[_Put] | list[_Ack]]:
    """The works in order, consecutive puts (or acks) together; a lone put stays a work."""
    run: list[Any] = []
    for work in [*works, None]:
        if run and type(work) is type(run[0]):
            run.append(work)
            continue
        if len(run) == 1 and isinstance(run[0], _Put):
            yield run[0]
        elif run:
            yield run
        run = [work] if isinstance(work, _Put | _Ack) else []
        if not run and work is not None:
            yield work


class _Ack:
    """Ending a claim as done (a `Work`)."""

    def __init__(self, id_: int) -> None:
        self.id = id_

    def __call__(self, conn: sqlite3.Connection, now: float) -> float:
        return _ack_many(conn, now, [self])[0]


def _ack_many(conn: sqlite3.Connection, now: float, acks: list[_Ack]) -> list[float]:
    """Two statements for any number of acks: the next of each finished head's key leads."""
    ids = [ack.id for ack in acks]
    for start in range(0, len(ids), _INSERT_CHUNK):
        chunk = ids[start:start + _INSERT_CHUNK]
        _promote_next(conn, chunk)
        conn.execute(
            "UPDATE deliveries SET state = 'done', head = 0, attempts = attempts + 1, last_error = NULL, updated_at = ?"
            f" WHERE id IN ({','.join('?' * len(chunk))}) AND state = 'in_progress'",
            (now, *chunk),
        )
    return [now] * len(acks)


def _promote_next(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Those of `ids` that are in progress and lead their key are about to finish: the oldest
    unfinished delivery after each leads its key next (one of a key is in progress at a time)."""
    conn.execute(
        "UPDATE deliveries SET head = 1 WHERE id IN (SELECT (SELECT n.id FROM deliveries AS n"
        " INDEXED BY deliveries_unfinished WHERE n.order_key = f.order_key"
        f" AND n.state IN {UNFINISHED} AND n.id > f.id ORDER BY n.id LIMIT 1)"
        f" FROM deliveries AS f WHERE f.id IN ({','.join('?' * len(ids))}) AND f.state = 'in_progress'"
        " AND f.head = 1 AND f.order_key != '')",
        ids,
    )


#: rows per INSERT: 11 parameters each, well under SQLite's 32766
_INSERT_CHUNK = 256


def _insert_many(conn: sqlite3.Connection, since: float, now: float, puts: list[_Put]) -> list[PutResult]:
    """`_Put` after `_Put`, with the same results, in three statements per chunk.

    A delivery id journaled since `since`, or earlier in `puts`, is a duplicate; a delivery is
    the head of its key when no delivery of the key is unfinished and none came before it here.
    """
    results: list[PutResult] = []
    for start in range(0, len(puts), _INSERT_CHUNK):
        rows = [put.row for put in puts[start:start + _INSERT_CHUNK]]
        known = _journaled_ids(conn, since, {(row[0], row[2]) for row in rows if row[0]})
        waiting = _keys_with_unfinished(conn, {row[6] for row in rows if row[6]})
        fresh: list[tuple[Any, ...]] = []
        outcome: list[tuple[bool, Any]] = []  # (accepted, existing id or index into fresh)
        batch_ids: dict[tuple[str, str], int] = {}
        for row in rows:
            delivery_id, order_key, sender = row[0], row[6], (row[0], row[2])
            if sender in known:
                outcome.append((False, known[sender]))
                continue
            if sender in batch_ids:
                outcome.append((False, batch_ids[sender]))
                continue
            if delivery_id:
                batch_ids[sender] = len(fresh)
            head = order_key == "" or order_key not in waiting
            waiting.add(order_key)
            outcome.append((True, len(fresh)))
            fresh.append((*row, now, now, int(head)))
        first = _insert_rows(conn, fresh)
        for (accepted, ref), row in zip(outcome, rows, strict=True):
            if accepted or (row[0], row[2]) not in known:  # a new row, or a duplicate of one: its new id
                ref = first + ref
            results.append(PutResult(accepted=accepted, id=str(ref)))
    return results


def _journaled_ids(conn: sqlite3.Connection, since: float, senders: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(delivery id, path) -> the newest queue id of each journaled since `since`."""
    if not senders:
        return {}
    ids = {delivery_id for delivery_id, _ in senders}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT delivery_id, path, MAX(id) FROM deliveries WHERE delivery_id IN ({marks}) AND received_at >= ?"
        " GROUP BY delivery_id, path",
        (*ids, since),
    )
    return {(delivery_id, path): id_ for delivery_id, path, id_ in rows if (delivery_id, path) in senders}


def _keys_with_unfinished(conn: sqlite3.Connection, keys: set[str]) -> set[str]:
    if not keys:
        return set()
    values = ",".join(["(?)"] * len(keys))
    return {key for (key,) in conn.execute(
        f"WITH k(key) AS (VALUES {values}) SELECT key FROM k WHERE EXISTS (SELECT 1 FROM deliveries"
        f" INDEXED BY deliveries_unfinished WHERE order_key = k.key AND state IN {UNFINISHED})",
        tuple(keys),
    )}


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert in order; the id of the first. Ids of one statement's rows are consecutive: each
    new AUTOINCREMENT id is one more than the largest so far, and nothing else writes meanwhile."""
    if not rows:
        return 0
    values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)"] * len(rows))
    cursor = conn.execute(
        "INSERT INTO deliveries (delivery_id, method, path, headers, body, processors, order_key,"
        f" received_at, state, attempts, created_at, updated_at, head) VALUES {values}",
        [value for row in rows for value in row],
    )
    return int(cursor.lastrowid or 0) - len(rows) + 1


def _take_head(conn: sqlite3.Connection, id_: int, order_key: str) -> None:
    """Delivery `id_` (not unfinished yet) is about to be: is it now the oldest of its key?"""
    found = None if order_key == "" else conn.execute(FIRST_UNFINISHED, (order_key,)).fetchone()
    current = None if found is None else found[0]
    if current is not None and current < id_:
        return
    if current is not None:
        conn.execute("UPDATE deliveries SET head = 0 WHERE id = ?", (current,))
    conn.execute("UPDATE deliveries SET head = 1 WHERE id = ?", (id_,))


class DamagedRow(QueueUnavailable):
    """A journal row no ocean-hook wrote (edited by hand, say): one line, never a traceback."""


def to_delivery(row: Row) -> Delivery:
    try:
        return _delivery_of(row)
    except (ValueError, TypeError) as exc:  # a state no enum has, headers that are not JSON, ...
        raise DamagedRow(_damage(row, exc)) from None


def to_listed(row: Row) -> Delivery:
    """For `deliveries list` and `show`: a damaged row is shown with what can be read of it and
    the damage as its last error. The workers dead-letter such a row, and one row must not hide
    all the others from the operator who comes to look."""
    try:
        return _delivery_of(row)
    except (ValueError, TypeError) as exc:
        return _readable_part(row, _damage(row, exc))


def _damage(row: Row, exc: Exception) -> str:
    return f"journal row {row[0]} is damaged ({type(exc).__name__}: {exc}); it was changed outside ocean-hook"


def _readable_part(row: Row, damage: str) -> Delivery:
    (id_, delivery_id, method, path, headers, body, processors, order_key, state, attempts,
     _last_error, next_attempt_at, received_at, updated_at) = row  # fmt: skip

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    def number(value: Any) -> float | None:
        return value if isinstance(value, int | float) else None

    def decoded(decode: Callable[[Any], list[Any]], value: Any) -> list[Any]:
        try:
            return decode(value)
        except (ValueError, TypeError):
            return []

    return Delivery(
        id=str(id_),
        delivery_id=text(delivery_id),
        method=text(method),
        path=text(path),
        headers=decoded(decode_headers, headers),
        body=bytes(body) if isinstance(body, bytes | memoryview) else b"",
        processors=decoded(decode_processors, processors),
        order_key=text(order_key),
        state=DeliveryState(state) if state in ALL_STATES else DeliveryState.DEAD,  # never claimed again
        attempts=attempts if isinstance(attempts, int) else 0,
        last_error=damage,
        next_attempt_at=number(next_attempt_at),
        received_at=number(received_at) or 0.0,
        updated_at=number(updated_at),
    )


def _delivery_of(row: Row) -> Delivery:
    (id_, delivery_id, method, path, headers, body, processors, order_key, state, attempts,
     last_error, next_attempt_at, received_at, updated_at) = row  # fmt: skip
    return Delivery(
        id=str(id_),
        delivery_id=delivery_id,
        method=method,
        path=path,
        headers=decode_headers(headers),
        body=bytes(body),
        processors=decode_processors(processors),
        order_key=order_key,
        state=DeliveryState(state),
        attempts=attempts + (state == "in_progress"),  # the one under way counts; one cut short does not
        last_error=last_error,
        next_attempt_at=next_attempt_at,
        received_at=received_at,
        updated_at=updated_at,
    )
