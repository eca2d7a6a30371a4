"""The one queue interface, for the SQLite journal and for Redis Streams.

A delivery is `put` (de-duplicated by delivery id) before the sender gets its 2xx. Workers
`claim` deliveries, and each claimed delivery ends in exactly one of `ack`, `retry_later` or
`dead_letter`. `recover` returns claims of crashed workers to the pending state.

Ordering: deliveries with the same `order_key` are claimed one at a time, in arrival order.
An empty `order_key` means unordered: such deliveries are claimed independently of each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ocean_hook.errors import OceanHookError
from ocean_hook.events import WebhookEvent, make_headers


class DeliveryState(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"  # waiting for its next attempt
    DEAD = "dead"


@dataclass
class Delivery:
    """A journaled delivery: the raw request as received plus its processing record."""

    delivery_id: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    received_at: float
    processors: list[str] = field(default_factory=list)
    order_key: str = ""
    id: str = ""  # the queue's own id (SQLite row id, Redis stream entry id)
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float | None = None
    updated_at: float | None = None
    #: the queue's handle on this claim (Redis: the stream entry claimed). Not the queue id:
    #: a Redis restarted empty counts ids from 1 again, and an old claim's outcome would land
    #: on the new delivery that took its number.
    claim: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_event(cls, event: WebhookEvent, processors: list[str], order_key: str) -> Delivery:
        return cls(
            delivery_id=event.delivery_id or "",
            method=event.method,
            path=event.path,
            # workers never re-verify, so secret-bearing headers are not kept on disk
            headers=event.redacted_headers(),
            body=event.body,
            received_at=event.received_at,
            processors=processors,
            order_key=order_key,
        )

    def to_event(self) -> WebhookEvent:
        return WebhookEvent(
            method=self.method,
            path=self.path,
            headers=make_headers(self.headers),
            body=self.body,
            received_at=self.received_at,
            delivery_id=self.delivery_id,
        )

    def summary(self) -> dict[str, Any]:
        """What `deliveries list/show` print: no body, no header values that carry secrets."""
        from ocean_hook.events import REDACTED, SECRET_HEADERS

        return {
            "id": self.id,
            "delivery_id": self.delivery_id,
            "state": str(self.state),
            "path": self.path,
            "processors": self.processors,
            "order_key": self.order_key,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "received_at": self.received_at,
            "updated_at": self.updated_at,
            "headers": [[k, REDACTED if k.lower() in SECRET_HEADERS else v] for k, v in self.headers],
            "body_bytes": len(self.body),
        }


@dataclass(frozen=True)
class PutResult:
    accepted: bool  # False: a delivery with this id is already in the journal
    id: str


@dataclass(frozen=True)
class Requeued:
    """What a requeue did: how many deliveries are pending again, and the superseded dead
    letters it was asked to spare and left dead (queue id -> the newer delivery's queue id)."""

    count: int
    spared: dict[str, str] = field(default_factory=dict)


class QueueMissing(Exception):
    """A command that only looks found no queue there (nothing was created)."""


class QueueUnavailable(OceanHookError):
    """The queue cannot store deliveries now: the listener answers 503, never 2xx.

    An OceanHookError so that a command that cannot reach its queue (`serve` at start-up,
    `deliveries ...`) prints the reason on one line instead of a traceback.
    """


class Queue(ABC):
    @abstractmethod
    async def put(self, delivery: Delivery) -> PutResult:
        """Store durably (committed before return); de-duplicate by `delivery_id`."""

    @abstractmethod
    async def claim(self, limit: int) -> list[Delivery]:
        """Due deliveries, marked in progress, order keys respected. Their `attempts` counts the
        one under way; the queue records it when the attempt ends (ack, retry_later, dead_letter),
        so a claim a stop or crash cuts short, or one never started, does not use one up."""

    @abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """Processing succeeded: the delivery is done."""

    @abstractmethod
    async def retry_later(self, delivery: Delivery, error: str, delay_seconds: float) -> None:
        """Processing failed: keep the error, try again after the delay (persisted)."""

    @abstractmethod
    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """No attempts left: park it where a user can inspect and retry it."""

    @abstractmethod
    async def recover(self) -> int:
        """Return in-progress deliveries of crashed workers to pending; how many."""

    @abstractmethod
    async def hand_back(self) -> int:
        """At a clean stop, once no worker runs: the deliveries this object claimed and did not
        finish (cut short, or claimed ahead and never started) go back to pending now, for
        whoever claims next; how many."""

    @abstractmethod
    async def list(self, state: DeliveryState | None = None, limit: int = 100) -> list[Delivery]:
        """Newest first."""

    @abstractmethod
    async def get(self, id_or_delivery_id: str) -> Delivery | None: ...

    @abstractmethod
    async def requeue(self, id_or_delivery_id: str, *, spare_superseded: bool = False) -> Requeued:
        """Make a dead or failed delivery pending again, attempts reset. `spare_superseded`:
        unless it is a superseded dead letter, decided in the same atomic write, so a newer
        delivery of its key applied a moment before cannot slip through."""

    @abstractmethod
    async def requeue_dead(self, *, spare_superseded: bool = False) -> Requeued:
        """Make every dead letter pending again (with `spare_superseded`, all but the
        superseded ones, decided as in `requeue`)."""

    @abstractmethod
    async def superseded(self) -> dict[str, str]:
        """Dead letters after which a newer delivery of the same order key was applied: queue id
        -> that newer delivery's queue id. Requeuing one would write its older content over the
        newer, since order keys order unfinished deliveries only."""

    @abstractmethod
    async def purge(self, older_than_seconds: float) -> int:
        """Forget done and dead deliveries older than this; never pending work, and never what
        de-duplicates a redelivery within the de-duplication window."""

    @abstractmethod
    async def depth(self) -> dict[str, int]:
        """Count per state, for metrics and `deliveries list`."""

    async def close(self) -> None:
        """Release the file or connection."""
