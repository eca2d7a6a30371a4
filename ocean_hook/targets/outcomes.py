"""Naming the entity a `WriteOutcome` is about, even when Port resolves its identifier.

Every target answers one outcome per entity, in the order it was asked, so callers may zip
outcomes with what they sent. The key makes the outcome readable on its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from ocean_hook.entity import Entity, EntityKey, entity_key


def outcome_key(entity: Entity) -> EntityKey:
    """(blueprint, identifier); a search-query identifier is shown as its compact JSON."""
    key = entity_key(entity)
    if key is not None:
        return key
    ident = entity.get("identifier")
    text = ident if isinstance(ident, str) else json.dumps(ident, sort_keys=True, default=str)
    return (str(entity.get("blueprint")), text)


def as_key(key: Sequence[str]) -> EntityKey:
    """A key as the hashable tuple, also when a caller passed it as a list (as JSON reads it)."""
    return cast(EntityKey, tuple(key))
