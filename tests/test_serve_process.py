"""The `serve` process as a whole, run as the CLI starts it: what it reports about itself, and
how it spends memory on a stream of deliveries."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
from serve_helpers import ServeProcess, github_delivery, metric_value, pr_payload, wait_until_settled, write_config

DELIVERIES = 500


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def _send(http: aiohttp.ClientSession, url: str, numbers: list[int]) -> list[int]:
    statuses = []
    for number in numbers:
        body, headers = github_delivery(pr_payload(number, value=number), delivery=str(uuid.uuid4()))
        async with http.post(url, data=body, headers=headers) as response:
            statuses.append(response.status)
    return statuses


async def test_serve_reports_its_process_and_rarely_stops_for_garbage_collection(tmp_path: Path) -> None:
    """The process_* and python_gc_* series are on /metrics, and they show the listener's GC
    tuning at work: with CPython's defaults, 500 deliveries cost five or more young-generation
    collections in this process; tuned, at most a few."""
    server = await ServeProcess.start(write_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            before = await _metrics(http, server.url)
            numbers = list(range(1, DELIVERIES + 1))
            statuses = await asyncio.gather(*(_send(http, server.hook_url, numbers[i::8]) for i in range(8)))
            await wait_until_settled(tmp_path / "state", DELIVERIES, timeout=30)
            after = await _metrics(http, server.url)
    finally:
        assert await server.stop() == 0
    assert {s for batch in statuses for s in batch} == {202}
    assert metric_value(after, "process_resident_memory_bytes") > 10 * 2**20
    assert metric_value(after, "process_cpu_seconds_total") > 0
    assert metric_value(after, "python_info") == 1
    young = "python_gc_collections_total", {"generation": "0"}
    collections = metric_value(after, *young) - metric_value(before, *young)
    assert collections <= 2, f"{collections:.0f} young-generation collections for {DELIVERIES} deliveries"
