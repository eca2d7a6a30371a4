"""`test-mapping`'s core: stream items through map and diff, and keep what the report needs.

The JSON document built here is the stable machine format (documented in the README):
    {"entities": [{"kind", "entity", "misconfigurations"}],
     "changes": [{"action", "kind", "blueprint", "identifier", "before", "after", "fields"}],
     "summary": {"create", "update", "delete", "unchanged", "filtered", "skipped", "misconfigured",
                 "errors"},
     "errors": [...]}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ocean_hook.diff import ACTIONS, Change
from ocean_hook.entity import Entity, EntityKey
from ocean_hook.mapping.engine import MappedEntity, ResourceMapper
from ocean_hook.mapping.misconfigured import Misconfigurations
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.overlay import Overlay, StateLookup
from ocean_hook.pipeline import keep_what_another_resource_maps, map_raw, plan
from ocean_hook.processors.base import RawResults

BATCH = 1000
#: errors kept when entities and changes are not (`keep=False`): all are counted
MAX_ERRORS = 1000


def state_lookup(state: Mapping[EntityKey, Entity]) -> StateLookup:
    async def lookup(keys: list[EntityKey]) -> Mapping[EntityKey, Entity]:
        return {k: state[k] for k in keys if k in state}

    return lookup


@dataclass
class MappingReport:
    entities: list[MappedEntity] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (*ACTIONS, "filtered", "skipped", "misconfigured", "errors"), 0))
    errors: list[str] = field(default_factory=list)
    items: int = 0
    misconfigured: Misconfigurations = field(default_factory=Misconfigurations)

    def to_json(self) -> dict[str, Any]:
        return {
            "entities": [m.to_json() for m in self.entities],
            "changes": [c.to_json() for c in self.changes],
            "summary": dict(self.counts),
            "errors": list(self.errors),
        }


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


async def build_report(
    mappers: list[ResourceMapper],
    items: Iterable[Any],
    lookup: StateLookup,
    flags: MappingFlags,
    *,
    on_batch: Callable[[int, list[Change], list[MappedEntity]], None] | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    keep: bool = True,
) -> MappingReport:
    """Map every item with every mapper and diff the results against the state.

    Entities changed by an earlier batch are diffed against their new state (an overlay), so a
    file that updates the same entity twice reports the second change correctly. With
    `keep=False`, entities and changes are handed to `on_batch` and not kept (bounded memory).
    """
    report = MappingReport()
    overlay = Overlay()
    try:
        for chunk in _batches(items, BATCH):
            start = report.items
            if on_chunk is not None:  # (index of its first item, counted from 0, how many) before mapping it
                on_chunk(start, len(chunk))
            report.items += len(chunk)
            batch_changes: list[Change] = []
            batch_entities: list[MappedEntity] = []
            unnamed: list[MappedEntity] = []  # counted after the named: an example names an entity
            batches = [map_raw(mapper, RawResults(updated=chunk), start=start) for mapper in mappers]
            keep_what_another_resource_maps(batches)
            for batch in batches:
                changes = plan(batch, await overlay.over(batch.keys(), lookup), flags)
                for change in changes:
                    if change.writes and isinstance(change.identifier, str):
                        overlay.set((change.blueprint, change.identifier), change.after)
                report.counts["filtered"] += batch.result.filtered
                report.counts["skipped"] += batch.result.skipped
                errors = batch.result.errors
                report.counts["errors"] += len(errors)
                report.errors += errors if keep else errors[: max(0, MAX_ERRORS - len(report.errors))]
                batch_entities += batch.result.passed
                batch_changes += changes
                unnamed += batch.result.unnamed
            report.misconfigured.add(batch_entities)
            report.misconfigured.add(unnamed)
            report.counts["misconfigured"] = report.misconfigured.entities
            for change in batch_changes:
                report.counts[change.action] += 1
            if keep:
                report.entities += batch_entities
                report.changes += batch_changes
            if on_batch is not None:
                on_batch(report.items, batch_changes, batch_entities)
    finally:
        overlay.close()
    return report
