"""A target that writes nothing: for CI runs of a mapping and for `--dry-run`.

It still reads the current state from a real target (local catalog or Port) when given one, and
remembers what each write asked of it would have left (an `Overlay`), so the diff it reports
for each delivery is the diff a real run would apply after the ones before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ocean_hook.diff import resulting_entity
from ocean_hook.entity import Entity, EntityKey, entity_key
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.overlay import Overlay
from ocean_hook.targets.base import Target, WriteOutcome
from ocean_hook.targets.outcomes import as_key, outcome_key


class DryRunTarget(Target):
    name = "dry-run"

    def __init__(self, reader: Target | None = None, *, resolves_search_queries: bool | None = None) -> None:
        """`resolves_search_queries`: as the target a real run would write to (default: the
        reader's; with none, yes)."""
        self.reader = reader
        self.planned = Overlay()
        if resolves_search_queries is None:
            resolves_search_queries = reader.resolves_search_queries if reader is not None else True
        self.resolves_search_queries = resolves_search_queries

    async def get_entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity]:
        return await self.planned.over(keys, self._read)

    async def _read(self, keys: list[EntityKey]) -> dict[EntityKey, Entity]:
        return {} if self.reader is None else await self.reader.get_entities(keys)

    async def upsert(self, entities: Sequence[Entity], flags: MappingFlags) -> list[WriteOutcome]:
        """As a real write leaves them (merged or replaced). An identifier that is a search query
        is Port's to resolve: nothing is known of which entity it would change."""
        keyed = [(key, entity) for entity in entities if (key := entity_key(entity)) is not None]
        current = await self.get_entities([key for key, _ in keyed])
        for key, entity in keyed:
            current[key] = resulting_entity(current.get(key), entity, merge=flags.enable_merge_entity)
            self.planned.set(key, current[key])
        return [WriteOutcome(outcome_key(entity), ok=True) for entity in entities]

    async def delete(self, keys: Sequence[EntityKey], flags: MappingFlags) -> list[WriteOutcome]:
        """Entities that relate to a deleted one are not followed (`delete_dependent_entities`):
        a dry run does not know them all."""
        for key in keys:
            self.planned.set(as_key(key), None)
        return [WriteOutcome(as_key(key), ok=True) for key in keys]

    async def check_ready(self) -> None:
        if self.reader is not None:
            await self.reader.check_ready()

    async def close(self) -> None:
        self.planned.close()
        if self.reader is not None:
            await self.reader.close()
