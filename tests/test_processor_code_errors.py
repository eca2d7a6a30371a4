"""What a Python processor's own code does wrong is one failed attempt that says where, never
the end of the listener or of `replay`, and never a delivery left in progress for good."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mapping_texts import ONE_RESOURCE, TWO_RESOURCES
from serve_helpers import journal_deliveries, serve_in_process, wait_for

from ocean_hook.auth.base import Verdict
from ocean_hook.auth.none import build as no_auth
from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.fetch import Fetcher
from ocean_hook.mapping.engine import Mapping
from ocean_hook.mapping.models import parse_port_app_config
from ocean_hook.pipeline import PipelineError, admit, process
from ocean_hook.processors.base import ProcessorSettings, RawResults, WebhookProcessor
from ocean_hook.queue.base import DeliveryState
from ocean_hook.targets.dry_run import DryRunTarget
from ocean_hook.targets.local import LocalCatalog

HERE = Path(__file__).name


async def _cancelled_inside() -> None:
    inner = asyncio.create_task(asyncio.sleep(10))
    inner.cancel()
    await inner  # the processor's own task, cancelled: its CancelledError escapes handle_event


class Misbehaving(WebhookProcessor):
    """Each `options.mode` breaks one hook."""

    def __init__(self, mode: str) -> None:
        super().__init__(ProcessorSettings("bad", "/hooks/bad", ["thing"], no_auth("none", [], {})))
        self.mode = mode

    def should_process_event(self, event: WebhookEvent) -> bool:
        return self._async_true() if self.mode == "async_should" else True  # type: ignore[return-value]

    async def _async_true(self) -> bool:
        return False  # as an `async def should_process_event` answers: a coroutine, always true

    def order_key(self, event: WebhookEvent) -> str:
        return {"order_none": None, "order_list": ["a"]}.get(self.mode, "k")  # type: ignore[return-value]

    def validate_payload(self, payload: Any) -> Verdict:
        return None if self.mode == "validate_none" else Verdict.passed()  # type: ignore[return-value]

    def delivery_id(self, event: WebhookEvent) -> str | None:
        return 42 if self.mode == "numeric_id" else None  # type: ignore[return-value]

    def get_matching_kinds(self, event: WebhookEvent) -> list[str]:
        return {"kinds_str": "thing", "kinds_unknown": ["nope"]}.get(self.mode, ["thing"])  # type: ignore[return-value]

    async def before_processing(self, event: WebhookEvent) -> None:
        if self.mode == "before":
            raise RuntimeError("before boom")

    async def handle_event(self, payload: Any, resource: Any, fetcher: Fetcher) -> RawResults:
        if self.mode == "exit":
            raise SystemExit(3)
        if self.mode == "cancelled":
            await _cancelled_inside()
        if self.mode == "returns_dict":
            return {"updated": [payload]}  # type: ignore[return-value]
        if self.mode in ("raise", "on_error_raises", "should_retry_raises"):
            raise KeyError("handle boom")
        if self.mode == "url_with_key":  # as aiohttp's raise_for_status() says it
            raise RuntimeError("403, message='Forbidden', url='https://api.example.com/x?api_key=ghp_Secret123#frag'")
        return RawResults(updated=[payload])

    async def after_processing(self, event: WebhookEvent) -> None:
        if self.mode == "after":
            raise RuntimeError("after boom")

    async def on_error(self, event: WebhookEvent, error: Exception) -> None:
        if self.mode == "on_error_raises":
            raise ValueError("on_error boom")

    def should_retry(self, error: Exception) -> bool:
        if self.mode == "should_retry_raises":
            raise ValueError("should_retry boom")
        return self.mode != "raise"


def event(payload: Any = None) -> WebhookEvent:
    body = json.dumps(payload or {"id": "x"}).encode()
    return WebhookEvent("POST", "/hooks/bad", make_headers({"Content-Type": "application/json"}), body)


async def run(mode: str) -> PipelineError:
    processor = Misbehaving(mode)
    admission = admit(event(), [processor], now=None)
    assert admission.accepted, admission.reason
    mapping = Mapping(parse_port_app_config(ONE_RESOURCE))
    with pytest.raises(PipelineError) as caught:
        await process(admission.event, [processor], mapping, DryRunTarget(), Fetcher())
    return caught.value


@pytest.mark.parametrize(("mode", "message", "retryable"), [
    ("before", rf"processing code failed: RuntimeError: before boom \(in before_processing, .*{HERE}", True),
    ("after", rf"processing code failed: RuntimeError: after boom \(in after_processing, .*{HERE}", True),
    ("exit", r"processing code failed: SystemExit: 3 \(in handle_event, ", True),
    ("cancelled", r"processing code failed: CancelledError: ", True),
    ("raise", r"processing code failed: KeyError: 'handle boom' \(in handle_event, ", False),  # should_retry: no
    ("on_error_raises", r"KeyError: 'handle boom' .*; on_error raised too: ValueError: on_error boom", True),
    ("should_retry_raises", r"KeyError: 'handle boom' .*; should_retry raised: ValueError: should_retry boom", True),
    ("returns_dict", r"bad: handle_event must return RawResults\(updated=\[\.\.\.\], deleted=\[\.\.\.\]\), got \{'upd",
     False),
    ("kinds_str", r"bad: get_matching_kinds must return a list of kinds, got \"thing\"", False),
    ("kinds_unknown", r"bad: kind 'nope' is not in the mapping \(kinds: thing\)", False),
    # found by probing: the API key went to the log and the dead letter
    ("url_with_key", r"RuntimeError: 403, message='Forbidden', url='https://api.example.com/x' \(in handle_event",
     True),
])
async def test_each_hook_that_fails_is_one_failed_attempt_naming_it(mode: str, message: str, retryable: bool) -> None:
    """Before, a failing before/after_processing escaped as itself (replay ended in a traceback),
    SystemExit stopped the listener, and a wrong return type met an AttributeError inside."""
    error = await run(mode)
    assert re.search(message, str(error)), str(error)
    assert error.retryable is retryable


@pytest.mark.parametrize(("mode", "problem"), [
    ("validate_none", "bad: validate_payload must return a Verdict, got None"),
    # found by probing: a 503 "cannot store the delivery now", which senders retry for ever
    ("order_none", "bad: order_key must return a str, got None"),
    ("order_list", "bad: order_key must return a str, got ['a']"),
    # found by probing: always true, so every event was processed
    ("async_should", "bad: should_process_event must return True or False, not an awaitable"),
])
def test_a_door_method_returning_the_wrong_type_is_named(mode: str, problem: str) -> None:
    admission = admit(event(), [Misbehaving(mode)], now=None)
    assert admission.status == 500 and problem in admission.reason


def test_a_numeric_delivery_id_from_python_is_taken_as_its_digits() -> None:
    """It was a 500 for every delivery ('int' object has no attribute 'encode')."""
    admission = admit(event(), [Misbehaving("numeric_id")], now=None)
    assert admission.accepted and admission.event.delivery_id == "42"


class IgnoresAndReadsItsIdFromThePayload(Misbehaving):
    """A processor ignoring an event, whose delivery id is in the payload: the door looks the id
    up for its log line before the payload is parsed."""

    def __init__(self) -> None:
        super().__init__("ignoring")

    def could_process(self, event: WebhookEvent) -> bool:
        return False

    def delivery_id(self, event: WebhookEvent) -> str | None:
        return str(event.payload["id"])  # TypeError: no payload yet


def test_an_ignored_event_is_202_whatever_the_delivery_id_lookup_raises() -> None:
    """Looking up the sender's id for the `ignored` log line must not turn a 202 into a 500."""
    admission = admit(event(), [IgnoresAndReadsItsIdFromThePayload()], now=None)
    assert (admission.status, admission.ignored, admission.event.delivery_id) == (202, True, None)


PROCESSOR = '''
import sys
from ocean_hook.auth.base import Verdict
from ocean_hook.processors.base import RawResults, WebhookProcessor

class Exits(WebhookProcessor):
    def should_process_event(self, event):
        return True

    def validate_payload(self, payload):
        return Verdict.passed()

    async def handle_event(self, payload, resource, fetcher):
        if payload.get("exit"):
            sys.exit(3)
        return RawResults(updated=[payload])
'''


async def test_a_processor_calling_sys_exit_is_dead_lettered_and_the_listener_stays_up(tmp_path: Path) -> None:
    """One such delivery ended `serve` with exit code 3, and again at every restart."""
    (tmp_path / "exits.py").write_text(PROCESSOR)
    (tmp_path / "mapping.yml").write_text(ONE_RESOURCE)
    config = tmp_path / "ocean-hook.yaml"
    config.write_text("mapping: mapping.yml\nstate_dir: state\nprocessors:\n  - name: exits\n    path: /hooks/exits\n"
                      "    class: exits:Exits\n    kinds: [thing]\n    auth: {scheme: none}\n"
                      "    retry: {max_retries: 1, initial_retry_delay_seconds: 0.05}\n")
    async with serve_in_process(config) as server, aiohttp.ClientSession() as http:
        for payload in ({"id": "a", "exit": True}, {"id": "b"}):
            async with http.post(server.url + "/hooks/exits", json=payload) as response:
                assert response.status == 202
        states = await wait_for(lambda: _settled(server.state_dir), what="both deliveries settled", timeout=10)
    assert states == [DeliveryState.DEAD, DeliveryState.DONE]
    [dead] = [d for d in await journal_deliveries(server.state_dir) if d.state is DeliveryState.DEAD]
    assert dead.attempts == 2 and dead.last_error.startswith("processing code failed: SystemExit: 3 (in handle_event")


async def _settled(state_dir: Path) -> list[DeliveryState] | None:
    states = sorted((d.state for d in await journal_deliveries(state_dir)), key=lambda s: s.value)
    return states if len(states) == 2 and DeliveryState.PENDING not in states and \
        DeliveryState.IN_PROGRESS not in states and DeliveryState.FAILED not in states else None




async def test_an_entity_one_resource_maps_is_not_deleted_by_another_resources_selector(tmp_path: Path) -> None:
    """Two resources of one kind, one selector per item type: the entity was updated by one,
    then deleted by the other (Ocean keeps what any resource of the event maps)."""
    processor = Misbehaving("none")
    mapping = Mapping(parse_port_app_config(TWO_RESOURCES))
    catalog = LocalCatalog(tmp_path / "catalog.db")
    catalog.import_entities([{"identifier": "e1", "blueprint": "thing", "title": "from b"}])
    try:
        admission = admit(event({"id": "e1", "type": "a"}), [processor], now=None)
        result = await process(admission.event, [processor], mapping, catalog, Fetcher())
        assert [(c.action, c.identifier) for c in result.changes] == [("update", "e1")]
        assert (await catalog.get_entities([("thing", "e1")]))[("thing", "e1")]["title"] == "from a"
    finally:
        await catalog.close()


class Slow(Misbehaving):
    """Its handle_event waits until cancelled; `cancel` notes that it was told."""

    def __init__(self, cancel_raises: bool, cancel_takes: float = 0.0) -> None:
        super().__init__("slow")
        self.started = asyncio.Event()
        self.told = 0
        self.cancel_raises = cancel_raises
        self.cancel_takes = cancel_takes

    async def handle_event(self, payload: Any, resource: Any, fetcher: Fetcher) -> RawResults:
        self.started.set()
        await asyncio.sleep(60)
        return RawResults()

    async def cancel(self) -> None:
        self.told += 1
        await asyncio.sleep(self.cancel_takes)
        if self.cancel_raises:
            raise RuntimeError("cancel boom")


@pytest.mark.parametrize("cancel_raises", [False, True])
async def test_processing_cut_short_tells_the_processor_through_cancel(cancel_raises: bool) -> None:
    """`cancel()` was never called, though the README says it can be overridden as in Ocean
    (found by probing): a stop's timeout cuts processing short, and the processor is told."""
    processor = Slow(cancel_raises)
    admission = admit(event(), [processor], now=None)
    mapping = Mapping(parse_port_app_config(ONE_RESOURCE))
    running = asyncio.create_task(process(admission.event, [processor], mapping, DryRunTarget(), Fetcher()))
    await asyncio.wait_for(processor.started.wait(), 5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert processor.told == 1


async def test_a_cancel_hook_that_does_not_return_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel() awaiting 15 s kept a stop with a 2 s shutdown_timeout for 18 s (found by probing)."""
    monkeypatch.setattr("ocean_hook.pipeline.CANCEL_SECONDS", 0.2)
    processor = Slow(False, cancel_takes=30)
    admission = admit(event(), [processor], now=None)
    mapping = Mapping(parse_port_app_config(ONE_RESOURCE))
    running = asyncio.create_task(process(admission.event, [processor], mapping, DryRunTarget(), Fetcher()))
    await asyncio.wait_for(processor.started.wait(), 5)
    running.cancel()
    started = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert processor.told == 1 and asyncio.get_running_loop().time() - started < 2
