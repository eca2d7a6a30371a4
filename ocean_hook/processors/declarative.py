"""The processor most users write: declared in YAML, matched on path, headers and jq.

    - name: github-pull-request
      preset: github                    # auth scheme, event header, delivery id (presets.py)
      events: [pull_request]            # matched against the preset's event header or jq
      match: {headers: {...}, query: '.action != null'}
      kinds: [pull-request]
      validate: ['.pull_request.number != null']
      items: .pull_request              # the raw item(s) to map; default: the whole payload
      delete_when: '.action == "deleted"'
      order_key: .repository.full_name  # same key: applied in arrival order
      fetch: {url: .pull_request.url, headers: {...}, allowed_hosts: [api.github.com], items: .}
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocean_hook.auth.base import Verdict
from ocean_hook.events import WebhookEvent
from ocean_hook.fetch import FetchError, FetchRefused, FetchResult, without_queries
from ocean_hook.mapping.jq import JqQuery
from ocean_hook.processors.base import ProcessorSettings, RawResults, WebhookProcessor

if TYPE_CHECKING:
    from ocean_hook.fetch import Fetcher
    from ocean_hook.mapping.models import ResourceConfig


@dataclass
class DeliveryIdSource:
    """Header names joined with ':' (all must be present), or a jq on the payload."""

    headers: list[str] = field(default_factory=list)
    query: JqQuery | None = None


@dataclass
class FetchSpec:
    url: JqQuery
    headers: dict[str, str]
    allowed_hosts: list[str]
    items: JqQuery
    base_url: str | None = None


@dataclass
class DeclarativeSpec:
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> any of
    query: JqQuery | None = None
    event_header: str | None = None
    event_query: JqQuery | None = None
    events: list[str] = field(default_factory=list)  # glob patterns: "incident.*"
    validate: list[JqQuery] = field(default_factory=list)
    items: JqQuery | None = None
    delete_when: JqQuery | None = None
    order_key: JqQuery | None = None
    delivery_id: list[DeliveryIdSource] = field(default_factory=list)
    fetch: FetchSpec | None = None
    challenge: JqQuery | None = None


def _values(query: JqQuery, value: Any) -> list[Any]:
    """Every output, errors as none: a matching or extraction jq that fails matches nothing."""
    try:
        return query.all(value)
    except ValueError:
        return []


def _selected(query: JqQuery, value: Any) -> list[Any]:
    """The parts `query` selects of `value` (`JqQuery.select`), nulls left out; errors as none."""
    try:
        return [v for v in query.select(value) if v is not None]
    except ValueError:
        return []


def _truthy(query: JqQuery, value: Any) -> bool:
    try:
        return query.truthy(value)
    except ValueError:
        return False


class DeclarativeProcessor(WebhookProcessor):
    def __init__(self, settings: ProcessorSettings, spec: DeclarativeSpec) -> None:
        super().__init__(settings)
        self.spec = spec
        # `fnmatchcase` against any of the patterns, as one regular expression (asked per request)
        self._events = re.compile("|".join(fnmatch.translate(p) for p in spec.events)) if spec.events else None

    # -- matching -----------------------------------------------------------------------------
    def could_process(self, event: WebhookEvent) -> bool:
        for name, allowed in self.spec.headers.items():
            if event.headers.get(name) not in allowed:
                return False
        if self.spec.events and self.spec.event_header:
            return self._event_matches(event.headers.get(self.spec.event_header))
        return True

    def should_process_event(self, event: WebhookEvent) -> bool:
        if not self.could_process(event):
            return False
        if self.spec.events and self.spec.event_query is not None:
            names = _values(self.spec.event_query, event.payload)
            if not self._event_matches(names[0] if names else None):
                return False
        return self.spec.query is None or _truthy(self.spec.query, event.payload)

    def _event_matches(self, name: Any) -> bool:
        return isinstance(name, str) and self._events is not None and self._events.match(name) is not None

    # -- checks -------------------------------------------------------------------------------
    def validate_payload(self, payload: Any) -> Verdict:
        for condition in self.spec.validate:
            if not _truthy(condition, payload):
                return Verdict.reject(f"payload fails validation '{condition.expr}'")
        return Verdict.passed()

    def header_problem(self, event: WebhookEvent) -> str | None:
        name = self.spec.event_header
        if name is not None and len(set(event.headers.getall(name, []))) > 1:
            return f"duplicated header {name}: one delivery is one event"
        for source in self.spec.delivery_id:  # which id would de-duplicate it?
            for header in source.headers:
                if len(set(event.headers.getall(header, []))) > 1:
                    return f"duplicated header {header}: one delivery has one id"
        return None

    def challenge(self, event: WebhookEvent) -> str | None:
        found = _values(self.spec.challenge, event.payload) if self.spec.challenge is not None else []
        return found[0] if found and isinstance(found[0], str) else None

    def delivery_id(self, event: WebhookEvent) -> str | None:
        for source in self.spec.delivery_id:
            if source.query is not None:
                found = _values(source.query, event.payload)
                if found and isinstance(found[0], str | int) and str(found[0]):
                    return str(found[0])
                continue
            parts = [event.headers.get(h) for h in source.headers]
            if parts and all(parts):
                return ":".join(p for p in parts if p)
        return None

    def order_key(self, event: WebhookEvent) -> str:
        if self.spec.order_key is not None:
            found = _values(self.spec.order_key, event.payload)
            if found and found[0] is not None:  # per path, not per processor: see the base class
                return f"{event.path}:{found[0]}"
        return super().order_key(event)

    # -- work ---------------------------------------------------------------------------------
    def extract_items(self, payload: Any) -> list[Any]:
        """`items:` outputs; a single list output is the list of items."""
        if self.spec.items is None:
            return [payload]
        return _as_items(_selected(self.spec.items, payload))

    def is_deletion(self, payload: Any) -> bool:
        return self.spec.delete_when is not None and _truthy(self.spec.delete_when, payload)

    async def handle_event(self, payload: Any, resource: ResourceConfig, fetcher: Fetcher) -> RawResults:
        items = self.extract_items(payload)
        if self.is_deletion(payload):
            return RawResults(deleted=items)
        if self.spec.fetch is None:
            return RawResults(updated=items)
        return await self._fetch(payload, items, self.spec.fetch, fetcher)

    async def _fetch(self, payload: Any, items: list[Any], spec: FetchSpec, fetcher: Fetcher) -> RawResults:
        """The latest resource from the source API; a 404 there means it is gone: delete it."""
        results = RawResults()
        outputs = _values(spec.url, payload)  # one per item, some maybe null: places are kept
        urls = [(n, u) for n, u in enumerate(outputs) if isinstance(u, str) and u]
        if not urls:  # a typo in `url:` would otherwise make every delivery a silent no-op
            raise FetchRefused(f"fetch.url '{spec.url.expr}' gives no URL (a non-empty string) for this payload")
        for n, url in urls:
            fetched = await fetcher.get_json(
                url, headers=spec.headers, allowed_hosts=spec.allowed_hosts, base_url=spec.base_url
            )
            if fetched.gone:
                results.deleted += _gone_items(items, len(outputs), n)
                continue
            results.updated += _fetched_items(spec.items, fetched, url)
        return results


def _fetched_items(query: JqQuery, fetched: FetchResult, url: str) -> list[Any]:
    """`fetch.items` of an answer. An answer of another shape than it expects (jq fails on it,
    or it gives only null: `.data` of an answer without one, or of `null`) fails the delivery: it
    was "no change", done. Giving no output at all (`.data[]` of an empty list) is an answer of
    nothing, and so is an empty answer (204)."""
    if fetched.body is None:
        return []
    shown = without_queries(url)
    try:
        outputs = query.select(fetched.data)
    except ValueError as exc:
        raise FetchError(f"fetch.items '{query.expr}' failed on the answer of {shown}: {exc}",
                         retryable=False) from None
    found = [v for v in outputs if v is not None]
    if outputs and not found:
        raise FetchError(f"fetch.items '{query.expr}' gives null for the answer of {shown}", retryable=False)
    return _as_items(found)


def _as_items(found: list[Any]) -> list[Any]:
    """One list selected is the list of items."""
    return found[0] if len(found) == 1 and isinstance(found[0], list) else found


def _gone_items(items: list[Any], urls: int, n: int) -> list[Any]:
    """The items whose resource the URL in place `n` (of `urls` outputs of `fetch.url`, nulls
    counted) said is gone. One URL: the payload's items are that resource. Several, one per item
    (`url: .things[].url` beside `items: .things`): the item in the same place; an item with no
    URL keeps its place (dropping it paired the next item's 404 with it, and deleted it). Otherwise
    none can be told: deleting them all deleted the items whose own fetch had just succeeded."""
    if urls == 1:
        return items
    return [items[n]] if urls == len(items) else []
