"""`ocean-hook serve` end to end: the real listener on 127.0.0.1, real HTTP, real SQLite files.

Every rejection is checked twice: the answer the sender gets, and that nothing reached the
journal. Acceptance is checked where it matters, in the catalog the workers write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import resource
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from port_server import FakePort
from serve_helpers import (
    BLUEPRINT,
    HOOK_PATH,
    MAPPING,
    SECRET,
    SECRET_ENV,
    ServeProcess,
    SlowPort,
    delivery_id_of,
    github_delivery,
    github_headers,
    github_processor,
    hook_env,
    journal_deliveries,
    metric_value,
    port_env,
    port_target,
    pr_payload,
    read_entity,
    serve_in_process,
    settled_metrics,
    wait_for,
    wait_for_entity,
    wait_until_settled,
    write_config,
)
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.queue.base import DeliveryState
from ocean_hook.targets.local import LocalCatalog

SMALL_LIMIT = 4096


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]) -> tuple[int, dict]:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def cli(*args: str) -> Any:
    """The real `ocean-hook` command in a thread (it runs its own event loop), tables unwrapped."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False,
                                   env={"COLUMNS": "200"})


async def in_chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    """A body aiohttp sends with `Transfer-Encoding: chunked`: no Content-Length up front."""
    for start in range(0, len(body), size):
        yield body[start : start + size]
        await asyncio.sleep(0.001)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the door


def _signed(payload: Any, **options: Any) -> tuple[bytes, dict[str, str]]:
    return github_delivery(payload, **options)


def _oversized() -> tuple[bytes, dict[str, str]]:
    return _signed(pr_payload(1, title="x" * (2 * SMALL_LIMIT)))


def _raw(body: bytes, **options: Any) -> tuple[bytes, dict[str, str]]:
    return body, github_headers(body, **options)


# case: (method, path, make body+headers, send chunked?, status, words the reason must contain)
REJECTIONS = {
    "413 with Content-Length": ("POST", HOOK_PATH, _oversized, False, 413, ["byte limit"]),
    "413 chunked, no Content-Length": ("POST", HOOK_PATH, _oversized, True, 413, ["byte limit"]),
    "415 text/plain": ("POST", HOOK_PATH, lambda: _signed(pr_payload(1), content_type="text/plain"), False, 415,
                       ["Content-Type", "text/plain"]),
    "404 unknown path": ("POST", "/webhooks/gitlab", lambda: _signed(pr_payload(1)), False, 404, ["/webhooks/gitlab"]),
    "405 GET": ("GET", HOOK_PATH, lambda: (b"", {}), False, 405, ["GET", "POST"]),
    "405 POST to /healthz": ("POST", "/healthz", lambda: _signed(pr_payload(1)), False, 405, ["POST", "use GET"]),
    "401 missing signature": ("POST", HOOK_PATH, lambda: _signed(pr_payload(1), secret=None), False, 401,
                              ["missing", "X-Hub-Signature-256"]),
    "401 wrong secret": ("POST", HOOK_PATH, lambda: _signed(pr_payload(1), secret="not-the-secret"), False, 401,
                         ["signature mismatch in header X-Hub-Signature-256"]),
    "400 malformed JSON, signed": ("POST", HOOK_PATH, lambda: _raw(b'{"action": "opened", "pull_request": {'), False,
                                   400, ["malformed JSON", "line 1"]),
    "422 fails validate": ("POST", HOOK_PATH, lambda: _signed({"action": "opened", "pull_request": {"title": "t"}}),
                           False, 422, [".pull_request.number != null"]),
}


@pytest.mark.parametrize("case", REJECTIONS, ids=list(REJECTIONS))
async def test_rejected_at_the_door_and_nothing_journaled(tmp_path: Path, http, case: str) -> None:
    method, path, make, chunked, status, words = REJECTIONS[case]
    config = write_config(tmp_path, server={"max_body_bytes": SMALL_LIMIT})
    async with serve_in_process(config) as server:
        body, headers = make()
        data = in_chunks(body, 512) if chunked else body
        async with http.request(method, server.url + path, data=data, headers=headers) as response:
            answer = await response.json()
            assert response.status == status, answer
        assert answer["status"] == "rejected"
        for word in words:
            assert word in answer["reason"]
        metrics = await (await http.get(server.url + "/metrics")).text()
    assert await journal_deliveries(server.state_dir) == []
    assert metric_value(metrics, "ocean_hook_deliveries_rejected_total") == 1
    assert metric_value(metrics, "ocean_hook_deliveries_processed_total") == 0


async def test_event_no_processor_matches_is_202_ignored_and_not_journaled(tmp_path: Path, http) -> None:
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery({"action": "opened", "issue": {"number": 1}}, event="issues")
        status, answer = await post(http, server.hook_url, body, headers)
        metrics = await (await http.get(server.url + "/metrics")).text()
    assert (status, answer["status"]) == (202, "ignored")
    assert await journal_deliveries(server.state_dir) == []
    assert metric_value(metrics, "ocean_hook_deliveries_ignored_total", {"path": HOOK_PATH}) == 1


async def test_body_arriving_in_many_chunks_is_read_whole(tmp_path: Path, http) -> None:
    """The signature covers every byte: a body read only up to its first chunk would fail it."""
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery(pr_payload(3, title="t" * 200_000))
        status, answer = await post(http, server.hook_url, in_chunks(body, 4096), headers)
        assert (status, answer["status"]) == (202, "accepted"), answer
        entity = await wait_for_entity(server.catalog_path, BLUEPRINT, "3")
    assert entity["title"] == "t" * 200_000


async def test_slow_headers_are_cut_off_after_the_idle_timeout(tmp_path: Path, http) -> None:
    """A client trickling its header block a byte at a time loses its socket once
    `server.idle_timeout` has passed, unanswered, while other senders are served meanwhile."""
    async with serve_in_process(write_config(tmp_path, server={"idle_timeout": "2s"})) as server:
        trickling = asyncio.create_task(_trickle_headers(server.url, give_up_after=6.0))
        await asyncio.sleep(0.5)
        body, headers = github_delivery(pr_payload(8))
        meanwhile = (await post(http, server.hook_url, body, headers))[0]
        answer, closed_after = await trickling
    assert meanwhile == 202
    assert answer == b""  # closed without a word: no request was ever complete
    assert closed_after is not None and 1.5 < closed_after < 4.5, closed_after


async def _trickle_headers(url: str, *, give_up_after: float) -> tuple[bytes | None, float | None]:
    """What the listener sent before closing, and after how many seconds; (None, None) if it
    still listened after `give_up_after` seconds."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {HOOK_PATH} HTTP/1.1\r\nHost: {host}\r\nX-Padding: {'p' * 400}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    started = loop.time()
    closed = asyncio.ensure_future(reader.read())
    try:
        for byte in head:
            if closed.done() or loop.time() - started > give_up_after:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait({closed}, timeout=0.1)
    except ConnectionError:  # the close can also surface as a reset on write
        await asyncio.wait({closed}, timeout=1)
    finally:
        writer.close()
    if not closed.done():
        closed.cancel()
        return None, None
    return (b"" if closed.exception() else closed.result()), loop.time() - started


async def test_a_body_still_arriving_at_a_stop_is_finished_or_answered_503_within_the_timeout(
        tmp_path: Path) -> None:
    """The stop closed the connections, and aiohttp dropped what arrived on them: the sender
    waited out the 10 s body timeout for a 408, and the stop ran past shutdown_timeout (found by
    probing). A body completed within the timeout is journaled; one that is not gets a 503."""
    config = write_config(tmp_path, server={"shutdown_timeout": "1s"})
    async with serve_in_process(config) as server:
        finishing = await _half_sent(server.url, pr_payload(61))
        unfinished = await _half_sent(server.url, pr_payload(62))
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.3)
        finishing.writer.write(finishing.rest)  # within the timeout
        answers = await asyncio.gather(finishing.reader.read(), unfinished.reader.read())
        await stopping
        stopped_after = time.monotonic() - started
        for sender in (finishing, unfinished):
            sender.writer.close()
    assert answers[0].startswith(b"HTTP/1.1 202 "), answers[0]
    assert answers[1].startswith(b"HTTP/1.1 503 ") and b"shutting down; send again later" in answers[1], answers[1]
    assert stopped_after < 3, stopped_after
    assert [d.delivery_id for d in await journal_deliveries(tmp_path / "state")] == [finishing.delivery_id]


@dataclass
class _HalfSent:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    rest: bytes
    delivery_id: str


async def _half_sent(url: str, payload: dict[str, Any]) -> _HalfSent:
    """A signed delivery whose headers and first half of the body are sent, the rest held back."""
    host, port = url.removeprefix("http://").split(":")
    body, headers = github_delivery(payload)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST {HOOK_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{head}"
                 "Connection: close\r\n\r\n".encode() + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.2)  # the listener is reading it
    return _HalfSent(reader, writer, body[len(body) // 2:], delivery_id_of(headers))


# ----------------------------------------------------------------------------- acceptance


async def test_accepted_then_applied_to_the_local_catalog(tmp_path: Path, http) -> None:
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery(pr_payload(7, value=3))
        status, answer = await post(http, server.hook_url, body, headers)
        assert status == 202
        assert answer == {"status": "accepted", "delivery_id": delivery_id_of(headers)}
        entity = await wait_for_entity(server.catalog_path, BLUEPRINT, "7")
        [delivery] = await wait_until_settled(server.state_dir, 1)
    assert entity == {"identifier": "7", "title": "PR 7", "blueprint": BLUEPRINT,
                      "properties": {"value": 3, "state": "open"}}
    assert (delivery.state, delivery.attempts, delivery.body) == (DeliveryState.DONE, 1, body)


async def test_the_log_names_the_fields_a_delivery_left_null(tmp_path: Path, http, caplog) -> None:
    """`applied: ... (1 misconfigured)` said how many, never which field (found by probing)."""
    caplog.set_level(logging.INFO, logger="ocean_hook.worker")
    payload = pr_payload(8)
    del payload["pull_request"]["state"]
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery(payload)
        assert (await post(http, server.hook_url, body, headers))[0] == 202
        await wait_until_settled(server.state_dir, 1)
    said = [r.getMessage() for r in caplog.records if r.name == "ocean_hook.worker"]
    assert f"[{delivery_id_of(headers)}] applied: 1 to create, 0 to update, 0 to delete, 0 unchanged " \
           "(1 misconfigured)" in said
    assert f"[{delivery_id_of(headers)}] misconfigured: pull-request: properties.state is null in 1 entity " \
           "(jq: .state), e.g. 8" in said


async def test_serve_says_a_mapping_key_that_nearly_is_one_of_ports(tmp_path: Path, caplog) -> None:
    """`check` and `test-mapping` warned of `selectr:`; `serve`, which runs the mapping, did not."""
    caplog.set_level(logging.WARNING, logger="ocean_hook.serve")
    config = write_config(tmp_path, mapping=MAPPING.replace("    selector:", "    selectr:"))
    assert "selectr:" in (tmp_path / "mapping.yml").read_text()
    async with serve_in_process(config):
        pass
    said = [r.getMessage() for r in caplog.records if r.name == "ocean_hook.serve"]
    assert f"{tmp_path / 'mapping.yml'}:3 (key resources[0].selectr): unknown key; did you mean 'selector'?" in said


async def test_a_dry_run_serve_makes_no_catalog_and_says_planned(tmp_path: Path, http, caplog) -> None:
    """`serve --target dry-run` created catalog.db (after which test-mapping --config diffed
    against it, empty, in silence) and logged `applied:` (found by probing)."""
    caplog.set_level(logging.INFO, logger="ocean_hook.worker")
    async with serve_in_process(write_config(tmp_path), target="dry-run") as server:
        body, headers = github_delivery(pr_payload(9))
        assert (await post(http, server.hook_url, body, headers))[0] == 202
        await wait_until_settled(server.state_dir, 1)
    assert not (tmp_path / "state" / "catalog.db").exists()
    said = [r.getMessage() for r in caplog.records if r.name == "ocean_hook.worker"]
    assert f"[{delivery_id_of(headers)}] planned: 1 to create, 0 to update, 0 to delete, 0 unchanged" in said


async def test_a_delivery_marked_done_has_its_catalog_write_fsynced_first(tmp_path: Path, http, monkeypatch) -> None:
    """The catalog commits without syncing (synchronous=NORMAL); the journal's helper thread
    fsyncs the catalog's WAL right before its own, so the fsync that makes a delivery's `done`
    durable also makes its entity durable: a power cut cannot keep one without the other."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recorded(fd: int) -> None:
        real_fsync(fd)
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)

    monkeypatch.setattr(os, "fsync", recorded)
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery(pr_payload(7, value=3))
        assert (await post(http, server.hook_url, body, headers))[0] == 202
        await wait_for_entity(server.catalog_path, BLUEPRINT, "7")
        await wait_until_settled(server.state_dir, 1)
        done_at = len(synced)
    assert "catalog.db-wal" in synced[:done_at]
    first = synced.index("catalog.db-wal")
    assert synced[first + 1] == "journal.db-wal"  # the same step, the catalog first
    # once for the write; the rounds after it (the ack's among them) find nothing new to sync
    assert synced[:done_at].count("catalog.db-wal") == 1 and synced[:done_at].count("journal.db-wal") >= 2


async def test_github_form_encoded_delivery_is_accepted(tmp_path: Path, http) -> None:
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery(pr_payload(8, value=5), form=True)
        assert body.startswith(b"payload=")
        status, answer = await post(http, server.hook_url, body, headers)
        assert (status, answer["status"]) == (202, "accepted")
        entity = await wait_for_entity(server.catalog_path, BLUEPRINT, "8")
    assert entity["properties"]["value"] == 5


async def test_duplicate_delivery_id_is_200_and_processed_once(tmp_path: Path, http) -> None:
    async with serve_in_process(write_config(tmp_path)) as server:
        body, headers = github_delivery(pr_payload(9, value=1))
        first = await post(http, server.hook_url, body, headers)
        # the same delivery again, even with another body: the sender's id decides
        again_body, again_headers = github_delivery(pr_payload(9, value=2), delivery=headers["X-GitHub-Delivery"])
        second = await post(http, server.hook_url, again_body, again_headers)
        await wait_for_entity(server.catalog_path, BLUEPRINT, "9")
        await wait_until_settled(server.state_dir, 1)
        metrics = await settled_metrics(http, server.url, 1)
        entity = await read_entity(server.catalog_path, BLUEPRINT, "9")
    assert first == (202, {"status": "accepted", "delivery_id": delivery_id_of(headers)})
    assert second == (200, {"status": "duplicate", "delivery_id": delivery_id_of(headers)})
    assert len(await journal_deliveries(server.state_dir)) == 1
    assert metric_value(metrics, "ocean_hook_deliveries_processed_total") == 1
    assert metric_value(metrics, "ocean_hook_deliveries_duplicate_total", {"path": HOOK_PATH}) == 1
    assert entity["properties"]["value"] == 1


# ----------------------------------------------------------------------------- failures


def _port_config(tmp_path: Path, port: FakePort, retry: dict[str, Any]) -> Path:
    return write_config(tmp_path, processors=[github_processor(retry=retry)], target=port_target(port.url))


def _upserted(port: FakePort, identifier: str) -> list[Any]:
    """The `value` of every upsert of one entity Port received, in the order received."""
    values = []
    for request in port.calls("POST", f"/v1/blueprints/{BLUEPRINT}/entities"):
        body = request.json
        for entity in body.get("entities", [body]) if isinstance(body, dict) else []:
            if entity.get("identifier") == identifier:
                values.append(entity["properties"]["value"])
    return values


async def test_failing_target_is_retried_with_backoff_then_applied(tmp_path: Path, http, monkeypatch) -> None:
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    async with FakePort() as port:
        port.fail_next(f"/v1/blueprints/{BLUEPRINT}/", 503, times=2)
        retry = {"max_retries": 3, "initial_retry_delay_seconds": 0.05, "exponential_base_seconds": 2}
        async with serve_in_process(_port_config(tmp_path, port, retry)) as server:
            body, headers = github_delivery(pr_payload(11, value=4))
            assert (await post(http, server.hook_url, body, headers))[0] == 202
            [delivery] = await wait_until_settled(server.state_dir, 1)
            metrics = await settled_metrics(http, server.url, 1)
        assert port.entity(BLUEPRINT, "11")["properties"]["value"] == 4
    assert (delivery.state, delivery.attempts) == (DeliveryState.DONE, 3)
    assert metric_value(metrics, "ocean_hook_deliveries_failed_total") == 2
    assert metric_value(metrics, "ocean_hook_deliveries_retried_total") == 2
    assert metric_value(metrics, "ocean_hook_deliveries_processed_total") == 1


async def test_ports_retry_after_sets_the_next_attempt_in_the_journal(tmp_path: Path, http, monkeypatch) -> None:
    """A 429 asking for two minutes got the policy's delays, and the delivery was dead-lettered in
    seconds while Port was still throttling (found by probing)."""
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    async with FakePort() as port:
        port.fail_next(f"/v1/blueprints/{BLUEPRINT}/", 429, headers={"Retry-After": "120"})
        retry = {"max_retries": 3, "initial_retry_delay_seconds": 0.05, "max_retry_delay_seconds": 600}
        async with serve_in_process(_port_config(tmp_path, port, retry)) as server:
            assert (await post(http, server.hook_url, *github_delivery(pr_payload(13, value=1))))[0] == 202
            [failed] = await wait_for(lambda: _failed(server.state_dir), what="the failed attempt recorded")
    assert 115 < failed.next_attempt_at - failed.updated_at <= 121
    assert "429" in failed.last_error


async def _failed(state_dir: Path) -> list[Any] | None:
    found = [d for d in await journal_deliveries(state_dir) if d.state is DeliveryState.FAILED]
    return found or None


async def test_a_full_catalog_disk_is_retried_and_not_ready_until_a_write_succeeds(tmp_path: Path, http,
                                                                                   monkeypatch) -> None:
    """The catalog's disk full was an "internal error" with a traceback at every attempt, and
    /readyz said ready all along (found by probing). SQLite's own limit on the file's pages makes
    the write fail as a full disk does."""
    opened: list[sqlite3.Connection] = []
    real_connect = LocalCatalog._connect

    def connect(self: LocalCatalog) -> tuple[sqlite3.Connection, int | None]:
        db, wal = real_connect(self)
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
        opened.append(db)
        return db, wal

    monkeypatch.setattr(LocalCatalog, "_connect", connect)
    retry = {"max_retries": 20, "initial_retry_delay_seconds": 0.2, "exponential_base_seconds": 1}
    config = write_config(tmp_path, processors=[github_processor(retry=retry)])
    async with serve_in_process(config) as server:
        body, headers = github_delivery(pr_payload(21, title="t" * 20_000))
        assert (await post(http, server.hook_url, body, headers))[0] == 202
        [failed] = await wait_for(lambda: _failed(server.state_dir), what="the failed attempt recorded")
        async with http.get(server.url + "/readyz") as response:
            assert response.status == 503
            problems = (await response.json())["problems"]
        for db in opened:
            db.execute("PRAGMA max_page_count=1073741823")  # space again
        await wait_for_entity(server.catalog_path, BLUEPRINT, "21")
        [done] = await wait_until_settled(server.state_dir, 1)
        async with http.get(server.url + "/readyz") as response:
            assert response.status == 200
    message = f"{server.catalog_path}: cannot write the local catalog: database or disk is full"
    assert failed.last_error == message
    assert problems == [f"target: {message}"]
    assert done.state is DeliveryState.DONE


async def test_dead_lettered_with_its_error_then_retried_from_the_cli(tmp_path: Path, http, monkeypatch) -> None:
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    async with FakePort() as port:
        port.fail_next(f"/v1/blueprints/{BLUEPRINT}/", 503, times=2)  # both attempts it is allowed
        retry = {"max_retries": 1, "initial_retry_delay_seconds": 0.05}
        config = _port_config(tmp_path, port, retry)
        async with serve_in_process(config) as server:
            body, headers = github_delivery(pr_payload(12, value=6))
            assert (await post(http, server.hook_url, body, headers))[0] == 202
            [dead] = await wait_until_settled(server.state_dir, 1)
            assert (dead.state, dead.attempts) == (DeliveryState.DEAD, 2)
            assert "503" in dead.last_error
            assert port.entity(BLUEPRINT, "12") is None
            listed = await cli("deliveries", "list", "--state", "dead", "--config", str(config))
            assert listed.exit_code == 0 and "0 pending, 0 in_progress, 0 done, 0 failed, 1 dead" in listed.output
            shown = await cli("deliveries", "show", dead.delivery_id, "--config", str(config))
            assert json.loads(shown.output)["last_error"] == dead.last_error

            retried = await cli("deliveries", "retry", dead.delivery_id, "--config", str(config))
            assert retried.exit_code == 0, retried.output
            await wait_for(lambda: port.entity(BLUEPRINT, "12"), what="the retried delivery applied")
            [done] = await wait_until_settled(server.state_dir, 1)
            metrics = await settled_metrics(http, server.url, 2)  # dead-lettered once, then applied
    assert (done.state, done.attempts) == (DeliveryState.DONE, 1)
    assert metric_value(metrics, "ocean_hook_deliveries_dead_lettered_total") == 1
    assert metric_value(metrics, "ocean_hook_deliveries_processed_total") == 1


async def test_retry_all_dead_leaves_an_update_that_a_newer_one_replaced(tmp_path: Path, http, monkeypatch) -> None:
    """PR 13's first update dies on a Port 422, its second is applied: retrying every dead letter
    must not write the first over the second, unless asked to."""
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    async with FakePort() as port:
        port.fail_next(f"/v1/blueprints/{BLUEPRINT}/", 422, times=1, body={"ok": False, "message": "bad value"})
        config = _port_config(tmp_path, port, {"max_retries": 3, "initial_retry_delay_seconds": 0.05})
        async with serve_in_process(config) as server:
            for value, number in ((1, 13), (2, 13), (7, 14)):
                body, headers = github_delivery(pr_payload(number, value=value))
                assert (await post(http, server.hook_url, body, headers))[0] == 202
                await wait_until_settled(server.state_dir, value if number == 13 else 3)
            settled = {(d.state, d.attempts) for d in await wait_until_settled(server.state_dir, 3)}
            assert settled == {(DeliveryState.DEAD, 1), (DeliveryState.DONE, 1)}
            assert port.entity(BLUEPRINT, "13")["properties"]["value"] == 2
            listed = await cli("deliveries", "list", "--state", "dead", "--config", str(config))
            assert listed.exit_code == 0 and "│ dead (superseded by 2) │" in listed.output, listed.output

            kept = await cli("deliveries", "retry", "--all-dead", "--config", str(config))
            assert kept.exit_code == 0, kept.output
            assert "0 dead deliveries are pending again" in kept.output
            assert "1 left dead, superseded by a newer delivery of the same resource: 1 (by 2)" in kept.output
            one = await cli("deliveries", "retry", "1", "--config", str(config))
            assert one.exit_code == 1 and "superseded by delivery 2" in one.output
            await asyncio.sleep(0.3)  # a worker would have picked a requeued delivery up by now
            assert port.entity(BLUEPRINT, "13")["properties"]["value"] == 2

            forced = await cli("deliveries", "retry", "--all-dead", "--include-superseded", "--config", str(config))
            assert forced.exit_code == 0 and "1 dead deliveries are pending again" in forced.output
            await wait_for(lambda: port.entity(BLUEPRINT, "13")["properties"]["value"] == 1,
                           what="the older update written again, as asked")
    assert _upserted(port, "13") == [1, 2, 1]


async def test_updates_to_one_resource_are_applied_in_arrival_order(tmp_path: Path, http, monkeypatch) -> None:
    """Two PRs, 12 updates each, interleaved, against a slow, jittery target with 4 workers: each
    PR's updates reach Port in the order sent, while the two PRs do run side by side."""
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    updates = 12
    jitter = random.Random(4)  # answers in 0-30 ms: run concurrently, later updates would overtake
    async with SlowPort(answer_delay=lambda: jitter.uniform(0, 0.03)) as port:
        async with serve_in_process(_port_config(tmp_path, port, {}), workers=4) as server:
            for value in range(1, updates + 1):
                for number in (21, 22):
                    body, headers = github_delivery(pr_payload(number, value=value, action="edited"))
                    assert (await post(http, server.hook_url, body, headers))[0] == 202
            await wait_until_settled(server.state_dir, 2 * updates, timeout=20)
        assert _upserted(port, "21") == list(range(1, updates + 1))
        assert _upserted(port, "22") == list(range(1, updates + 1))
        assert port.entity(BLUEPRINT, "21")["properties"]["value"] == updates
        assert port.max_concurrent >= 2  # the two order keys were worked on at the same time


# ----------------------------------------------------------------------------- operations


async def test_health_ready_and_metrics_count_what_happened(tmp_path: Path, http) -> None:
    async with serve_in_process(write_config(tmp_path)) as server:
        async with http.get(server.url + "/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
        async with http.get(server.url + "/readyz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ready"})
        for number in range(3):
            assert (await post(http, server.hook_url, *github_delivery(pr_payload(number))))[0] == 202
        for _ in range(2):
            assert (await post(http, server.hook_url, *github_delivery(pr_payload(9), secret="wrong")))[0] == 401
        assert (await post(http, server.hook_url, *github_delivery({}, event="push")))[0] == 202
        await wait_until_settled(server.state_dir, 3)
        text = await settled_metrics(http, server.url, 3)
        async with http.get(server.url + "/metrics") as response:
            assert response.content_type == "text/plain"
    received = "ocean_hook_deliveries_received_total"
    assert metric_value(text, received, {"path": HOOK_PATH, "status": "202"}) == 4  # 3 accepted + 1 ignored
    assert metric_value(text, received, {"path": HOOK_PATH, "status": "401"}) == 2
    assert metric_value(text, "ocean_hook_deliveries_rejected_total", {"reason": "unauthorized"}) == 2
    assert metric_value(text, "ocean_hook_deliveries_ignored_total", {"path": HOOK_PATH}) == 1
    assert metric_value(text, "ocean_hook_deliveries_processed_total") == 3
    assert metric_value(text, "ocean_hook_entity_writes_total", {"action": "create"}) == 3
    assert metric_value(text, "ocean_hook_end_to_end_seconds_count") == 3
    assert metric_value(text, "ocean_hook_ingest_seconds_count") == 6
    assert metric_value(text, "ocean_hook_queue_depth", {"state": "done"}) == 3


async def test_not_ready_while_the_port_target_is_unreachable_yet_deliveries_are_kept(
    tmp_path: Path, http, monkeypatch
) -> None:
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    nobody = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, processors=[github_processor(retry={"initial_retry_delay_seconds": 30})],
                          target=port_target(nobody))
    async with serve_in_process(config) as server:
        async with http.get(server.url + "/readyz") as response:
            answer = await response.json()
            assert response.status == 503
        assert answer["status"] == "not ready"
        assert any(p.startswith("target:") and "unreachable" in p for p in answer["problems"]), answer
        # the door does not depend on the target: the delivery is journaled, to be retried
        assert (await post(http, server.hook_url, *github_delivery(pr_payload(5))))[0] == 202
        failed = await wait_for(lambda: journal_deliveries(server.state_dir, DeliveryState.FAILED))
    assert "unreachable" in failed[0].last_error


async def test_journal_that_cannot_be_written_answers_503_never_2xx_and_is_not_ready(tmp_path: Path, http) -> None:
    """A real write failure: the serving process's file size limit lowered to 1 byte (EFBIG),
    as a full disk would, then lifted again."""
    proc = await ServeProcess.start(write_config(tmp_path))
    try:
        assert (await post(http, proc.hook_url, *github_delivery(pr_payload(1))))[0] == 202
        await wait_until_settled(tmp_path / "state", 1)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        status, answer = await post(http, proc.hook_url, *github_delivery(pr_payload(2)))
        assert (status, answer["status"]) == (503, "unavailable")
        async with http.get(proc.url + "/readyz") as response:
            assert response.status == 503
            assert "journal" in " ".join((await response.json())["problems"])
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert (await post(http, proc.hook_url, *github_delivery(pr_payload(3))))[0] == 202
        async with http.get(proc.url + "/readyz") as response:
            assert response.status == 200
        await wait_for_entity(tmp_path / "state" / "catalog.db", BLUEPRINT, "3")
    finally:
        assert await proc.stop() == 0
    assert [d.order_key for d in await journal_deliveries(tmp_path / "state")] == [f"{HOOK_PATH}:1", f"{HOOK_PATH}:3"]


async def test_json_logs_carry_the_delivery_id_and_never_the_secret(tmp_path: Path, http) -> None:
    proc = await ServeProcess.start(write_config(tmp_path), "--log-format", "json")
    try:
        body, headers = github_delivery(pr_payload(31, value=1))
        assert (await post(http, proc.hook_url, body, headers))[0] == 202
        assert (await post(http, proc.hook_url, *github_delivery(pr_payload(32), secret=None)))[0] == 401
        invalid_body, invalid_headers = github_delivery({"action": "opened", "pull_request": {"title": "t"}})
        assert (await post(http, proc.hook_url, invalid_body, invalid_headers))[0] == 422
        ignored = github_delivery({"action": "opened", "issue": {"number": 1}}, event="issues")
        assert (await post(http, proc.hook_url, *ignored))[0] == 202
        await wait_until_settled(tmp_path / "state", 1)
        await proc.wait_for_log("applied")
    finally:
        assert await proc.stop() == 0
    text = proc.logs()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line: the listening line too
    assert any(line["message"] == f"ocean-hook listening on {proc.url}" and line["url"] == proc.url for line in lines)
    mine = [line for line in lines if delivery_id_of(headers) in line["message"]]
    assert {line["logger"] for line in mine} == {"ocean_hook.server", "ocean_hook.worker"}
    assert all(line["delivery_id"] == delivery_id_of(headers) for line in mine)
    assert any(line["message"].startswith(f"[-] rejected 401 unauthorized on {HOOK_PATH}: ")  # no id: not signed
               and "X-Hub-Signature-256" in line["message"] and line["delivery_id"] == "-" for line in lines)
    [invalid] = [line for line in lines if "rejected 422 invalid" in line["message"]]
    assert invalid["delivery_id"] == delivery_id_of(invalid_headers)  # signed: the sender's id is logged
    [skipped] = [line for line in lines if line["message"].endswith(f"ignored on {HOOK_PATH}: no processor on "
                                                                     f"{HOOK_PATH} matches this event")]
    assert skipped["delivery_id"] == delivery_id_of(ignored[1])  # it had none (found by probing)
    assert skipped["message"].startswith(f"[{delivery_id_of(ignored[1])}] ")
    assert all("delivery_id" in line for line in lines if line["logger"] == "ocean_hook.server")


async def test_capture_files_are_redacted_and_replay_reads_them(tmp_path: Path, http, monkeypatch) -> None:
    captures = tmp_path / "captures"
    async with serve_in_process(write_config(tmp_path / "live"), capture_dir=captures) as server:
        body, headers = github_delivery(pr_payload(41, value=7))
        headers["Authorization"] = "Bearer leaked-token-123"
        assert (await post(http, server.hook_url, body, headers))[0] == 202
        assert (await post(http, server.hook_url, *github_delivery(pr_payload(42), secret="x")))[0] == 401
        live = await wait_for_entity(server.catalog_path, BLUEPRINT, "41")
    [capture] = list(captures.iterdir())
    text = capture.read_text()
    assert "leaked-token-123" not in text and "[redacted]" in text
    assert json.loads(text)["delivery_id"] == delivery_id_of(headers)

    # replay into another state directory, re-checking the signature on the captured bytes
    monkeypatch.setenv(SECRET_ENV, SECRET)
    other = write_config(tmp_path / "replayed")
    result = await cli("replay", str(captures), "--config", str(other), "--verify", "--format", "json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.output)
    assert (outcome["status"], outcome["auth"]) == ("processed", "passed")
    assert await read_entity(tmp_path / "replayed" / "state" / "catalog.db", BLUEPRINT, "41") == live


async def test_a_header_that_is_not_utf8_is_captured_so_that_it_replays(tmp_path: Path, monkeypatch) -> None:
    """A proxy's `X-Proxy-Note: caf\\xe9` (Latin-1) was written to the capture as a lone surrogate
    escape, which replay refused as invalid JSON (found by probing)."""
    captures = tmp_path / "captures"
    async with serve_in_process(write_config(tmp_path / "live"), capture_dir=captures) as server:
        body, headers = github_delivery(pr_payload(43, value=1))
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        where = urlsplit(server.url)
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        writer.write(b"POST " + HOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head
                     + b"X-Proxy-Note: caf\xe9\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 202"), answer
        await wait_for_entity(server.catalog_path, BLUEPRINT, "43")
    [capture] = list(captures.iterdir())
    assert ["X-Proxy-Note", "caf\u00e9"] in json.loads(capture.read_text())["headers"]
    monkeypatch.setenv(SECRET_ENV, SECRET)
    result = await cli("replay", str(capture), "--config", str(write_config(tmp_path / "replayed")), "--verify",
                       "--format", "json")
    assert result.exit_code == 0, result.output
    assert [(o["status"], o["auth"]) for o in json.loads(result.output)] == [("processed", "passed")]


async def test_sigterm_drains_in_flight_work_answers_503_exits_0_and_leaves_the_rest(
    tmp_path: Path, http, monkeypatch, caplog
) -> None:
    """One worker, four deliveries: the one in flight at SIGTERM finishes, the others stay in the
    journal (none lost), and the next start applies them."""
    async with FakePort(latency=0.3) as port:
        config = write_config(tmp_path, target=port_target(port.url),
                              server={"shutdown_timeout": "10s", "workers": 1})
        proc = await ServeProcess.start(config, env=hook_env(port_env()))
        try:
            for number in (51, 52, 53, 54):
                assert (await post(http, proc.hook_url, *github_delivery(pr_payload(number, value=1))))[0] == 202
            await wait_for(lambda: port.calls(), what="the first delivery in flight at Port")
            proc.terminate()
            await proc.wait_for_log("stopping: no new deliveries accepted")
            status, answer = await post(http, proc.hook_url, *github_delivery(pr_payload(55)))
            assert (status, answer["status"]) == (503, "unavailable")
            async with http.get(proc.url + "/readyz") as response:  # the load balancer looks elsewhere
                assert (response.status, await response.json()) == (503, {"status": "not ready",
                                                                          "problems": ["shutting down"]})
            assert await proc.wait() == 0
        finally:
            proc.kill()
        assert port.entity(BLUEPRINT, "51")["properties"]["value"] == 1
        left = await journal_deliveries(tmp_path / "state")
        assert sorted((d.state, d.attempts) for d in left) == [(DeliveryState.DONE, 1)] + [
            (DeliveryState.PENDING, 0)] * 3  # those claimed ahead too: in progress, they read as a crash's
        assert re.search(r"[1-9] claimed delivery\(ies\) no worker finished are pending again", proc.logs())

        port.latency = 0.0
        for name, value in port_env().items():
            monkeypatch.setenv(name, value)
        caplog.set_level(logging.INFO, logger="ocean_hook")
        async with serve_in_process(config) as server:
            done = await wait_until_settled(server.state_dir, 4)
    assert {d.state for d in done} == {DeliveryState.DONE}
    assert all(port.entity(BLUEPRINT, str(n)) for n in (52, 53, 54))
    assert "left in progress by an earlier run" not in caplog.text
