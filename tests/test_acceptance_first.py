"""Acceptance first: the listener tells when many senders are waiting, and the workers give way.

Both halves against real parts: the listener's door on a loopback port with a journal whose puts
are held back (so the senders pile up), and the worker pool against a real SQLite journal and
local catalog.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from serve_helpers import BLUEPRINT, HOOK_PATH, github_delivery, hook_env, pr_payload, wait_for, write_config

from ocean_hook.config import load_config
from ocean_hook.metrics import Metrics
from ocean_hook.queue.base import Delivery, PutResult
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.runtime import Runtime
from ocean_hook.server import PRESSURE, Operations, WebhookDoor, create_app
from ocean_hook.worker import WorkerPool


class HeldJournal:
    """Takes every put and answers it only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.puts = 0

    async def put(self, delivery: Delivery) -> PutResult:
        self.puts += 1
        await self.release.wait()
        return PutResult(accepted=True, id=str(self.puts))

    async def depth(self) -> dict[str, int]:
        return {}


async def test_the_door_is_not_calm_while_more_than_pressure_senders_wait(tmp_path: Path, monkeypatch) -> None:
    for name, value in hook_env().items():
        monkeypatch.setenv(name, value)
    config = load_config(write_config(tmp_path))
    runtime = Runtime.build(config)
    journal, metrics = HeldJournal(), Metrics()
    door = WebhookDoor(config, journal, metrics)  # type: ignore[arg-type]
    runner = web.AppRunner(create_app(door, Operations(journal, runtime.target, metrics)))  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:

            async def send(number: int) -> int:
                body, headers = github_delivery(pr_payload(number))
                async with http.post(f"http://{host}:{port}{HOOK_PATH}", data=body, headers=headers) as response:
                    return response.status

            first = [asyncio.create_task(send(n)) for n in range(PRESSURE)]
            await wait_for(lambda: journal.puts == PRESSURE, what=f"{PRESSURE} senders waiting")
            assert door.calm.is_set()  # PRESSURE waiting senders are still calm
            one_more = asyncio.create_task(send(PRESSURE))
            await wait_for(lambda: journal.puts == PRESSURE + 1, what="one sender more")
            assert not door.calm.is_set()
            journal.release.set()
            assert await asyncio.gather(*first, one_more) == [202] * (PRESSURE + 1)
        assert door.calm.is_set()
    finally:
        await runner.cleanup()
        await runtime.close()


def _delivery(number: int) -> Delivery:
    body, headers = github_delivery(pr_payload(number))
    return Delivery(delivery_id=f"d-{number}", method="POST", path=HOOK_PATH, headers=list(headers.items()),
                    body=body, received_at=time.time(), processors=["gh-pr"], order_key=str(number))


async def test_workers_wait_while_the_door_is_under_pressure(tmp_path: Path, monkeypatch) -> None:
    """With the door's calm cleared, a claimed delivery waits (here up to a minute), and is
    applied as soon as the door is calm again."""
    for name, value in hook_env().items():
        monkeypatch.setenv(name, value)
    config = load_config(write_config(tmp_path))
    runtime = Runtime.build(config)
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    calm = asyncio.Event()
    pool = WorkerPool(journal, {p.name: p for p in config.processors}, runtime.mapping, runtime.target,
                      runtime.fetcher, poll_seconds=0.02, door_calm=calm, give_way_seconds=60)
    workers = asyncio.create_task(pool.run())
    try:
        await journal.put(_delivery(1))
        pool.notify()
        await wait_for(lambda: pool.outstanding == 1, what="the delivery claimed")
        await asyncio.sleep(0.5)
        assert await runtime.target.get_entities([(BLUEPRINT, "1")]) == {}
        calm.set()
        await wait_for(lambda: _applied(runtime, "1"), timeout=5, what="the delivery applied once calm")
    finally:
        calm.set()
        pool.stop()
        await workers
        await pool.drain(5)
        await journal.close()
        await runtime.close()


async def _applied(runtime: Runtime, identifier: str) -> bool:
    return bool(await runtime.target.get_entities([(BLUEPRINT, identifier)]))


async def test_a_stop_counts_as_cut_short_only_what_had_started(tmp_path: Path, monkeypatch) -> None:
    """"2 delivery(ies) did not finish in time" where one was running and one only waited for a
    slot (found by probing); the queue then takes all of them back, pending as they were."""
    for name, value in hook_env().items():
        monkeypatch.setenv(name, value)
    config = load_config(write_config(tmp_path))
    runtime = Runtime.build(config)
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    calm = asyncio.Event()  # never set: the one started waits (give_way_seconds) until cut short
    pool = WorkerPool(journal, {p.name: p for p in config.processors}, runtime.mapping, runtime.target,
                      runtime.fetcher, concurrency=1, poll_seconds=0.02, door_calm=calm,
                      give_way_seconds=60)
    workers = asyncio.create_task(pool.run())
    try:
        for number in (1, 2, 3):
            await journal.put(_delivery(number))
        pool.notify()
        await wait_for(lambda: pool.outstanding == 2, what="two claimed, one started")
        pool.stop()
        await workers
        assert await pool.drain(0.1) == 1
        assert await journal.hand_back() == 2
        assert {(d.state.value, d.attempts) for d in await journal.list()} == {("pending", 0)}
    finally:
        await journal.close()
        await runtime.close()
