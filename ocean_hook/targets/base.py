"""The one target interface: read current entities, upsert, delete.

The pipeline diffs before it writes, so a target is only asked to write real changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ocean_hook.entity import Entity, EntityKey
from ocean_hook.mapping.models import MappingFlags


@dataclass(frozen=True)
class WriteOutcome:
    """The result of writing one entity. `error` is shown to the user as is (Port's message)."""

    key: EntityKey
    ok: bool
    error: str | None = None
    #: a retry may succeed (429, 5xx, connection error); a schema violation will not
    retryable: bool = False
    #: how long the target asked to be left alone (a 429's Retry-After), when it said
    retry_after: float | None = None


class TargetError(Exception):
    """The target as a whole could not be reached or answered badly."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after  # as in WriteOutcome


#: why a target that does not resolve search-query identifiers refuses an entity named by one
SEARCH_QUERY_ERROR = "search-query identifiers are resolved by Port; the local catalog cannot resolve them"


class Target(ABC):
    name: str = "target"
    #: Port resolves an identifier given as a search query; the local catalog cannot
    resolves_search_queries: bool = True

    @abstractmethod
    async def get_entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity]:
        """Current entities for these keys (missing keys are absent from the answer)."""

    @abstractmethod
    async def upsert(self, entities: Sequence[Entity], flags: MappingFlags) -> list[WriteOutcome]:
        """Create or update; merge or replace according to `flags.enable_merge_entity`."""

    @abstractmethod
    async def delete(self, keys: Sequence[EntityKey], flags: MappingFlags) -> list[WriteOutcome]:
        """Delete (with dependents when `flags.delete_dependent_entities`)."""

    async def check_ready(self) -> None:
        """Raise `TargetError` when the target cannot be written now (for /readyz)."""

    async def close(self) -> None:
        """Release connections and files."""
