"""Port entities as plain dicts, and the key that names one in a catalog."""

from __future__ import annotations

from typing import Any

from ocean_hook.errors import InputError, quoted

Entity = dict[str, Any]
EntityKey = tuple[str, str]  # (blueprint, identifier)

#: Entity fields in the order Port documents them; diffs and renderings follow it.
ENTITY_FIELDS = ("identifier", "title", "blueprint", "icon", "team", "properties", "relations")


def mapped_fields(entity: Entity) -> Entity:
    """Only what a mapping sets: Port's bookkeeping (`createdAt`, `$datasource`, ...) and the
    empty values it fills in (`team: []`, `icon: null`) would otherwise diff as changes."""
    return {k: v for k, v in entity.items() if k in ENTITY_FIELDS and v is not None and not (k == "team" and v == [])}


def shape_problem(entity: Entity) -> str | None:
    """What Port would refuse in an entity's fields besides its key, or None."""
    for name, kind, what in (("title", str, "a string"), ("icon", str, "a string"),
                             ("properties", dict, "an object"), ("relations", dict, "an object")):
        if entity.get(name) is not None and not isinstance(entity[name], kind):
            return f"'{name}' must be {what}, got {quoted(entity[name])}"
    return None


def is_search_query(value: Any) -> bool:
    """A Port search query (`{combinator, rules}`), which Port resolves itself."""
    return isinstance(value, dict) and "rules" in value and "combinator" in value


def entity_key(entity: Entity) -> EntityKey | None:
    """(blueprint, identifier), or None when the identifier is a search query Port resolves."""
    identifier, blueprint = entity.get("identifier"), entity.get("blueprint")
    if isinstance(identifier, str) and isinstance(blueprint, str):
        return (blueprint, identifier)
    return None


def required_key(entity: Any, n: int, *, where: str | None) -> EntityKey:
    """The key of entity #`n` of a list a user gave (a state file, an import): one without a
    plain key cannot be stored or diffed against, so it is an error naming it, not skipped."""
    key = entity_key(entity) if isinstance(entity, dict) else None
    if key is None or not all(key):  # an empty identifier or blueprint names nothing
        raise InputError(f"entity #{n} needs a string 'identifier' and 'blueprint', got {quoted(entity, 120)}",
                         where=where)
    return key
