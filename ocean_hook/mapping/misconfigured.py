"""Misconfigured fields (a jq that gave null), counted per field: one line each, however many
entities, so a typo in a mapping reads as one problem. test-mapping, replay and serve's log say
them the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ocean_hook.mapping.engine import MappedEntity

#: (kind, field path, jq, entities where it is null, an example identifier)
Row = tuple[str, str, str, int, str]


class Misconfigurations:
    def __init__(self) -> None:
        #: (kind, field path, jq) -> entities where it is null, and the first of them
        self._counts: dict[tuple[str, str, str], int] = {}
        self._examples: dict[tuple[str, str, str], str] = {}
        self.entities = 0  # entities with at least one misconfigured field

    def add(self, entities: Iterable[MappedEntity]) -> None:
        for m in entities:
            if not m.misconfigurations:
                continue
            self.entities += 1
            for path, expr in m.misconfigurations.items():
                key = (m.kind, path, expr)
                self._counts[key] = self._counts.get(key, 0) + 1
                self._examples.setdefault(key, _example(m))

    def rows(self) -> list[Row]:
        return [(*key, count, self._examples[key]) for key, count in self._counts.items()]


def _example(m: MappedEntity) -> str:
    identifier = m.entity.get("identifier")
    if identifier in (None, ""):
        return f"item {m.item_index}"
    return identifier if isinstance(identifier, str) else json.dumps(identifier, ensure_ascii=False)  # a search query
