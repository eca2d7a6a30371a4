"""The embedded journal: one SQLite file in the state directory.

The promise is that a 2xx means the delivery is on disk, so the file runs in WAL mode with
`synchronous=FULL` and `put` returns only after its transaction committed. An fsync per request
would cap the listener (and the workers' acks) at the disk's fsync rate, hence *group commit*:
every write (put, claim, ack, retry, ...) queues up while the previous transaction is being
written, and the single writer then runs all of them in one transaction (one fsync) before
resolving each caller's future. `commits` counts those transactions.

All SQLite work runs on one dedicated thread that owns the only connection, so the event loop is
never blocked by an fsync and no connection is ever shared between threads.

Ordering: among unfinished deliveries (pending, in progress, failed) with the same non-empty
`order_key`, only the oldest is claimable, and only while none with that key is in progress.
Done and dead deliveries do not count, so a dead letter never blocks its key. An empty order key
means "no ordering": such deliveries are claimed independently.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ocean_hook.queue.base import Delivery, DeliveryState, PutResult, Queue, QueueUnavailable
from ocean_hook.queue.codec import (
    clip_error,
    decode_headers,
    decode_processors,
    empty_depth,
    encode_headers,
    encode_processors,
)

T = TypeVar("T")

SCHEMA_VERSION = 1

# AUTOINCREMENT: ids are shown to users (`deliveries requeue 42`), so a purged id is never reused.
SCHEMA = """
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
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_delivery_id ON deliveries (delivery_id, received_at);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (order_key, state, id);
CREATE INDEX IF NOT EXISTS deliveries_unfinished ON deliveries (order_key, id, state)
    WHERE state IN ('pending', 'in_progress', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_updated ON deliveries (state, updated_at);
"""

# The head of a key is its oldest unfinished delivery; it may run only if no delivery of that
# key is in progress (a requeued dead letter can be older than one in progress).
CLAIMABLE = """
SELECT id FROM (
    SELECT d.id FROM (
        SELECT MIN(id) AS id FROM deliveries INDEXED BY deliveries_unfinished
        WHERE state IN ('pending', 'in_progress', 'failed') AND order_key != ''
        GROUP BY order_key HAVING SUM(state = 'in_progress') = 0) AS head
    JOIN deliveries AS d ON d.id = head.id
    WHERE d.state = 'pending' OR (d.state = 'failed' AND d.next_attempt_at <= :now))
UNION ALL
SELECT id FROM (
    SELECT id FROM deliveries WHERE order_key = '' AND state = 'pending' ORDER BY id LIMIT :limit)
UNION ALL
SELECT id FROM deliveries WHERE order_key = '' AND state = 'failed' AND next_attempt_at <= :now
ORDER BY 1
LIMIT :limit
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
    ) -> None:
        self.path = Path(path)
        self.dedup_window_seconds = dedup_window_seconds
        self.clock = clock
        self.commits = 0
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        self._pending: list[tuple[Work[Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._claimed: set[str] = set()  # ids this object handed to workers and not yet ended

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        dedup_window_seconds: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> SqliteJournal:
        journal = cls(path, dedup_window_seconds=dedup_window_seconds, clock=clock)
        journal._executor = ThreadPoolExecutor(1, thread_name_prefix="ocean-hook-journal")
        try:
            await journal._call(journal._connect)
        except QueueUnavailable:
            journal._executor.shutdown(wait=False)
            journal._executor = None
            raise
        return journal

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ thread plumbing

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the journal thread; any SQLite error becomes QueueUnavailable."""
        if self._executor is None:
            raise QueueUnavailable(f"journal {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._guarded, fn, *args))

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as exc:
            raise QueueUnavailable(f"journal {self.path}: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn

    def _commit_batch(self, works: list[Work[Any]]) -> list[Any]:
        """Run every queued write in one IMMEDIATE transaction: one commit, one fsync."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("journal is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self.clock()
            results = [work(conn, now) for work in works]
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return results

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        def query() -> list[Row]:
            assert self._conn is not None
            return self._conn.execute(sql, params).fetchall()

        return await self._call(query)

    # ------------------------------------------------------------------ group commit

    async def _write(self, work: Work[T]) -> T:
        """Queue `work(conn, now)` for the writer; return once its transaction has committed."""
        if self._executor is None:
            raise QueueUnavailable(f"journal {self.path} is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """The single writer: each round commits everything that queued up during the last."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._call(self._commit_batch, [work for work, _ in batch])
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
        return await self._write(partial(self._insert, row))

    def _insert(self, row: Row, conn: sqlite3.Connection, now: float) -> PutResult:
        """Dedup sees earlier rows of the same batch: they are in the same transaction."""
        delivery_id = row[0]
        if delivery_id:
            existing = conn.execute(
                "SELECT id FROM deliveries WHERE delivery_id = ? AND received_at >= ?"
                " ORDER BY id DESC LIMIT 1",
                (delivery_id, now - self.dedup_window_seconds),
            ).fetchone()
            if existing:
                return PutResult(accepted=False, id=str(existing[0]))
        cursor = conn.execute(
            "INSERT INTO deliveries (delivery_id, method, path, headers, body, processors,"
            " order_key, received_at, state, attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (*row, now, now),
        )
        return PutResult(accepted=True, id=str(cursor.lastrowid))

    # ------------------------------------------------------------------ workers

    async def claim(self, limit: int) -> list[Delivery]:
        def work(conn: sqlite3.Connection, now: float) -> list[Delivery]:
            ids = [r[0] for r in conn.execute(CLAIMABLE, {"now": now, "limit": limit})]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            conn.execute(
                "UPDATE deliveries SET state = 'in_progress', attempts = attempts + 1,"
                f" updated_at = ? WHERE id IN ({marks})",
                (now, *ids),
            )
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM deliveries WHERE id IN ({marks}) ORDER BY id", ids
            )
            return [to_delivery(row) for row in rows]

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
            due = None if delay is None else now + delay
            if state is DeliveryState.DONE:
                conn.execute(
                    "UPDATE deliveries SET state = 'done', updated_at = ?"
                    " WHERE id = ? AND state = 'in_progress'",
                    (now, int(delivery.id)),
                )
            else:
                conn.execute(
                    "UPDATE deliveries SET state = ?, last_error = ?, next_attempt_at = ?,"
                    " updated_at = ? WHERE id = ? AND state = 'in_progress'",
                    (str(state), clip_error(error or ""), due, now, int(delivery.id)),
                )
            return now

        now = await self._write(work)
        self._claimed.discard(delivery.id)
        delivery.state = state
        delivery.updated_at = now
        if error is not None:
            delivery.last_error = clip_error(error)
        if delay is not None:
            delivery.next_attempt_at = now + delay

    async def recover(self) -> int:
        """Every in-progress row not claimed through this object belongs to a crashed process.

        The journal has one serving process, so at start-up that is every in-progress row.
        """
        mine = sorted(self._claimed, key=int)

        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "UPDATE deliveries SET state = 'pending', updated_at = ? WHERE state = 'in_progress'"
                f" AND id NOT IN ({','.join('?' * len(mine))})",
                (now, *mine),
            )
            return cursor.rowcount

        return await self._write(work)

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
        return [to_delivery(row) for row in rows]

    async def get(self, id_or_delivery_id: str) -> Delivery | None:
        """A queue id first (digits), then the newest delivery with that delivery id."""
        key = str(id_or_delivery_id)
        if key.isdigit():
            rows = await self._read(f"SELECT {COLUMNS} FROM deliveries WHERE id = ?", (int(key),))
            if rows:
                return to_delivery(rows[0])
        rows = await self._read(
            f"SELECT {COLUMNS} FROM deliveries WHERE delivery_id = ? ORDER BY id DESC LIMIT 1",
            (key,),
        )
        return to_delivery(rows[0]) if rows else None

    async def requeue(self, id_or_delivery_id: str) -> bool:
        found = await self.get(id_or_delivery_id)
        if found is None:
            return False
        return await self._requeue("id = ? AND state IN ('dead', 'failed')", (int(found.id),)) == 1

    async def requeue_dead(self) -> int:
        return await self._requeue("state = 'dead'", ())

    async def _requeue(self, where: str, params: tuple[Any, ...]) -> int:
        """Back to pending with a fresh attempt budget; the old id keeps its place per key."""

        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = NULL,"
                f" updated_at = ? WHERE {where}",
                (now, *params),
            )
            return cursor.rowcount

        return await self._write(work)

    async def purge(self, older_than_seconds: float) -> int:
        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "DELETE FROM deliveries WHERE state IN ('done', 'dead') AND updated_at < ?",
                (now - older_than_seconds,),
            )
            return cursor.rowcount

        return await self._write(work)

    async def depth(self) -> dict[str, int]:
        counts = empty_depth()
        for state, count in await self._read("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
            counts[state] = count
        return counts

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        with contextlib.suppress(QueueUnavailable):
            await self._call(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def to_delivery(row: Row) -> Delivery:
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
        attempts=attempts,
        last_error=last_error,
        next_attempt_at=next_attempt_at,
        received_at=received_at,
        updated_at=updated_at,
    )
