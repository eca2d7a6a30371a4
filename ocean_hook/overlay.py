"""What a run has changed so far, so that what comes later is diffed against it.

`test-mapping` maps a file whose later items update entities its earlier items created; a dry
run (`replay --dry-run`, `serve --target dry-run`) plans deliveries that update what the ones
before would have written; `pipeline.process` diffs each resource of a delivery against what
the resources before it planned. All read the state through an `Overlay`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ocean_hook.entity import Entity, EntityKey

#: current entities for keys: from a --state file, the configured target, ...
StateLookup = Callable[[list[EntityKey]], Awaitable[Mapping[EntityKey, Entity]]]


class Overlay:
    """What this run has already changed (None: deleted), so a later item diffs against it.

    The newest `memory` entities stay in a dict; older ones move to a private temporary SQLite
    file, so a run over any number of items holds a bounded number of entities in memory.
    """

    def __init__(self, memory: int = 5000) -> None:
        self.memory = memory
        self._recent: dict[EntityKey, Entity | None] = {}
        self._db: sqlite3.Connection | None = None

    def get(self, key: EntityKey) -> tuple[bool, Entity | None]:
        """(known, entity): known is False for an entity this run has not touched."""
        if key in self._recent:
            return True, self._recent[key]
        if self._db is None:
            return False, None
        row = self._db.execute("SELECT entity FROM overlay WHERE key = ?", (json.dumps(key),)).fetchone()
        return (False, None) if row is None else (True, None if row[0] is None else json.loads(row[0]))

    def set(self, key: EntityKey, entity: Entity | None) -> None:
        self._recent.pop(key, None)
        self._recent[key] = entity
        if len(self._recent) > 2 * self.memory:
            self._spill()

    def _spill(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("")  # "": a private temporary file, removed on close
            self._db.execute("CREATE TABLE overlay (key TEXT PRIMARY KEY, entity TEXT)")
        old = list(self._recent.items())[: -self.memory]
        self._db.executemany(
            "INSERT OR REPLACE INTO overlay VALUES (?, ?)",
            [(json.dumps(k), None if v is None else json.dumps(v)) for k, v in old],
        )
        for key, _ in old:
            del self._recent[key]

    async def over(self, keys: Sequence[EntityKey], lookup: StateLookup) -> dict[EntityKey, Entity]:
        """The entities of `keys` as this run left them, else as `lookup` (the state) has them."""
        current: dict[EntityKey, Entity] = {}
        fresh: list[EntityKey] = []
        for key in keys:
            known, entity = self.get(key)
            if not known:
                fresh.append(key)
            elif entity is not None:
                current[key] = entity
        if fresh:
            current.update(await lookup(fresh))
        return current

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
