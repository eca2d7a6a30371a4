"""Proof of the retry promise: Port goes down (503, then 429 with Retry-After, then dropped
connections), comes back, and no accepted delivery is lost.

The listener runs in-process against a FakePort whose failures are scripted by count, and every
failed delivery attempt costs exactly `TARGET_ATTEMPTS` failing requests (the diff's search is
the first call of an attempt; the token is cached before the outage). So the story is exact:

1. warm-up: one delivery applied (the token is now cached);
2. outage: updates 1 and 2 of PRs 1-3 (6 deliveries, two per order key) exhaust all their
   attempts on the scripted failures: dead-lettered, with the error kept; meanwhile the journal
   shows each retry scheduled at the processor's backoff (0.2 s, 0.4 s, 0.8 s) and the target's
   own retries wait exactly `Retry-After` after a 429, `retry_max_wait` otherwise;
3. end of the outage: PR 4 arrives while two attempts' worth of failures remain: it fails
   twice and its third attempt, after the outage, applies it (recovered by its own retry);
4. recovered: PRs 5 and 6 apply at once; `ocean-hook deliveries retry --all-dead` (the real
   CLI, another process) brings the dead six home, each PR's two updates in order;
5. a Port 422 (schema violation) is not retried: dead after one attempt, Port's message shown
   by `ocean-hook deliveries show`.

Figures are printed, and kept in benchmarks/results/proof_outage.json with OCEAN_HOOK_RECORD_PROOF=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from port_server import FakePort
from proof_helpers import record_result
from serve_helpers import (
    BLUEPRINT,
    delivery_id_of,
    github_delivery,
    github_processor,
    hook_env,
    journal_deliveries,
    metric_value,
    open_journal,
    port_env,
    port_target,
    pr_payload,
    serve_in_process,
    settled_metrics,
    wait_for,
    wait_until_settled,
    write_config,
)

from ocean_hook.queue.base import Delivery, DeliveryState

RETRY = {"max_retries": 3, "initial_retry_delay_seconds": 0.2, "exponential_base_seconds": 2,
         "max_retry_delay_seconds": 5}
BACKOFF = {1: 0.2, 2: 0.4, 3: 0.8}  # delay scheduled after failed attempt n
ATTEMPTS = RETRY["max_retries"] + 1
TARGET_ATTEMPTS = 2  # requests per call, the target's own retries
TARGET_MAX_WAIT = 0.3  # caps the target's backoff (its minimum is 1 s): every non-429 wait is this
RETRY_AFTER = 0.2
OUTAGE_PRS = (1, 2, 3)
UPDATES = (1, 2)
WAVE_1_FAILURES = len(OUTAGE_PRS) * len(UPDATES) * ATTEMPTS * TARGET_ATTEMPTS  # 48
TAIL_FAILURES = 2 * TARGET_ATTEMPTS  # PR 4's first two attempts
SCRIPT = (("503", 20), ("429", 16), ("drop", WAVE_1_FAILURES - 36 + TAIL_FAILURES))
SCHEMA_PR = 7
SCHEMA_MESSAGE = "must have required property 'state'"
TARGET_RETRY_LOG = "Port request failed (%s); retrying in %.2fs"


@dataclass
class Sender:
    http: aiohttp.ClientSession
    url: str
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)  # delivery id -> (PR, value)

    async def send(self, number: int, value: int, *, state: str | None = "open") -> str:
        payload = pr_payload(number, value=value, action="edited")
        payload["pull_request"]["state"] = state
        body, headers = github_delivery(payload)
        async with self.http.post(self.url, data=body, headers=headers) as response:
            assert response.status == 202, await response.text()
        self.sent[delivery_id_of(headers)] = (number, value)
        return delivery_id_of(headers)


@dataclass
class Schedule:
    """What the journal showed of each failed attempt: (delivery id, attempt) -> (failed at,
    retry due at), watched while the outage lasts."""

    seen: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)

    def record(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            if d.state is DeliveryState.FAILED and d.next_attempt_at is not None and d.updated_at is not None:
                self.seen[(d.delivery_id, d.attempts)] = (d.updated_at, d.next_attempt_at)

    def of(self, delivery_id: str) -> dict[int, tuple[float, float]]:
        return {attempt: times for (did, attempt), times in self.seen.items() if did == delivery_id}


@contextlib.asynccontextmanager
async def watching(state: Path, schedule: Schedule) -> AsyncIterator[None]:
    async def watch() -> None:
        await wait_for(lambda: (state / "journal.db").exists(), what="the journal")
        async with open_journal(state) as journal:
            while True:
                schedule.record(await journal.list(DeliveryState.FAILED, limit=1000))
                await asyncio.sleep(0.02)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cli(config: Path, *args: str) -> str:
    """The real `ocean-hook` command, as another process, while the listener runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocean_hook", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **hook_env(), "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


def script_outage(port: FakePort) -> None:
    """The failures, consumed in this order by every API call (the token is already cached)."""
    for kind, times in SCRIPT:
        if kind == "drop":
            port.fail_next("/v1/", 503, times, drop=True)
        elif kind == "429":
            port.fail_next("/v1/", 429, times, headers={"Retry-After": str(RETRY_AFTER)},
                           body={"ok": False, "error": "rate_limited", "message": "too many requests"})
        else:
            port.fail_next("/v1/", 503, times)


def target_waits(records: list[logging.LogRecord]) -> list[tuple[str, float]]:
    """(error, wait) of every retry the Port target itself made."""
    return [(str(r.args[0]), float(r.args[1])) for r in records if r.msg == TARGET_RETRY_LOG]


def upserted_values(port: FakePort, identifier: str) -> list[Any]:
    values = []
    for request in port.calls("POST", f"/v1/blueprints/{BLUEPRINT}/entities"):
        for entity in (request.json or {}).get("entities", [request.json]):
            if isinstance(entity, dict) and entity.get("identifier") == identifier:
                values.append(entity["properties"]["value"])
    return values



async def test_port_outage_loses_nothing_and_retries_follow_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.WARNING, logger="ocean_hook")
    state = tmp_path / "state"
    schedule = Schedule()
    async with FakePort(blueprint_schema={BLUEPRINT: {"required": ["state"]}}) as port:
        target = port_target(port.url, retry_attempts=TARGET_ATTEMPTS, retry_max_wait=TARGET_MAX_WAIT)
        config = write_config(tmp_path, processors=[github_processor(retry=RETRY)], target=target)
        async with (
            serve_in_process(config, workers=4) as server,
            aiohttp.ClientSession() as http,
            watching(state, schedule),
        ):
            sender = Sender(http, server.hook_url)
            warm_up = await sender.send(100, 1)
            await wait_until_settled(state, 1)

            # 2. the outage outlasts every attempt of the first wave
            script_outage(port)
            wave_1 = [await sender.send(n, v) for v in UPDATES for n in OUTAGE_PRS]
            await wait_until_settled(state, 1 + len(wave_1), timeout=30)
            dead = {d.delivery_id: d for d in await journal_deliveries(state, DeliveryState.DEAD)}
            assert set(dead) == set(wave_1)
            assert [upserted_values(port, str(n)) for n in OUTAGE_PRS] == [[], [], []]  # not one write got in

            # 3. PR 4 arrives as the outage ends: two failed attempts, then applied
            tail = await sender.send(4, 1)
            await wait_for(lambda: port.entity(BLUEPRINT, "4"), timeout=10, what="PR 4 applied by its own retry")

            # 4. recovered: new deliveries apply at once; the dead come home from the CLI
            fresh = [await sender.send(n, 1) for n in (5, 6)]
            await wait_until_settled(state, 2 + len(wave_1) + len(fresh))
            said = await cli(config, "deliveries", "retry", "--all-dead")
            assert f"{len(wave_1)} dead deliveries are pending again" in said
            journal = await wait_until_settled(state, 2 + len(wave_1) + len(fresh))

            # 5. a schema violation is final: one attempt, Port's words kept
            rejected = await sender.send(SCHEMA_PR, 1, state=None)
            [schema_dead] = await wait_for(lambda: journal_deliveries(state, DeliveryState.DEAD),
                                           what="the schema violation dead-lettered")
            shown = json.loads(await cli(config, "deliveries", "show", rejected))
            metrics = await settled_metrics(http, server.url, len(journal) + 1 + len(wave_1))

    by_id = {d.delivery_id: d for d in journal}
    last_value = {n: max(v for m, v in sender.sent.values() if m == n) for n, _ in sender.sent.values()}
    del last_value[SCHEMA_PR]
    lost = sorted(n for n, v in last_value.items() if (port.entity(BLUEPRINT, str(n)) or {}).get("properties", {})
                  .get("value") != v)
    waits = target_waits(caplog.records)
    retried_deliveries = {did for did, _ in schedule.seen}
    record_result("proof_outage", {
        "summary": (f"outage suite: {len(sender.sent)} deliveries sent, {len(sender.sent)} accepted, "
                    f"{len(retried_deliveries)} retried, {len(dead) + 1} dead-lettered, "
                    f"{len(dead)} recovered by retry --all-dead, {len(lost)} lost"),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - started, 1),
        "outage_script": {kind: times for kind, times in SCRIPT},
        "deliveries_sent": len(sender.sent),
        "accepted": len(sender.sent),
        "retried": len(retried_deliveries),
        "attempts_failed": int(metric_value(metrics, "ocean_hook_deliveries_failed_total")),
        "target_retries": len(waits),
        "dead_lettered": len(dead) + 1,
        "dead_lettered_by_outage": len(dead),
        "dead_lettered_by_port_422": 1,
        "recovered_by_own_retry": 1,
        "recovered_by_retry_all_dead": sum(by_id[d].state is DeliveryState.DONE for d in dead),
        "lost": len(lost),
    })

    # nothing lost: every PR holds its latest update, every delivery of the outage is done
    assert lost == []
    assert {d.state for d in journal} == {DeliveryState.DONE}
    assert set(by_id) == {warm_up, *wave_1, tail, *fresh}
    for n in OUTAGE_PRS:
        assert upserted_values(port, str(n)) == list(UPDATES)  # in order, once each, after the retry
    assert by_id[tail].attempts == 3 and by_id[fresh[0]].attempts == 1

    # dead letters kept their attempts and their last error
    for d in dead.values():
        assert d.attempts == ATTEMPTS and d.next_attempt_at is None
        assert d.last_error and any(sign in d.last_error for sign in ("unreachable", "503", "429"))

    # the processor's backoff, as scheduled in the journal, and honoured
    for delivery_id in [*wave_1, tail]:
        seen = schedule.of(delivery_id)
        expected = BACKOFF if delivery_id in dead else {1: BACKOFF[1], 2: BACKOFF[2]}
        assert sorted(seen) == sorted(expected), (delivery_id, seen)
        for attempt, (failed_at, due) in seen.items():
            assert due - failed_at == pytest.approx(expected[attempt], abs=1e-3)
            if attempt + 1 in seen:
                assert seen[attempt + 1][0] >= due  # the next attempt did not start early

    # the target's own retries: exactly Retry-After after a 429, its capped backoff otherwise
    failed_attempts = len(wave_1) * ATTEMPTS + 2
    assert len(waits) == failed_attempts * (TARGET_ATTEMPTS - 1)
    assert {w for e, w in waits if "429" in e} == {RETRY_AFTER}
    assert {w for e, w in waits if "429" not in e} == {TARGET_MAX_WAIT}
    assert any("Server disconnected" in e for e, _ in waits)  # the dropped connections

    # 422: dead after exactly one attempt, Port's message visible, never sent twice
    assert (schema_dead.delivery_id, schema_dead.attempts) == (rejected, 1)
    assert shown["state"] == "dead" and shown["attempts"] == 1 and SCHEMA_MESSAGE in shown["last_error"]
    assert len(upserted_values(port, str(SCHEMA_PR))) == 1
    assert port.entity(BLUEPRINT, str(SCHEMA_PR)) is None

    assert metric_value(metrics, "ocean_hook_deliveries_retried_total") == len(wave_1) * (ATTEMPTS - 1) + 2
    assert metric_value(metrics, "ocean_hook_deliveries_dead_lettered_total") == len(wave_1) + 1
    assert metric_value(metrics, "ocean_hook_deliveries_failed_total") == failed_attempts + 1
    assert time.monotonic() - started < 60
