"""The diff stage: what applying desired entities would change in the current catalog.

Unchanged entities produce `unchanged` changes, which no target ever writes: a storm of no-op
webhooks costs reads, not writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ocean_hook.entity import ENTITY_FIELDS, Entity, EntityKey, entity_key, is_search_query
from ocean_hook.jsontext import same

Action = Literal["create", "update", "delete", "unchanged"]
ACTIONS: tuple[Action, ...] = ("create", "update", "delete", "unchanged")
_NESTED = ("properties", "relations")


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after}


@dataclass
class Change:
    action: Action
    blueprint: str
    identifier: Any  # a string, or a search query Port resolves
    before: Entity | None
    after: Entity | None
    fields: list[FieldChange] = field(default_factory=list)
    kind: str = ""
    #: what the target is asked to write (the mapped entity; Port merges it itself)
    desired: Entity | None = None

    @property
    def writes(self) -> bool:
        return self.action != "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "kind": self.kind,
            "blueprint": self.blueprint,
            "identifier": self.identifier,
            "before": self.before,
            "after": self.after,
            "fields": [f.to_json() for f in self.fields],
        }


def merge_entity(current: Entity, desired: Entity) -> Entity:
    """Port's upsert with merge: properties and relations merge key by key, the rest replaces."""
    out = dict(current)
    for key, value in desired.items():
        if key in _NESTED and isinstance(value, dict) and isinstance(current.get(key), dict):
            out[key] = {**current[key], **value}
        else:
            out[key] = value
    return out


def resulting_entity(current: Entity | None, desired: Entity, *, merge: bool) -> Entity:
    """What the catalog holds after the upsert of `desired` onto `current`."""
    if current is None or not merge:
        return dict(desired)
    return merge_entity(current, desired)


def field_changes(before: Entity, after: Entity, *, every: bool = False) -> list[FieldChange]:
    """Field-level differences, `properties.status`-style paths, in Port's field order.

    A missing field and a null one are the same to Port, so `null → null` is no change. With
    `every`, all properties and relations of `after` are listed, nulls too (what a create writes).
    """
    changes: list[FieldChange] = []
    keys = [k for k in ENTITY_FIELDS if k in before or k in after]
    keys += sorted(k for k in {*before, *after} if k not in ENTITY_FIELDS)
    for key in keys:
        old, new = before.get(key), after.get(key)
        if key in _NESTED and isinstance(old or {}, dict) and isinstance(new or {}, dict):
            old_map, new_map = old or {}, new or {}
            for name in sorted({*old_map, *new_map}):
                if not same(old_map.get(name), new_map.get(name)) or (every and name in new_map):
                    changes.append(FieldChange(f"{key}.{name}", old_map.get(name), new_map.get(name)))
        elif key == "team" and same(_teams(old), _teams(new)):
            continue
        elif not same(old, new):
            changes.append(FieldChange(key, old, new))
    return changes


def _teams(value: Any) -> Any:
    """Port stores `team` as a list of names, `[]` for none, and takes one name as a string: a
    mapping's `"platform"` against a stored `["platform"]`, or `[]` against none, is no change."""
    if value is None or value == []:
        return frozenset()
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return frozenset(value)
    return value


def plan_upsert(desired: Entity, current: Entity | None, *, merge: bool, kind: str = "") -> Change:
    blueprint = str(desired.get("blueprint"))
    identifier = desired.get("identifier")
    if is_search_query(identifier):
        # Port resolves the identifier itself: pass the entity through, do not diff it.
        return Change("update", blueprint, identifier, None, desired, [], kind, desired)
    if current is None:
        fields = field_changes({}, desired, every=True)
        return Change("create", blueprint, identifier, None, desired, fields, kind, desired)
    after = resulting_entity(current, desired, merge=merge)
    fields = field_changes(current, after)
    action: Action = "update" if fields else "unchanged"
    return Change(action, blueprint, identifier, current, after, fields, kind, desired)


def plan_delete(entity: Entity, current: Entity | None, *, kind: str = "") -> Change | None:
    """A delete only for an entity the catalog actually holds."""
    if current is None:
        return None
    return Change("delete", current["blueprint"], current["identifier"], current, None, [], kind)


def plan_changes(
    upserts: Sequence[Entity],
    deletes: Iterable[Entity],
    current: Mapping[EntityKey, Entity],
    *,
    merge: bool,
    kind: str = "",
) -> list[Change]:
    """Changes for one batch, upserts first then deletes, each entity at most once.

    Several upserts of the same entity in one batch are applied in order (the later wins),
    and a delete of an entity the batch also upserts wins only if it comes after it: callers
    pass deletes that belong after the upserts.
    """
    state: dict[EntityKey, Entity | None] = dict(current)
    planned: dict[EntityKey | int, Change] = {}
    for n, desired in enumerate(upserts):
        key = entity_key(desired)
        if key is None:
            planned[n] = plan_upsert(desired, None, merge=merge, kind=kind)
            continue
        change = plan_upsert(desired, state.get(key), merge=merge, kind=kind)
        if key in planned and change.after is not None:
            # a second upsert in the batch: report against the catalog before the batch
            change = plan_upsert(change.after, current.get(key), merge=False, kind=kind)
        state[key] = change.after
        planned[key] = change
    for entity in deletes:
        key = entity_key(entity)
        if key is None:
            continue
        if state.get(key) is None:
            continue
        planned.pop(key, None)  # created and deleted in one batch: no change at all
        gone = plan_delete(entity, current.get(key), kind=kind)
        if gone is not None:
            planned[key] = gone
        state[key] = None
    return list(planned.values())


def summarize(changes: Iterable[Change]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(ACTIONS, 0)
    for change in changes:
        counts[change.action] += 1
    return counts
