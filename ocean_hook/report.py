"""`test-mapping`'s core: stream items through map and diff, and keep what the report needs.

The JSON document built here is the stable machine format (documented in the README):
    {"entities": [{"kind", "entity", "misconfigurations"}],
     "changes": [{"action", "kind", "blueprint", "identifier", "before", "after", "fields"}],
     "summary": {"create", "update", "delete", "unchanged", "filtered", "skipped", "misconfigured",
                 "errors"},
     "errors": [...]}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ocean_hook.diff import ACTIONS, Change
from ocean_hook.entity import Entity, EntityKey
from ocean_hook.mapping.engine import MappedEntity, ResourceMapper
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.pipeline import map_raw, plan
from ocean_hook.processors.base import RawResults

BATCH = 1000

#: current entities for keys: from a --state file, or read-only from the configured target
StateLookup = Callable[[list[EntityKey]], Awaitable[Mapping[EntityKey, Entity]]]


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
    keep: bool = True,
) -> MappingReport:
    """Map every item with every mapper and diff the results against the state.

    Entities changed by an earlier batch are diffed against their new state (an overlay), so a
    file that updates the same entity twice reports the second change correctly. With
    `keep=False`, entities and changes are handed to `on_batch` and not kept (bounded memory).
    """
    report = MappingReport()
    overlay: dict[EntityKey, Entity | None] = {}
    for chunk in _batches(items, BATCH):
        start = report.items
        report.items += len(chunk)
        batch_changes: list[Change] = []
        batch_entities: list[MappedEntity] = []
        for mapper in mappers:
            batch = map_raw(mapper, RawResults(updated=chunk), start=start)
            keys = batch.keys()
            fresh = [k for k in keys if k not in overlay]
            current: dict[EntityKey, Entity] = dict(await lookup(fresh)) if fresh else {}
            current.update({k: v for k, v in overlay.items() if k in keys and v is not None})
            for k in keys:
                if overlay.get(k, 0) is None:
                    current.pop(k, None)
            changes = plan(batch, current, flags)
            for change in changes:
                if change.writes and isinstance(change.identifier, str):
                    overlay[(change.blueprint, change.identifier)] = change.after
            report.counts["filtered"] += batch.result.filtered
            report.counts["skipped"] += batch.result.skipped
            report.errors += batch.result.errors
            batch_entities += batch.result.passed
            report.counts["misconfigured"] += sum(1 for m in batch.result.passed if m.misconfigurations)
            batch_changes += changes
        for change in batch_changes:
            report.counts[change.action] += 1
        if keep:
            report.entities += batch_entities
            report.changes += batch_changes
        if on_batch is not None:
            on_batch(report.items, batch_changes, batch_entities)
    report.counts["errors"] = len(report.errors)
    return report
