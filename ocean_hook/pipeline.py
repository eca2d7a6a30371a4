"""The one pipeline. Every command goes through here; nothing else decides what an event means.

    receive ─▶ match ─▶ authenticate ─▶ validate ─▶ fetch ─▶ map ─▶ diff ─▶ apply

`admit` runs the door stages (match, authenticate, parse, validate) on a received event;
`process` runs the work stages (fetch, map, diff, apply) for an admitted event. `serve` calls
`admit` in the listener and `process` in its workers, `replay` calls both in turn, and
`test-mapping` enters at the map stage through `map_raw` and `plan`.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from ocean_hook import jsontext
from ocean_hook.apply import ApplyError, apply_changes
from ocean_hook.diff import Change, plan_changes
from ocean_hook.entity import Entity, EntityKey, entity_key
from ocean_hook.events import WebhookEvent, new_delivery_id
from ocean_hook.fetch import Fetcher, FetchRefused
from ocean_hook.jsontext import JsonProblem
from ocean_hook.mapping.engine import MappedEntity, Mapping, MapResult, ResourceMapper
from ocean_hook.mapping.jq import jq_can_read
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.processors.base import RawResults, WebhookProcessor
from ocean_hook.targets.base import Target, TargetError

# ------------------------------------------------------------------------------ map and diff


@dataclass
class MappedBatch:
    """One resource's mapping of one batch of raw results, split into upserts and deletions."""

    kind: str
    result: MapResult = field(default_factory=MapResult)
    upserts: list[MappedEntity] = field(default_factory=list)
    deletes: list[MappedEntity] = field(default_factory=list)

    def keys(self) -> list[EntityKey]:
        keys = (entity_key(m.entity) for m in [*self.upserts, *self.deletes])
        return list(dict.fromkeys(k for k in keys if k is not None))


def map_raw(mapper: ResourceMapper, raw: RawResults, *, start: int = 0) -> MappedBatch:
    """Map updated and deleted raw items with Ocean's webhook semantics, minus its stale-entity bug.

    An updated item that fails the selector is mapped anyway: if the catalog holds it, it has
    moved out of scope and is deleted. A deleted item is deleted whether or not it passes the
    selector (Ocean drops those, leaving stale entities behind).
    """
    batch = MappedBatch(mapper.kind)
    updated = mapper.map_items(raw.updated, parse_all=True, start=start)
    deleted = mapper.map_items(raw.deleted, parse_all=True, start=start + len(raw.updated))
    batch.result.extend(updated)
    batch.result.errors += deleted.errors
    batch.result.skipped += deleted.skipped
    batch.upserts = updated.passed
    # out of scope only if no later version of the item in this batch is back in scope
    last_passed = {entity_key(m.entity): m.item_index for m in updated.passed}
    out_of_scope = [m for m in updated.failed if m.item_index > last_passed.get(entity_key(m.entity), -1)]
    batch.deletes = out_of_scope + deleted.entities
    return batch


def plan(batch: MappedBatch, current: MappingABC[EntityKey, Entity], flags: MappingFlags) -> list[Change]:
    """The diff stage for one mapped batch against the current state of those entities."""
    return plan_changes(
        [m.entity for m in batch.upserts],
        [m.entity for m in batch.deletes],
        current,
        merge=flags.enable_merge_entity,
        kind=batch.kind,
    )


# ------------------------------------------------------------------------------ the door


@dataclass
class Admission:
    """The door's verdict on one delivery. 202 accepted/ignored, or a 4xx with its reason."""

    status: int
    reason: str
    event: WebhookEvent
    processors: list[WebhookProcessor] = field(default_factory=list)
    #: the processor whose check gave a 401 or 422 (for replay's report; the sender is not told)
    rejected_by: str | None = None
    #: deliveries with the same key are applied one at a time, in arrival order (accepted ones)
    order_key: str = ""
    #: a URL verification handshake: answered 200 with this, never journaled
    challenge: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202 and bool(self.processors)

    @property
    def ignored(self) -> bool:
        return self.status == 202 and not self.processors

    @property
    def label(self) -> str:
        """Short machine label for metrics and JSON output."""
        return {200: "challenge", 202: "accepted" if self.processors else "ignored", 400: "bad_json",
                401: "unauthorized", 404: "unknown_path", 405: "method_not_allowed", 415: "unsupported_media_type",
                422: "invalid", 500: "processing_failed"}.get(self.status, str(self.status))


_JSON_TYPES = ("application/json", "text/json")
_FORM = "application/x-www-form-urlencoded"


def media_type(event: WebhookEvent) -> str:
    return (event.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def check_media_type(event: WebhookEvent) -> str | None:
    """A reason to answer 415, or None. JSON, `+json` types, and GitHub's form encoding."""
    kind = media_type(event)
    if kind in _JSON_TYPES or kind.endswith("+json") or kind == _FORM:
        return None
    shown = kind or "none"
    return f"unsupported Content-Type {shown}: send application/json"


class PayloadError(ValueError):
    pass


def parse_payload(event: WebhookEvent) -> Any:
    """The JSON payload; GitHub's form-encoded deliveries carry it in the `payload` field."""
    body = event.body
    if media_type(event) == _FORM:
        # latin-1 both ways, percent-escapes included: the field's exact bytes, checked as UTF-8 below
        fields = parse_qs(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        if "payload" not in fields:
            raise PayloadError("form-encoded body without a 'payload' field")
        body = fields["payload"][0].encode("latin-1")
    try:
        # strict UTF-8 (a BOM is tolerated): json.loads(bytes) would also take UTF-16/32 and,
        # via surrogatepass, UTF-8-encoded lone surrogates, which jq then cannot read
        text = body.decode("utf-8-sig")
        payload = jsontext.loads(text)
    except UnicodeDecodeError:
        raise PayloadError("body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except JsonProblem as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    jq_can_read.vouch(payload)  # the jq queries about to run on it need not check
    return payload


def admit(
    event: WebhookEvent,
    processors: Sequence[WebhookProcessor],
    *,
    now: float | None,
    verify: bool = True,
) -> Admission:
    """match → authenticate → parse → match on payload → validate, in the order the door answers
    (a sender's URL verification, once authenticated, is answered with its challenge).

    Authentication runs on the raw bytes before the body is parsed, so a forged request is
    never parsed. `now=None` skips timestamp-age checks; `verify=False` trusts the event
    (workers re-running a delivery that was authenticated when it arrived).

    Code that raises on the way (a Python processor's own methods, say) makes a 500 whose
    reason says what raised and where: the sender will send it again once that is fixed.
    """
    try:
        return _admit(event, processors, now=now, verify=verify)
    except Exception as exc:
        return Admission(500, f"processing code failed: {_raised(exc)}", event)


def _raised(exc: Exception) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (in {last.name}, {last.filename}:{last.lineno})"


def _admit(
    event: WebhookEvent, processors: Sequence[WebhookProcessor], *, now: float | None, verify: bool
) -> Admission:
    if not processors:
        return Admission(404, f"no processor listens on {event.path}", event)
    candidates = [p for p in processors if p.could_process(event)]
    if verify:
        # Unmatched events are authenticated too (against any processor on the path): a forged
        # request gets a 401, never a 202, whatever event it claims to be.
        checked = candidates or list(processors)
        verdicts = [(p, p.authenticate(event, now=now)) for p in checked]
        passed = [p for p, v in verdicts if v.ok]
        if not passed:
            failed, verdict = next((p, v) for p, v in verdicts if not v.ok)
            return Admission(401, verdict.reason, event, rejected_by=failed.name)
        candidates = [p for p in candidates if p in passed]
    if not candidates:
        return Admission(202, _ignored_reason(event), event)
    try:
        event = event.with_payload(parse_payload(event))
    except PayloadError as exc:
        return Admission(400, str(exc), event)
    answer = next((c for p in candidates if (c := p.challenge(event)) is not None), None)
    if answer is not None:  # authenticated above: only the sender gets its challenge back
        return Admission(200, "URL verification answered", event, challenge=answer)
    matched = [p for p in candidates if p.should_process_event(event)]
    if not matched:
        return Admission(202, _ignored_reason(event), event)
    verdicts = [(p, p.validate_payload(event.payload)) for p in matched]
    valid = [p for p, v in verdicts if v.ok]
    if not valid:
        failed, verdict = next((p, v) for p, v in verdicts if not v.ok)
        return Admission(422, verdict.reason, event, rejected_by=failed.name)
    if event.delivery_id is None:
        found = next((d for p in valid if (d := p.delivery_id(event))), None)
        if found is not None and not _is_text(found):  # a header's raw bytes, not signed
            return Admission(400, "the delivery id header is not UTF-8 text", event)
        event = event.with_delivery_id(found or new_delivery_id())
    return Admission(202, "accepted", event, valid, order_key=valid[0].order_key(event))


def _is_text(value: str) -> bool:
    """False for header bytes that are not UTF-8 (aiohttp keeps them as lone surrogates), which
    neither the journal nor Redis can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ignored_reason(event: WebhookEvent) -> str:
    return f"no processor on {event.path} matches this event"


# ------------------------------------------------------------------------------ the work


class PipelineError(Exception):
    """Processing failed; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class KindResult:
    processor: str
    kind: str
    batch: MappedBatch
    changes: list[Change] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "processor": self.processor,
            "kind": self.kind,
            "entities": [m.to_json() for m in self.batch.result.passed],
            "changes": [c.to_json() for c in self.changes],
            "errors": self.batch.result.errors,
        }


@dataclass
class ProcessResult:
    delivery_id: str
    results: list[KindResult] = field(default_factory=list)
    written: int = 0

    @property
    def changes(self) -> list[Change]:
        return [c for r in self.results for c in r.changes]

    @property
    def errors(self) -> list[str]:
        return [e for r in self.results for e in r.batch.result.errors]


async def process(
    event: WebhookEvent,
    processors: Sequence[WebhookProcessor],
    mapping: Mapping,
    target: Target,
    fetcher: Fetcher,
    *,
    dry_run: bool = False,
) -> ProcessResult:
    """fetch → map → diff → apply for each (processor, kind) pair of an admitted event.

    Raises `PipelineError`: retryable for a fetch or target outage, not for a refused fetch,
    a mapping error or a target that rejected the entity (Port's 4xx).
    """
    result = ProcessResult(event.delivery_id or "")
    for processor in processors:
        await processor.before_processing(event)
        try:
            for kind in processor.get_matching_kinds(event):
                for mapper in mapping.for_kind(kind):
                    result.results.append(
                        await _process_kind(event, processor, mapper, mapping.flags, target, fetcher, dry_run)
                    )
        except Exception as exc:
            await processor.on_error(event, exc)
            raise _as_pipeline_error(exc, processor) from exc
        await processor.after_processing(event)
    for kind_result in result.results:
        if kind_result.batch.result.errors:
            raise PipelineError("; ".join(kind_result.batch.result.errors), retryable=False)
    if not dry_run:
        for kind_result in result.results:
            try:
                applied = await apply_changes(kind_result.changes, target, mapping.flags)
            except (ApplyError, TargetError) as exc:
                # Port's 4xx (schema) is final; an outage or a 429/5xx is worth another attempt
                raise PipelineError(str(exc), retryable=exc.retryable) from exc
            result.written += applied.written
    return result


async def _process_kind(
    event: WebhookEvent,
    processor: WebhookProcessor,
    mapper: ResourceMapper,
    flags: MappingFlags,
    target: Target,
    fetcher: Fetcher,
    dry_run: bool,
) -> KindResult:
    raw = await processor.handle_event(event.payload, mapper.resource, fetcher)
    batch = map_raw(mapper, raw)
    current = await target.get_entities(batch.keys()) if batch.keys() else {}
    return KindResult(processor.name, mapper.kind, batch, plan(batch, current, flags))


def _as_pipeline_error(exc: Exception, processor: WebhookProcessor) -> PipelineError:
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, FetchRefused):
        return PipelineError(f"fetch refused: {exc}", retryable=False)
    retryable = bool(getattr(exc, "retryable", True)) and processor.should_retry(exc)
    return PipelineError(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc), retryable=retryable)
