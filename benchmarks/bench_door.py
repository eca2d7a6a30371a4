"""Where `serve`'s time goes: the same load against the listener taken apart, in one run.

    python benchmarks/bench_door.py                 # 5 alternating rounds of 8,000 requests
    python benchmarks/bench_door.py --rounds 7 --concurrency 128

Four servers, each a child process on 127.0.0.1, each sent the same signed GitHub deliveries
by the same client as in bench_serve.py, round after round in turn:

    bare     an aiohttp handler answering 200 without doing anything (the reference)
    door     ocean-hook's listener (match, HMAC, parse, validate, log, metrics) with an
             instant in-memory stand-in for the journal and no workers
    journal  the same listener with the real SQLite journal (WAL fsynced before each answer), no workers
    serve    `ocean-hook serve` as shipped: journal and workers applying to the local catalog

`door` and `journal` are built here from ocean-hook's own classes (server.WebhookDoor and
create_app, queue.sqlite.SqliteJournal), so nothing in the package exists for the benchmark.
Each row gives the median rate and ratio to `bare` over the rounds, and the server's CPU per
request (all its threads; `loop` = the event loop's thread alone).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import HOOK_PATH, BareServer, closed_loop, cpu_seconds, deliveries, ocean_hook, wait_applied
from serve_helpers import hook_env, start_listening, write_config  # on the path once bench_serve is imported

# The child process for `door` and `journal`: ocean-hook's listener without its workers.
LISTENER = """
import asyncio, itertools, sys
from pathlib import Path
from aiohttp import web
from ocean_hook.config import load_config
from ocean_hook.metrics import Metrics
from ocean_hook.queue.base import PutResult
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.runtime import Runtime
from ocean_hook.server import Operations, WebhookDoor, create_app
from ocean_hook.cli.common import setup_logging

class InstantJournal:
    '''Accepts every delivery at once: what the listener costs with a free journal.'''
    ids = itertools.count(1)
    async def put(self, delivery):
        return PutResult(accepted=True, id=str(next(self.ids)))
    async def depth(self):
        return {}

async def main(mode, config_path):
    setup_logging(verbose=False, quiet=False)
    config = load_config(config_path)
    runtime = Runtime.build(config)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    queue = InstantJournal() if mode == "door" else await SqliteJournal.open(config.state_dir / "journal.db")
    metrics = Metrics()
    door = WebhookDoor(config, queue, metrics)
    runner = web.AppRunner(create_app(door, Operations(queue, runtime.target, metrics)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"ocean-hook listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)  # as serve says
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
"""


@dataclass
class Listener:
    """A `door` or `journal` child; its stderr (the log lines) goes to a file."""

    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    async def start(cls, mode: str, config: Path, log: Path) -> Listener:
        process, url = await start_listening([sys.executable, "-c", LISTENER, mode, str(config)],
                                             env={**os.environ, **hook_env()}, cwd=config.parent, log_path=log,
                                             what=f"the {mode} listener")
        return cls(process, url)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class Series:
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # seconds per request, all threads
    loop: list[float] = field(default_factory=list)  # seconds per request, the event loop's thread


async def measure(url: str, pid: int, load: list, concurrency: int, series: Series, bare_rate: float | None) -> float:
    before, loop_before = cpu_seconds(pid), cpu_seconds(pid, thread=pid)
    run = await closed_loop(url, load, concurrency)
    if set(run.statuses) - {200, 202}:
        raise SystemExit(f"unexpected answers from {url}: {run.statuses}")
    series.rates.append(run.rate)
    series.cpu.append((cpu_seconds(pid) - before) / len(load))
    series.loop.append((cpu_seconds(pid, thread=pid) - loop_before) / len(load))
    if bare_rate is not None:
        series.ratios.append(run.rate / bare_rate)
    return run.rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=8_000, help="requests per server per round")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    names = ("bare", "door", "journal", "serve")
    series = {name: Series() for name in names}
    warm = list(deliveries(500, start=10_000_000))
    with tempfile.TemporaryDirectory(prefix="bench-door-") as tmp:
        work = Path(tmp)
        bare = await BareServer.start()
        door = await Listener.start("door", write_config(work / "door"), work / "door.log")
        journal = await Listener.start("journal", write_config(work / "journal"), work / "journal.log")
        try:
            async with ocean_hook(work / "serve") as serve:
                servers = {"bare": (bare.url + HOOK_PATH, bare.process.pid), "door": (door.url + HOOK_PATH, door.pid),
                           "journal": (journal.url + HOOK_PATH, journal.pid), "serve": (serve.hook_url, serve.pid)}
                for url, _ in servers.values():
                    await closed_loop(url, warm, args.concurrency)
                applied = len(warm)
                await wait_applied(work / "serve" / "state", applied)
                for number in range(args.rounds):
                    load = list(deliveries(args.requests, start=number * args.requests))
                    bare_rate = await measure(*servers["bare"], load, args.concurrency, series["bare"], None)
                    for name in names[1:]:
                        await measure(*servers[name], load, args.concurrency, series[name], bare_rate)
                    applied += len(load)
                    await wait_applied(work / "serve" / "state", applied)  # serve's backlog gone before the next
                    print(f"round {number + 1}: " + ", ".join(
                        f"{name} {series[name].rates[-1]:,.0f}/s" for name in names), file=sys.stderr, flush=True)
        finally:
            for server in (bare, door, journal):
                server.stop()
    print(report(args, series))


def report(args: argparse.Namespace, series: dict[str, Series]) -> str:
    lines = [
        "# where serve's time goes",
        "",
        f"{args.rounds} alternating rounds of {args.requests:,} requests, {args.concurrency} connections, "
        f"{os.cpu_count()} CPUs. Medians over the rounds; ratio = rate / the bare handler's rate in the same round.",
        "",
        "| server | requests/s | ratio to bare (min-max) | CPU/request | of which the loop thread |",
        "|---|---|---|---|---|",
    ]
    for name, s in series.items():
        ratio = (f"**{statistics.median(s.ratios):.0%}** ({min(s.ratios):.0%}-{max(s.ratios):.0%})"
                 if s.ratios else "—")
        lines.append(f"| {name} | {statistics.median(s.rates):,.0f} | {ratio} | "
                     f"{statistics.median(s.cpu) * 1e6:.0f} µs | {statistics.median(s.loop) * 1e6:.0f} µs |")
    return "\n".join(lines)


if __name__ == "__main__":
    asyncio.run(main())
