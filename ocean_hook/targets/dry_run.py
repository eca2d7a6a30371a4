"""A target that writes nothing: for CI runs of a mapping and for `--dry-run`.

It still reads the current state from a real target (local catalog or Port) when given one,
so the diff it reports is the diff a real run would apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from ocean_hook.entity import Entity, EntityKey
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.targets.base import Target, WriteOutcome
from ocean_hook.targets.outcomes import as_key, outcome_key


class DryRunTarget(Target):
    name = "dry-run"

    def __init__(self, reader: Target | None = None) -> None:
        self.reader = reader
        #: every write asked for, in order: ("upsert", entity) or ("delete", key)
        self.recorded: list[tuple[str, Entity | EntityKey]] = []

    async def get_entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity]:
        if self.reader is None:
            return {}
        return await self.reader.get_entities(keys)

    async def upsert(self, entities: Sequence[Entity], flags: MappingFlags) -> list[WriteOutcome]:
        self.recorded += [("upsert", dict(entity)) for entity in entities]
        return [WriteOutcome(outcome_key(entity), ok=True) for entity in entities]

    async def delete(self, keys: Sequence[EntityKey], flags: MappingFlags) -> list[WriteOutcome]:
        self.recorded += [("delete", as_key(key)) for key in keys]
        return [WriteOutcome(as_key(key), ok=True) for key in keys]

    async def check_ready(self) -> None:
        if self.reader is not None:
            await self.reader.check_ready()

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
