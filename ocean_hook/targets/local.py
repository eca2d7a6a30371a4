"""The embedded catalog: one SQLite file, so everything runs with no Port account.

WAL mode lets `ocean-hook catalog list` read the file while `serve` writes it from another
process. Inside one process all calls share one connection; each write call is one
`BEGIN IMMEDIATE ... COMMIT` transaction, so a crash leaves either all of a call or none of it.
The methods are `async` only to satisfy `Target`: SQLite on a local disk is fast enough to run
in the event loop, and running it there keeps concurrent tasks from interleaving inside a write.
The exception is the WAL checkpoint, which syncs the disk: it runs on a helper thread every
CHECKPOINT_AFTER entity writes, and the next write waits for it (`checkpoints.py`). Commits do
not sync the disk either (`synchronous=NORMAL`): `serve` has the journal call `sync_writes` on
its own helper thread before each fsync of its WAL, so a delivery the journal marks done has its
entities on disk even across a power cut, for one more fsync per journal round.

Merge semantics are Port's (`diff.resulting_entity`), so the local catalog and Port hold the
same entity after the same upserts. An upsert that would not change the stored entity writes
nothing: `updated_at` moves only on real changes.

Deletes remove the entity alone, whatever `deleteDependentEntities` says. Port, with it, also
deletes the entities whose *required* relation points at the deleted one; which relations are
required, and which blueprint a relation points at, live in blueprint schemas the local catalog
does not have. Following every relation value that names the deleted identifier, as it once did,
deleted entities of other blueprints that merely shared an identifier, behind the back of the
plan every command reports (a dry run showed one delete, the real run made several).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocean_hook.checkpoints import Checkpoints
from ocean_hook.diff import resulting_entity
from ocean_hook.entity import (
    Entity,
    EntityKey,
    entity_key,
    is_search_query,
    mapped_fields,
    required_key,
    shape_problem,
)
from ocean_hook.errors import InputError
from ocean_hook.jsontext import same
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.sqlitefiles import is_busy, look_into, may_write, take_over, unwritable_note, wal_descriptor
from ocean_hook.targets.base import SEARCH_QUERY_ERROR, Target, TargetError, WriteOutcome
from ocean_hook.targets.outcomes import as_key, outcome_key

_CHUNK = 500  # well under SQLite's bound-parameter limit

#: how long a busy catalog is waited for, when opening it and by each write
BUSY_SECONDS = 5.0

#: entities written between two checkpoints: each writes about 6 pages, SQLite's own interval is 1,000
CHECKPOINT_AFTER = 200

log = logging.getLogger("ocean_hook.catalog")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    blueprint TEXT NOT NULL,
    identifier TEXT NOT NULL,
    entity TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (blueprint, identifier)
) WITHOUT ROWID;
"""


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _identifier_chunks(keys: Iterable[EntityKey]) -> Iterator[tuple[str, Sequence[str], str]]:
    """(blueprint, identifiers, their `?` marks) for `... blueprint = ? AND identifier IN (marks)`:
    the keys grouped by blueprint, each group in chunks under SQLite's parameter limit."""
    by_blueprint: dict[str, list[str]] = {}
    for blueprint, identifier in dict.fromkeys(keys):
        by_blueprint.setdefault(blueprint, []).append(identifier)
    for blueprint, identifiers in by_blueprint.items():
        for chunk in _chunks(identifiers):
            yield blueprint, chunk, ",".join("?" * len(chunk))


#: entities per write transaction. The catalog works on the event loop, where the listener
#: answers: a delivery of 100,000 items is written 500 at a time with the loop given back
#: between steps, not in one commit of seconds that every sender waits behind (a step that
#: fails leaves the ones before it written, and the retry writes them again, unchanged)
WRITE_STEP = 500


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class LocalCatalog(Target):
    name = "local"
    resolves_search_queries = False

    def __init__(self, path: str | Path, *, looking: bool = False) -> None:
        """`looking`: only reads will follow (`catalog list`, a dry run), which a catalog this
        user may not write allows."""
        self.path = Path(path)
        #: rows written (inserted, replaced or deleted) by this object: no-op upserts add nothing
        self.writes = 0
        self._lock = threading.Lock()  # one connection; safe even if a caller uses threads
        try:
            if looking and not may_write(self.path):
                self._db, self._wal = look_into(self.path, "entities", "a local catalog", check_same_thread=False), None
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db, self._wal = self._open()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise InputError(f"cannot open the local catalog: {exc}{unwritable_note(exc, self.path)}",
                             where=str(self.path)) from exc
        self._checkpoints = Checkpoints(self.path, every=CHECKPOINT_AFTER, what="local catalog", log=log)
        self._helper: ThreadPoolExecutor | None = None  # started by the first checkpoint
        self._checkpointing: Future[None] | None = None
        # write transactions committed, and of those, the ones fsynced; not `writes`, which a
        # transaction raises before it commits, while `sync_writes` may read it from another thread
        self._committed = 0
        self._synced = 0
        #: why the last write failed, until one succeeds (see check_ready)
        self.write_problem: str | None = None

    def _open(self) -> tuple[sqlite3.Connection, int | None]:
        """The connection, and a descriptor of its WAL. Switching a new file to WAL does not wait
        on SQLite's busy handler: processes opening one new catalog at once failed with "database
        is locked" in 3 to 21 of 120 opens (measured), so a busy open is tried again for a while."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                return self._connect()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def _connect(self) -> tuple[sqlite3.Connection, int | None]:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS)
        try:
            wal = take_over(db, "entities", "a local catalog")
            db.executescript(_SCHEMA)
            return db, wal_descriptor(self.path) if wal else None
        except BaseException:
            db.close()
            raise

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write step = one transaction = one commit; a busy database is worth a retry, and
        so is a full disk: the delivery waits in the journal, and `/readyz` says why meanwhile."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise TargetError(f"{self.path}: local catalog is busy: {exc}") from exc
            writes = self.writes
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                with suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._db.execute("ROLLBACK")
                self.writes = writes
                if isinstance(exc, sqlite3.Error):
                    self.write_problem = f"{self.path}: cannot write the local catalog: {exc}"
                    raise TargetError(self.write_problem) from exc
                raise
            self.write_problem = None
            wrote = self.writes - writes
            if wrote:
                self._committed += 1
            if self._wal is not None and self._checkpoints.wrote(wrote):
                self._checkpoint_later()

    def sync_writes(self) -> None:
        """Any thread: whatever was committed before the call is on disk when it returns."""
        committed = self._committed
        if self._wal is None or committed == self._synced:
            return
        try:
            os.fsync(self._wal)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot sync the local catalog {self.path}: {exc.strerror}") from exc
        self._synced = committed

    def _checkpoint_later(self) -> None:
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="ocean-hook-catalog")
        self._checkpointing = self._helper.submit(self._checkpoints.run)

    async def _after_checkpoint(self) -> None:
        """A write waits for a running checkpoint (the workers wait, not the event loop), so the
        checkpoint copies the whole WAL and the next commit starts the WAL over."""
        running = self._checkpointing
        if running is not None and not running.done():
            await asyncio.wrap_future(running)

    def _select(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- rows ---------------------------------------------------------------------------------

    def _load(self, db: sqlite3.Connection, key: EntityKey) -> Entity | None:
        row = db.execute("SELECT entity FROM entities WHERE blueprint = ? AND identifier = ?", key).fetchone()
        return None if row is None else self._decode(key, row[0])

    def _decode(self, key: EntityKey, text: Any) -> Entity:
        """A row no ocean-hook wrote (edited by hand, say) is one line naming it, never a traceback."""
        try:
            entity = json.loads(text)
        except (ValueError, TypeError):
            entity = None
        if not isinstance(entity, dict):
            raise TargetError(f"{self.path}: the row of {key[0]}/{key[1]} is damaged (not an entity in JSON); it "
                              "was changed outside ocean-hook", retryable=False)
        return entity

    def _store(self, db: sqlite3.Connection, key: EntityKey, entity: Entity) -> None:
        text = json.dumps(entity, ensure_ascii=False, separators=(",", ":"))
        db.execute(
            "INSERT OR REPLACE INTO entities (blueprint, identifier, entity, updated_at) VALUES (?, ?, ?, ?)",
            (*key, text, _now()),
        )
        self.writes += 1

    def _remove(self, db: sqlite3.Connection, key: EntityKey) -> None:
        db.execute("DELETE FROM entities WHERE blueprint = ? AND identifier = ?", key)
        self.writes += 1

    def _existing(self, db: sqlite3.Connection, keys: Iterable[EntityKey]) -> set[EntityKey]:
        found: set[EntityKey] = set()
        for blueprint, chunk, marks in _identifier_chunks(keys):
            rows = db.execute(
                f"SELECT blueprint, identifier FROM entities WHERE blueprint = ? AND identifier IN ({marks})",
                (blueprint, *chunk),
            ).fetchall()
            found.update(rows)
        return found

    # -- Target -------------------------------------------------------------------------------

    async def check_ready(self) -> None:
        """Not ready while the last write failed (a full disk, say): nothing is lost, but nothing
        is applied either, and whoever routes traffic or pages should know."""
        if self.write_problem is not None:
            raise TargetError(self.write_problem)

    async def get_entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity]:
        found: dict[EntityKey, Entity] = {}
        for n, (blueprint, chunk, marks) in enumerate(_identifier_chunks(keys)):
            if n:
                await asyncio.sleep(0)  # between chunks, the listener answers (see WRITE_STEP)
            rows = self._select(
                f"SELECT identifier, entity FROM entities WHERE blueprint = ? AND identifier IN ({marks})",
                (blueprint, *chunk),
            )
            found.update({(blueprint, ident): self._decode((blueprint, ident), text) for ident, text in rows})
        return found

    async def upsert(self, entities: Sequence[Entity], flags: MappingFlags) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        for n, step in enumerate(_chunks(entities, WRITE_STEP)):
            await self._between_steps(n)
            with self._transaction() as db:
                outcomes += [self._upsert_one(db, e, flags.enable_merge_entity) for e in step]
        return outcomes

    async def _between_steps(self, n: int) -> None:
        if n:
            await asyncio.sleep(0)
        await self._after_checkpoint()

    def _upsert_one(self, db: sqlite3.Connection, entity: Entity, merge: bool) -> WriteOutcome:
        key = entity_key(entity)
        if key is None:
            error = (
                SEARCH_QUERY_ERROR
                if is_search_query(entity.get("identifier"))
                else "an entity needs a string 'identifier' and 'blueprint'"
            )
            return WriteOutcome(outcome_key(entity), ok=False, error=error, retryable=False)
        current = self._load(db, key)
        after = resulting_entity(current, entity, merge=merge)
        if current is None or not same(after, current):
            self._store(db, key, after)
        return WriteOutcome(key, ok=True)

    async def delete(self, keys: Sequence[EntityKey], flags: MappingFlags) -> list[WriteOutcome]:
        for n, step in enumerate(_chunks(keys, WRITE_STEP)):
            await self._between_steps(n)
            with self._transaction() as db:
                for key in sorted(self._existing(db, step)):
                    self._remove(db, key)
        return [WriteOutcome(as_key(key), ok=True) for key in keys]

    async def close(self) -> None:
        if self._helper is not None:
            self._helper.submit(self._checkpoints.close)  # on the thread that opened it
            self._helper.shutdown(wait=True)
            self._helper = None
        with self._lock:
            self._db.close()
            if self._wal is not None:
                os.close(self._wal)
                self._wal = None

    # -- CLI ----------------------------------------------------------------------------------

    def list_entities(self, blueprint: str | None = None) -> list[Entity]:
        """Entities ordered by blueprint then identifier; all of them when `blueprint` is None."""
        if blueprint is None:
            rows = self._select("SELECT blueprint, identifier, entity FROM entities ORDER BY blueprint, identifier")
        else:
            rows = self._select("SELECT blueprint, identifier, entity FROM entities WHERE blueprint = ?"
                                " ORDER BY identifier", (blueprint,))
        return [self._decode((bp, ident), text) for bp, ident, text in rows]

    def export(self) -> list[Entity]:
        return self.list_entities(None)

    def import_entities(self, entities: Iterable[Entity], *, source: str | None = None) -> int:
        """Store each entity (replacing one with the same key), all or nothing; an error names
        `source`, the file they came from. How many entities the catalog now holds from it (an
        entity given twice is stored once: the later one). Only what a mapping can write is
        kept, as `test-mapping --state` reads an export: Port's own fields (`createdAt`,
        `$datasource`...) made every diff against the catalog say they would go."""
        entities = list(entities)
        keys = [required_key(entity, n, where=source) for n, entity in enumerate(entities)]
        for n, entity in enumerate(entities):
            if problem := shape_problem(entity):
                raise InputError(f"entity #{n} ({entity['blueprint']}/{entity['identifier']}): {problem}", where=source)
        with self._transaction() as db:
            for key, entity in zip(keys, entities, strict=True):
                self._store(db, key, mapped_fields(entity))
        return len(set(keys))
