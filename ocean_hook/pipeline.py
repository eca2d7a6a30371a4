"""The one pipeline. Every command goes through here; nothing else decides what an event means.

    receive ─▶ match ─▶ authenticate ─▶ validate ─▶ fetch ─▶ map ─▶ diff ─▶ apply

`admit` runs the door stages (match, authenticate, parse, validate) on a received event;
`process` runs the work stages (fetch, map, diff, apply) for an admitted event. `serve` calls
`admit` in the listener and `process` in its workers, `replay` calls both in turn, and
`test-mapping` enters at the map stage through `map_raw` and `plan`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import traceback
from collections.abc import Iterator, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

from ocean_hook import jsontext
from ocean_hook.apply import ApplyError, apply_changes
from ocean_hook.auth.base import Verdict
from ocean_hook.diff import Change, plan_changes, summarize
from ocean_hook.entity import Entity, EntityKey, entity_key, is_search_query
from ocean_hook.errors import quoted
from ocean_hook.events import WebhookEvent, new_delivery_id
from ocean_hook.fetch import Fetcher, FetchRefused, without_queries
from ocean_hook.jsontext import JsonProblem
from ocean_hook.mapping.engine import CHUNK, MappedEntity, Mapping, MapResult, ResourceMapper
from ocean_hook.mapping.jq import jq_can_read
from ocean_hook.mapping.misconfigured import Misconfigurations
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.overlay import Overlay
from ocean_hook.processors.base import RawResults, WebhookProcessor
from ocean_hook.targets.base import SEARCH_QUERY_ERROR, Target, TargetError

log = logging.getLogger("ocean_hook.pipeline")


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
    for _ in _map_steps(mapper, raw, batch, start):
        pass
    return batch


async def map_raw_between_answers(mapper: ResourceMapper, raw: RawResults) -> MappedBatch:
    """`map_raw` giving the event loop back after each chunk of items: a delivery of 100,000
    items held the listener's answers (and its watchdog's heartbeat) for 17 seconds."""
    batch = MappedBatch(mapper.kind)
    for _ in _map_steps(mapper, raw, batch, 0):
        await asyncio.sleep(0)
    return batch


def _map_steps(mapper: ResourceMapper, raw: RawResults, batch: MappedBatch, start: int) -> Iterator[None]:
    updated, deleted = MapResult(), MapResult()
    yield from mapper.map_steps(raw.updated, updated, parse_all=True, start=start)
    yield from mapper.map_steps(raw.deleted, deleted, parse_all=True, start=start + len(raw.updated))
    batch.result.extend(updated)
    batch.result.errors += deleted.errors
    batch.result.skipped += deleted.skipped
    batch.result.unnamed += deleted.unnamed  # skipped for a null identifier: said, as for updated items
    batch.upserts = updated.passed
    # out of scope only if no later version of the item in this batch is back in scope
    last_passed = {entity_key(m.entity): m.item_index for m in updated.passed}
    out_of_scope = [m for m in updated.failed if m.item_index > last_passed.get(entity_key(m.entity), -1)]
    batch.deletes = out_of_scope + deleted.entities


def keep_what_another_resource_maps(batches: Sequence[MappedBatch]) -> None:
    """An entity that one resource maps (its selector passed) is not deleted because another
    resource's selector refused the same item: Ocean keeps it, and a delete then re-create on
    Port can take dependents and merged fields with it. A resource's own earlier versions of an
    item are `map_raw`'s to settle: the last one decides."""
    kept = [_kept(batch) for batch in batches]
    for n, batch in enumerate(batches):
        others = [keys for k, keys in enumerate(kept) if k != n]
        batch.deletes = [m for m in batch.deletes if not any(entity_key(m.entity) in keys for keys in others)]


def _kept(batch: MappedBatch) -> set[EntityKey | None]:
    """The entities a batch ends up upserting: its last word on each is not a delete."""
    last: dict[EntityKey | None, tuple[int, bool]] = {}
    for upsert, mapped in [*((True, m) for m in batch.upserts), *((False, m) for m in batch.deletes)]:
        key = entity_key(mapped.entity)
        if key not in last or mapped.item_index >= last[key][0]:
            last[key] = (mapped.item_index, upsert)
    return {key for key, (_, upsert) in last.items() if upsert}


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
    #: the label when the status alone does not say it (a 400 that is not about the JSON)
    cause: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202 and bool(self.processors)

    @property
    def ignored(self) -> bool:
        return self.status == 202 and not self.processors

    @property
    def label(self) -> str:
        """Short machine label for metrics and JSON output."""
        if self.cause is not None:
            return self.cause
        return {200: "challenge", 202: "accepted" if self.processors else "ignored", 400: "bad_json",
                401: "unauthorized", 404: "unknown_path", 405: "method_not_allowed", 415: "unsupported_media_type",
                422: "invalid", 500: "processing_failed"}.get(self.status, str(self.status))


_JSON_TYPES = ("application/json", "text/json")
_FORM = "application/x-www-form-urlencoded"


def media_type(event: WebhookEvent) -> str:
    return (event.headers.get("Content-Type") or "").split(";")[0].strip().lower()


#: what the listener decodes (aiohttp, on receipt); any other coding would reach the checks
#: still encoded: a 401 for a signature it does not match, or stored as if it were JSON
_CODINGS = ("", "identity", "gzip", "deflate")


def check_media_type(event: WebhookEvent) -> str | None:
    """A reason to answer 415, or None. JSON, `+json` types, and GitHub's form encoding; bodies
    as sent or in one of `_CODINGS`."""
    if "Content-Encoding" in event.headers:
        coding = ",".join(event.headers.getall("Content-Encoding")).strip().lower()
        if coding not in _CODINGS:
            return f"unsupported Content-Encoding {quoted(coding)}: send the body as it is, or gzip or deflate it"
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
        raise PayloadError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {jsontext.reason(exc)}") from None
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


def _raised(exc: BaseException) -> str:
    """What processing code raised, and where; URLs it quotes lose their query strings, as the
    fetch stage's own errors do (code calling an API with `?api_key=` put the key in the log)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (in {frames[-1].name}, {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {without_queries(str(exc))}{where}"


def _admit(
    event: WebhookEvent, processors: Sequence[WebhookProcessor], *, now: float | None, verify: bool
) -> Admission:
    if not processors:
        return Admission(404, f"no processor listens on {event.path}", event)
    candidates = [p for p in processors if _decided(p, "could_process", p.could_process(event))]
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
    if problem := next((found for p in processors if (found := p.header_problem(event))), None):
        return Admission(400, problem, event, cause="bad_header")
    if not candidates:
        return _ignored(event, processors)
    try:
        event = event.with_payload(parse_payload(event))
    except PayloadError as exc:
        return Admission(400, str(exc), event)
    answer = next((c for p in candidates if (c := p.challenge(event)) is not None), None)
    if answer is not None:  # authenticated above: only the sender gets its challenge back
        return Admission(200, "URL verification answered", event, challenge=answer)
    matched = [p for p in candidates if _decided(p, "should_process_event", p.should_process_event(event))]
    if not matched:
        return _ignored(event, processors)
    verdicts = [(p, _checked(p, "validate_payload", p.validate_payload(event.payload), Verdict)) for p in matched]
    valid = [p for p, v in verdicts if v.ok]
    found = None if event.delivery_id is not None else _sender_id(valid or matched, event)
    if found is not None and not _is_text(found):  # a header's raw bytes, not signed
        return Admission(400, "the delivery id header is not UTF-8 text", event, cause="bad_delivery_id")
    if found is not None and len(found) > MAX_DELIVERY_ID:  # kept in the journal and on every log line
        return Admission(400, f"the delivery id is over {MAX_DELIVERY_ID} characters", event, cause="bad_delivery_id")
    if not valid:  # the sender's id, when it gave one, goes to the log line of the rejection
        failed, verdict = next((p, v) for p, v in verdicts if not v.ok)
        return Admission(422, verdict.reason, event.with_delivery_id(found) if found else event,
                         rejected_by=failed.name)
    if event.delivery_id is None:
        event = event.with_delivery_id(found or new_delivery_id())
    order_key = _checked(valid[0], "order_key", valid[0].order_key(event), str)  # None was a 503, sent forever
    return Admission(202, "accepted", event, valid, order_key=order_key)


#: senders' ids are UUIDs and the like (GitHub's 36 characters): far longer is no id
MAX_DELIVERY_ID = 512


def _sender_id(processors: Sequence[WebhookProcessor], event: WebhookEvent) -> str | None:
    return next((d for p in processors if (d := _id_text(p, p.delivery_id(event)))), None)


def _checked(processor: WebhookProcessor, method: str, value: Any, kind: type) -> Any:
    """What a processor's method returned, if of the type the door needs (a Python processor's
    mistake is named, not met later as an AttributeError inside the pipeline)."""
    if not isinstance(value, kind):
        raise TypeError(f"{processor.name}: {method} must return a {kind.__name__}, got {value!r:.80}")
    return value


def _decided(processor: WebhookProcessor, method: str, value: Any) -> bool:
    """A yes or no. An `async def` method (as in Ocean's code) returns a coroutine, which is
    always true: every event was processed, whatever the method said."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited: no "coroutine was never awaited" warning on top
        raise TypeError(f"{processor.name}: {method} must return True or False, not an awaitable "
                        "(define it with def, not async def)")
    return bool(value)


def _id_text(processor: WebhookProcessor, found: Any) -> str | None:
    """A delivery id as text: a number is taken as its digits, as the declarative `delivery_id` does."""
    if found is None or (isinstance(found, int) and not isinstance(found, bool)):
        return None if found is None else str(found)
    return _checked(processor, "delivery_id", found, str)  # type: ignore[no-any-return]


def _is_text(value: str) -> bool:
    """False for header bytes that are not UTF-8 (aiohttp keeps them as lone surrogates), which
    neither the journal nor Redis can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ignored(event: WebhookEvent, processors: Sequence[WebhookProcessor]) -> Admission:
    """202 ignored; with the sender's delivery id, if it gave one, for the log line (only for
    that: a processor's code that cannot find it, in a payload not parsed yet, fails nothing)."""
    try:
        found = event.delivery_id if event.delivery_id is not None else _sender_id(processors, event)
    except Exception:
        found = None
    if found is not None and _is_text(found) and len(found) <= MAX_DELIVERY_ID:
        event = event.with_delivery_id(found)
    return Admission(202, f"no processor on {event.path} matches this event", event)


# ------------------------------------------------------------------------------ the work


class PipelineError(Exception):
    """Processing failed; `retryable` says whether another attempt may succeed, `retry_after`
    how long the source API asked to be left alone (its Retry-After), when it said."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


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

    def summary(self) -> dict[str, int]:
        """The changes by action, and what the mapping left out or could not fill, counted as
        test-mapping counts them: a delivery whose items were all skipped is not silent."""
        mapped = [r.batch.result for r in self.results]
        return {
            **summarize(self.changes),
            "filtered": sum(m.filtered for m in mapped),
            "skipped": sum(m.skipped for m in mapped),
            "misconfigured": self.misconfigured.entities,
        }

    @cached_property
    def misconfigured(self) -> Misconfigurations:
        """Counted once, when asked after processing (the summary, the log lines and replay's
        outputs each need it)."""
        found = Misconfigurations()
        for r in self.results:
            found.add(r.batch.result.passed)
            found.add(r.batch.result.unnamed)
        return found


async def process(
    event: WebhookEvent,
    processors: Sequence[WebhookProcessor],
    mapping: Mapping,
    target: Target,
    fetcher: Fetcher,
) -> ProcessResult:
    """fetch → map → diff → apply for each (processor, kind) pair of an admitted event. (A dry
    run is a `DryRunTarget`: it takes the writes and keeps what they would leave.)

    Raises `PipelineError`: retryable for a fetch or target outage, not for a refused fetch,
    a mapping error or a target that rejected the entity (Port's 4xx).
    """
    result = ProcessResult(event.delivery_id or "")
    fetcher = fetcher.for_one_delivery()
    for processor in processors:
        result.results += await _run_processor(event, processor, mapping, fetcher)
    keep_what_another_resource_maps([r.batch for r in result.results])
    # the diff, once every resource of the event is mapped; an entity an earlier resource
    # changes is diffed against what that leaves (as test-mapping does), else two resources
    # mapping one entity were each judged against the old state and the catalog flip-flopped
    planned = Overlay()
    try:
        for kind_result in result.results:
            try:
                current = await planned.over(kind_result.batch.keys(), target.get_entities)
            except TargetError as exc:
                raise PipelineError(str(exc), retryable=exc.retryable, retry_after=exc.retry_after) from exc
            kind_result.changes = await _plan_between_answers(kind_result.batch, current, mapping.flags)
            for n, change in enumerate(kind_result.changes, 1):
                if isinstance(change.identifier, str):
                    planned.set((change.blueprint, change.identifier), change.after)
                if n % CHUNK == 0:
                    await asyncio.sleep(0)
    finally:
        planned.close()
    _refuse_what_the_target_cannot_write(result, target)
    for kind_result in result.results:
        try:
            applied = await apply_changes(kind_result.changes, target, mapping.flags)
        except (ApplyError, TargetError) as exc:
            # Port's 4xx (schema) is final; an outage or a 429/5xx is worth another attempt
            raise PipelineError(str(exc), retryable=exc.retryable, retry_after=exc.retry_after) from exc
        result.written += applied.written
    # items the mapping could not map fail the delivery (kept, dead-lettered, to retry once the
    # mapping is fixed) after the others are written, as Ocean writes them and test-mapping shows
    if errors := result.errors:
        others = f" (the other items were applied: {result.written} entity write(s))" if result.written else ""
        raise PipelineError("; ".join(errors) + others, retryable=False)
    return result


async def _plan_between_answers(batch: MappedBatch, current: MappingABC[EntityKey, Entity],
                                flags: MappingFlags) -> list[Change]:
    """`plan`; a batch of many items on a helper thread, so that the event loop, which answers
    the senders, gets the GIL at every switch interval meanwhile (pure Python on data no one
    else touches: nothing to share)."""
    if len(batch.upserts) + len(batch.deletes) <= CHUNK:
        return plan(batch, current, flags)
    return await asyncio.to_thread(plan, batch, current, flags)


def _refuse_what_the_target_cannot_write(result: ProcessResult, target: Target) -> None:
    """Before anything is written: the kinds are applied one after another, so an entity the
    target refuses would fail the delivery with the kinds before it written (and a dry run,
    which writes nothing, would have passed it)."""
    if target.resolves_search_queries:
        return
    for change in result.changes:
        if change.writes and is_search_query(change.identifier):
            raise PipelineError(f"{change.blueprint}: {SEARCH_QUERY_ERROR} (kind {change.kind})", retryable=False)


async def _run_processor(
    event: WebhookEvent, processor: WebhookProcessor, mapping: Mapping, fetcher: Fetcher
) -> list[KindResult]:
    """One processor's hooks, fetch and map for each of its kinds, in Ocean's order. Whatever
    its code raises becomes a `PipelineError` saying where; `SystemExit` and a stray
    `CancelledError` too, since they would otherwise stop the listener, or leave the delivery
    in progress for good."""
    try:
        await _awaited(processor, "before_processing", processor.before_processing(event))
        results = [
            await _process_kind(event, processor, mapper, fetcher)
            for kind in _matching_kinds(event, processor, mapping)
            for mapper in mapping.for_kind(kind)
        ]
        await _awaited(processor, "after_processing", processor.after_processing(event))
        return results
    except asyncio.CancelledError as exc:
        if _being_cancelled():  # the worker is being stopped: not the processor's failure
            await _tell_cancelled(processor)
            raise
        error: BaseException = exc
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:
        error = exc
    raise await _failure(error, event, processor) from error


async def _tell_cancelled(processor: WebhookProcessor) -> None:
    """Ocean's `cancel()` hook: the processing was cut short (a stop's timeout), the delivery
    stays to run again. What it raises, or a hook still running after CANCEL_SECONDS, is
    logged: the stop goes on (within its own timeout)."""
    try:
        async with asyncio.timeout(CANCEL_SECONDS):
            await _awaited(processor, "cancel", processor.cancel())
    except (Exception, TimeoutError) as exc:
        log.warning("%s: cancel %s", processor.name, f"raised {_raised(exc)}" if not isinstance(exc, TimeoutError)
                    else f"did not return within {CANCEL_SECONDS:g} s")


#: how long a processor's `cancel()` may take, within a stop
CANCEL_SECONDS = 2.0


async def _awaited(processor: WebhookProcessor, name: str, result: Any) -> Any:
    """A hook's result, awaited: a plain `def` returning an awaitable is fine, one returning
    anything else gets this message, not "object X can't be used in 'await' expression"."""
    if not inspect.isawaitable(result):
        raise PipelineError(f"{processor.name}: {name} must be defined with async def (it returned "
                            f"{quoted(result)})", retryable=False)
    return await result


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _matching_kinds(event: WebhookEvent, processor: WebhookProcessor, mapping: Mapping) -> list[str]:
    kinds = processor.get_matching_kinds(event)
    if not isinstance(kinds, list | tuple) or not all(isinstance(k, str) for k in kinds):
        raise PipelineError(f"{processor.name}: get_matching_kinds must return a list of kinds, got {quoted(kinds)}",
                            retryable=False)
    for kind in kinds:
        if kind not in mapping.kinds:
            raise PipelineError(f"{processor.name}: kind '{kind}' is not in the mapping (kinds: "
                                f"{', '.join(mapping.kinds)})", retryable=False)
    return list(kinds)


async def _failure(error: BaseException, event: WebhookEvent, processor: WebhookProcessor) -> PipelineError:
    """`on_error` is told (what it raises is noted, the first error stays the reason), then the
    error becomes a `PipelineError`: retryable as the error and `should_retry` say."""
    failure = _as_pipeline_error(error, processor)
    if isinstance(error, Exception):
        try:
            await _awaited(processor, "on_error", processor.on_error(event, error))
        except PipelineError as hook_error:  # a plain def: not raised, and not where _awaited is
            failure = PipelineError(f"{failure}; {hook_error}", retryable=failure.retryable)
        except Exception as hook_error:
            failure = PipelineError(f"{failure}; on_error raised too: {_raised(hook_error)}",
                                    retryable=failure.retryable)
    return failure


async def _process_kind(
    event: WebhookEvent, processor: WebhookProcessor, mapper: ResourceMapper, fetcher: Fetcher
) -> KindResult:
    raw = await _awaited(processor, "handle_event", processor.handle_event(event.payload, mapper.resource, fetcher))
    if not (isinstance(raw, RawResults) and isinstance(raw.updated, list) and isinstance(raw.deleted, list)):
        raise PipelineError(f"{processor.name}: handle_event must return RawResults(updated=[...], deleted=[...]), "
                            f"got {raw!r:.80}", retryable=False)
    return KindResult(processor.name, mapper.kind, await map_raw_between_answers(mapper, raw))


def _as_pipeline_error(exc: BaseException, processor: WebhookProcessor) -> PipelineError:
    """Ours (fetch, target) keep their message; others are the processor's code, named with
    the place that raised."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, FetchRefused):
        return PipelineError(f"fetch refused: {exc}", retryable=False)
    ours = hasattr(exc, "retryable")
    message = (str(exc) or type(exc).__name__) if ours else f"processing code failed: {_raised(exc)}"
    if not isinstance(exc, Exception):  # SystemExit and the like: another attempt, then a dead letter
        return PipelineError(message, retryable=True)
    try:
        retryable = bool(getattr(exc, "retryable", True)) and processor.should_retry(exc)
    except Exception as hook_error:
        return PipelineError(f"{message}; should_retry raised: {_raised(hook_error)}", retryable=True)
    return PipelineError(message, retryable=retryable, retry_after=getattr(exc, "retry_after", None))
