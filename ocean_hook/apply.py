"""The apply stage: hand the writing changes to the target and judge the outcome.

Unchanged entities never reach the target. A failed write fails the delivery (to be retried or
dead-lettered by the worker) with the target's own message, Port's schema errors included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ocean_hook.diff import Change
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.targets.base import Target, WriteOutcome


class ApplyError(Exception):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class Applied:
    written: int
    outcomes: list[WriteOutcome]


async def apply_changes(changes: Sequence[Change], target: Target, flags: MappingFlags) -> Applied:
    upserts = [c.desired for c in changes if c.action in ("create", "update") and c.desired is not None]
    deletes = [(c.blueprint, c.identifier) for c in changes if c.action == "delete"]
    outcomes: list[WriteOutcome] = []
    if upserts:
        outcomes += await target.upsert(upserts, flags)
    if deletes:
        outcomes += await target.delete(deletes, flags)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ApplyError(
            f"{target.name}: {first.key[0]}/{first.key[1]}: {first.error}{more}",
            retryable=any(o.retryable for o in failed),
            retry_after=max((o.retry_after for o in failed if o.retry_after is not None), default=None),
        )
    return Applied(written=len(outcomes), outcomes=outcomes)
