"""The processor contract, after Ocean's `AbstractWebhookProcessor`.

One difference, on purpose: `authenticate` receives the whole event, because signatures are
checked on the exact raw bytes received, which a parsed payload no longer has.

Stages, in the order the pipeline calls them:
  could_process(event)          path and headers only, before authentication (cheap, no body)
  authenticate(event)           raw bytes + headers -> Verdict
  should_process_event(event)   with the parsed payload (a jq condition, say)
  get_matching_kinds(event)     which resources of the mapping this event feeds
  validate_payload(payload)     -> Verdict
  handle_event(payload, resource, fetcher) -> RawResults
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocean_hook.auth.base import Verdict, Verifier
from ocean_hook.events import WebhookEvent

if TYPE_CHECKING:
    from ocean_hook.fetch import Fetcher
    from ocean_hook.mapping.models import ResourceConfig


#: the hooks the pipeline awaits: a plain `def` may return an awaitable (one delegating to an
#: `async def`), which only an answer shows (`pipeline._awaited`), so the config warns of one
#: rather than refusing it
AWAITED_METHODS = ("before_processing", "handle_event", "after_processing", "on_error", "cancel")
#: what the pipeline calls and reads the answer of at once (plain `def`: an `async def` returns a
#: coroutine, not the answer): the config refuses an `async def` one when it loads the class
CALLED_METHODS = ("could_process", "authenticate", "header_problem", "challenge", "should_process_event",
                  "get_matching_kinds", "validate_payload", "delivery_id", "order_key", "should_retry")


@dataclass
class RawResults:
    """Raw third-party items for one (processor, kind): upserts and deletions, before mapping."""

    updated: list[Any] = field(default_factory=list)
    deleted: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class RetryPolicy:
    """Ocean's retry settings; the delay of attempt n is min(initial * base**(n-1), max)."""

    max_retries: int = 5
    initial_retry_delay_seconds: float = 1.0
    max_retry_delay_seconds: float = 300.0
    exponential_base_seconds: float = 2.0

    def delay(self, attempt: int) -> float:
        raw = self.initial_retry_delay_seconds * self.exponential_base_seconds ** max(attempt - 1, 0)
        return min(raw, self.max_retry_delay_seconds)


@dataclass
class ProcessorSettings:
    """What the config gives every processor, declarative or a user's Python class."""

    name: str
    path: str
    kinds: list[str]
    verifier: Verifier
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: free-form `options:` from the config, for a user's Python class
    options: dict[str, Any] = field(default_factory=dict)


class WebhookProcessor(ABC):
    """Subclass this for a processor in Python; name it in the config as `class: module:Class`.

    The config builds `ProcessorSettings` (name, path, kinds, the verifier of its `auth:` and the
    retry policy) and calls `Class(settings)`. Authentication is done for you by the configured
    verifier; implement `should_process_event`, `validate_payload` and `handle_event`.
    """

    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.path = settings.path
        self.retry = settings.retry

    # -- matching -----------------------------------------------------------------------------
    def could_process(self, event: WebhookEvent) -> bool:
        """Pre-match on path and headers before the body is trusted or parsed."""
        return True

    @abstractmethod
    def should_process_event(self, event: WebhookEvent) -> bool:
        """Full match, with `event.payload` parsed."""

    def get_matching_kinds(self, event: WebhookEvent) -> list[str]:
        return list(self.settings.kinds)

    # -- checks -------------------------------------------------------------------------------
    def authenticate(self, event: WebhookEvent, *, now: float | None) -> Verdict:
        """`now=None` skips timestamp-age checks (replay --verify of old captures)."""
        return self.settings.verifier.verify(event.body, event.headers, now=now)

    @abstractmethod
    def validate_payload(self, payload: Any) -> Verdict: ...

    def header_problem(self, event: WebhookEvent) -> str | None:
        """Why the headers this processor reads cannot be trusted to say one thing (a repeated
        event header: which event is it?), or None."""
        return None

    def challenge(self, event: WebhookEvent) -> str | None:
        """What to answer a sender's URL verification handshake with (Slack's `url_verification`
        must get its `challenge` back before Slack sends any event); None for a delivery. Such a
        request is authenticated, answered 200 and never journaled."""
        return None

    def delivery_id(self, event: WebhookEvent) -> str | None:
        """The sender's id for this delivery, for de-duplication (None: none given)."""
        return None

    def order_key(self, event: WebhookEvent) -> str:
        """Deliveries with the same key are applied in arrival order. Default: the path. Keys are
        the path's (one sender's): two processors on a path that write one resource (a repository
        from `repository` and from `push` events) must share its order; two senders must not."""
        return event.path

    # -- work ---------------------------------------------------------------------------------
    @abstractmethod
    async def handle_event(
        self, payload: Any, resource: ResourceConfig, fetcher: Fetcher
    ) -> RawResults: ...

    # -- lifecycle hooks, as in Ocean ---------------------------------------------------------
    def should_retry(self, error: Exception) -> bool:
        return True

    async def before_processing(self, event: WebhookEvent) -> None:
        return None

    async def after_processing(self, event: WebhookEvent) -> None:
        return None

    async def on_error(self, event: WebhookEvent, error: Exception) -> None:
        return None

    async def cancel(self) -> None:
        return None
