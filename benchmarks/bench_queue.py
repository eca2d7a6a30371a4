"""Accepted deliveries per second: one `serve` on the SQLite journal, one and two on Redis.

    python benchmarks/bench_queue.py                      # starts its own redis-server on loopback
    python benchmarks/bench_queue.py --deliveries 5000 --concurrency 64 --rounds 3
    python benchmarks/bench_queue.py --redis-url redis://127.0.0.1:6379/15   # FLUSHES that database

Every scenario gets the same load in the same run: signed GitHub pull_request deliveries (built
and signed before the clock starts), sent by one concurrent aiohttp client on 127.0.0.1, spread
round-robin over the instances, to real `ocean-hook serve` processes writing a local catalog.

- accepted/s: deliveries / (first send -> last 2xx answer). A 2xx means the delivery is durable
  in the queue, so this is the listener + queue write path.
- applied/s: deliveries / (first send -> queue drained), i.e. also mapped and written to the
  catalog by the workers. Two instances on Redis share one catalog file.
- Figures are the median of the rounds, and the best round (the one least disturbed by other
  work on the machine). Instances run with `--quiet` (warnings only) so logging is not measured.

Durability is compared like for like by default: the SQLite journal fsyncs each commit before
the 202, and the redis-server started here gets `appendonly yes` + `appendfsync always`, which
fsyncs each write before Redis replies (`--redis-fsync everysec|off` for Redis' faster settings).
With `--redis-url` the server's own settings are used and printed.

Client, instances and redis-server all run on this machine and compete for its cores: read the
figures with the core count printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from redis_server import redis_server  # noqa: E402
from serve_helpers import ServeProcess, github_delivery, pr_payload, write_config  # noqa: E402

from ocean_hook.runtime import open_queue  # noqa: E402

#: distinct order keys (PR numbers) in the load: enough that per-key ordering rarely serialises work
KEYS = 1000
WARMUP = 100


@dataclass(frozen=True)
class Scenario:
    name: str
    queue: str  # sqlite | redis
    instances: int


SCENARIOS = (Scenario("sqlite journal", "sqlite", 1), Scenario("redis", "redis", 1), Scenario("redis", "redis", 2))


@dataclass
class Result:
    accepted_per_s: float
    applied_per_s: float
    statuses: Counter[Any]


Load = list[tuple[bytes, dict[str, str]]]


def build_load(count: int, first: int = 0) -> Load:
    """Signed deliveries, each with its own delivery id; PR numbers cycle over KEYS."""
    return [github_delivery(pr_payload(first + i % KEYS, value=i, action="edited")) for i in range(count)]


async def send_all(urls: list[str], load: Load, concurrency: int) -> tuple[float, Counter[Any]]:
    """Send everything with `concurrency` requests in flight; seconds until the last answer."""
    statuses: Counter[Any] = Counter()
    items = iter(enumerate(load))
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=connector) as http:

        async def sender() -> None:
            for i, (body, headers) in items:
                try:
                    async with http.post(urls[i % len(urls)], data=body, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


async def wait_drained(spec: dict[str, Any], state_dir: Path, done: int, timeout: float = 300) -> None:
    queue = await open_queue(spec, state_dir, dedup_window_seconds=86400)
    try:
        deadline = time.monotonic() + timeout
        while True:
            depth = await queue.depth()
            if depth["done"] + depth["dead"] >= done:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue not drained within {timeout}s: {depth}")
            await asyncio.sleep(0.02)
    finally:
        await queue.close()


@contextlib.asynccontextmanager
async def instances(config: Path, count: int, logs: Path) -> AsyncIterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    try:
        for n in range(count):
            started.append(await ServeProcess.start(config, "--quiet", log_path=logs / f"serve-{n}.log"))
        yield started
    finally:
        for proc in started:
            await proc.stop()


async def run_scenario(scenario: Scenario, deliveries: int, concurrency: int, redis_url: str) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        directory = Path(tmp)
        if scenario.queue == "redis":
            client = redis.Redis.from_url(redis_url)
            client.flushdb()
            client.close()
            spec: dict[str, Any] = {"type": "redis", "url": redis_url}
        else:
            spec = {"type": "sqlite"}
        config = write_config(directory, queue=spec, target={"type": "local", "path": str(directory / "catalog.db")})
        state_dir = directory / "state"
        warmup, load = build_load(WARMUP, first=10 * KEYS), build_load(deliveries)
        async with instances(config, scenario.instances, directory) as procs:
            urls = [p.hook_url for p in procs]
            await send_all(urls, warmup, concurrency)
            await wait_drained(spec, state_dir, WARMUP)
            started = time.perf_counter()
            accept_seconds, statuses = await send_all(urls, load, concurrency)
            await wait_drained(spec, state_dir, WARMUP + deliveries)
            applied_seconds = time.perf_counter() - started
    return Result(deliveries / accept_seconds, deliveries / applied_seconds, statuses)


@contextlib.contextmanager
def redis_for(url: str | None, fsync: str) -> Iterator[str]:
    """The given Redis as it is, or a throwaway one with the requested persistence."""
    if url:
        yield url
        return
    with redis_server() as started:
        client = redis.Redis.from_url(started)
        if fsync != "off":
            client.config_set("appendonly", "yes")
            client.config_set("appendfsync", fsync)
        client.close()
        yield started


def persistence(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        settings = {**client.config_get("appendonly"), **client.config_get("appendfsync")}
    finally:
        client.close()
    return f"redis appendonly {settings['appendonly']}, appendfsync {settings['appendfsync']}"


def report(results: dict[Scenario, list[Result]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.deliveries} deliveries per round, {args.concurrency} concurrent requests, {args.rounds} round(s), "
        f"{os.cpu_count()} CPU core(s) shared by client, instances and redis-server; median of rounds; "
        f"load average {args.load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work on the machine); "
        f"{args.persistence}; SQLite journal: WAL fsynced before each answer.",
        "",
        "| queue | instances | accepted/s | best round | applied/s | accepted/s per round | answers |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for scenario, runs in results.items():
        accepted = [r.accepted_per_s for r in runs]
        applied = [r.applied_per_s for r in runs]
        statuses = sum((r.statuses for r in runs), Counter())
        lines.append(
            f"| {scenario.name} | {scenario.instances} | {statistics.median(accepted):,.0f} | {max(accepted):,.0f} "
            f"| {statistics.median(applied):,.0f} | {', '.join(f'{a:,.0f}' for a in accepted)} "
            f"| {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items(), key=str))} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("OH_TEST_WEBHOOK_SECRET", "serve-test-secret-5f1e9c")
    args.load_before = os.getloadavg()[0]
    results: dict[Scenario, list[Result]] = {s: [] for s in SCENARIOS}
    with redis_for(args.redis_url, args.redis_fsync) as url:
        args.persistence = persistence(url)
        for _ in range(args.rounds):  # rounds interleave scenarios, so drift hits all of them
            for scenario in SCENARIOS:
                results[scenario].append(await run_scenario(scenario, args.deliveries, args.concurrency, url))
                print(f"  {scenario.name} x{scenario.instances}: {results[scenario][-1].accepted_per_s:,.0f}/s",
                      file=sys.stderr)  # fmt: skip
    print(report(results, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=3000, help="timed deliveries per scenario and round")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", help="use this Redis (its database is FLUSHED) instead of starting one")
    parser.add_argument("--redis-fsync", choices=("always", "everysec", "off"), default="always",
                        help="persistence of the redis-server started here (default: always, like the journal)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
