"""Load generator for `ocean-hook serve`, measured against a bare aiohttp handler in the same run.

    python benchmarks/bench_serve.py                      # all four measurements
    python benchmarks/bench_serve.py --quick              # all four, smaller, in under a minute
    python benchmarks/bench_serve.py --only throughput --rounds 7 --concurrency 64
    python benchmarks/bench_serve.py --markdown results.md

(a) throughput: signed GitHub deliveries (HMAC-SHA256 verified at the door, journaled in SQLite
    WAL, fsynced before the 202, workers applying them to the local catalog) sent by
    a concurrent aiohttp client on 127.0.0.1, then (b) the same client, same concurrency, same
    requests against a bare aiohttp handler answering 200 without doing anything. Both servers
    are child processes; rounds alternate between them. The median ratio (a)/(b) over the rounds
    is the figure of merit (goal >= 50%); server CPU per request is printed beside it, being
    steadier than rates on a shared machine.
(c) latency: deliveries sent open-loop at a steady rate (default 200/s); receipt -> applied is
    the catalog row's `updated_at` minus the journal's `received_at`, both the server's clock,
    per delivery; p50/p99 over all of them (goal p99 < 50 ms).
(d) memory: RSS of the serving process sampled every N accepted deliveries over a long run
    (default 100,000); first, last and max samples and the kernel's peak (VmHWM).

Every delivery is a different pull request (its own order key), as webhooks from many
repositories would be; updates of one resource are serialized by design and measured by (c) only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from serve_helpers import (
    HOOK_PATH,
    ServeProcess,
    github_delivery,
    metric_value,
    pr_payload,
    write_config,
)

Delivery = tuple[bytes, dict[str, str]]

BARE_SERVER = """
import sys
from aiohttp import web

async def ok(request):
    return web.Response(status=200)

app = web.Application()
app.router.add_post("/webhooks/github", ok)
runner = web.AppRunner(app, access_log=None)

async def main():
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("bare listening on http://127.0.0.1:%d" % runner.addresses[0][1], file=sys.stderr, flush=True)
    import asyncio
    await asyncio.Event().wait()

import asyncio
asyncio.run(main())
"""


# ----------------------------------------------------------------------------- processes


@dataclass
class BareServer:
    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    async def start(cls) -> BareServer:
        process = subprocess.Popen([sys.executable, "-c", BARE_SERVER], stderr=subprocess.PIPE)
        assert process.stderr is not None
        line = await asyncio.to_thread(process.stderr.readline)
        return cls(process, line.decode().split(" on ", 1)[1].strip())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextlib.asynccontextmanager
async def ocean_hook(directory: Path, *args: str) -> AsyncIterator[ServeProcess]:
    config = write_config(directory)
    proc = await ServeProcess.start(config, *args, log_path=directory / "serve.log")
    try:
        yield proc
    finally:
        code = await proc.stop()
        if code != 0:
            print(f"warning: serve exited with {code}; log in {proc.log_path}", file=sys.stderr)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


# ----------------------------------------------------------------------------- load


def deliveries(count: int, start: int = 0, *, pad: int = 0) -> Iterator[Delivery]:
    """Signed, each its own pull request and delivery id (never de-duplicated). `pad` adds bytes:
    real GitHub pull_request deliveries weigh 10-30 KB, and every jq program reads the payload."""
    for number in range(start, start + count):
        payload = pr_payload(number, value=number)
        if pad:
            payload["repository"] = {"description": "x" * pad}
        yield github_delivery(payload, delivery=str(uuid.uuid4()))


@dataclass
class Run:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


async def closed_loop(url: str, load: list[Delivery], concurrency: int) -> Run:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    run = Run()
    items = iter(load)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            for body, headers in items:
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    run.statuses[response.status] = run.statuses.get(response.status, 0) + 1
                    run.sent += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
    return run


async def open_loop(url: str, load: list[Delivery], rate: float) -> Run:
    """Requests at a fixed schedule (`rate` per second) whatever the answers, as senders do."""
    run = Run()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def send(body: bytes, headers: dict[str, str]) -> None:
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                run.statuses[response.status] = run.statuses.get(response.status, 0) + 1
                run.sent += 1

        started = time.perf_counter()
        tasks = []
        for index, (body, headers) in enumerate(load):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(body, headers)))
        await asyncio.gather(*tasks)
        run.seconds = time.perf_counter() - started
    return run


async def wait_applied(state_dir: Path, count: int, timeout: float = 600.0) -> float:
    """Seconds until `count` deliveries are done in the journal (read-only, as another process)."""
    started = time.perf_counter()
    db = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        while time.perf_counter() - started < timeout:
            (done,) = db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'done'").fetchone()
            if done >= count:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    finally:
        db.close()
    raise TimeoutError(f"{count} deliveries not applied within {timeout}s")


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ----------------------------------------------------------------------------- measurements


@dataclass
class Round:
    bare: Run
    hook: Run
    bare_cpu: float  # server CPU seconds, all threads
    hook_cpu: float
    hook_main_cpu: float  # the event loop's thread alone
    drain: float  # seconds from the last answer until all of the round's deliveries were applied

    @property
    def ratio(self) -> float:
        return self.hook.rate / self.bare.rate

    @property
    def settled_rate(self) -> float:
        """Deliveries answered *and* applied per second: what a sustained load can keep up with."""
        return self.hook.sent / (self.hook.seconds + self.drain)


async def throughput(args: argparse.Namespace, work: Path, out: list[str]) -> None:
    """`--rounds` alternating bare/ocean-hook runs: on a shared machine the bare handler's rate
    alone moves by half from one minute to the next, so each round's ratio pairs runs taken
    seconds apart, and the median of the rounds is the figure."""
    warm = list(deliveries(500, start=10_000_000, pad=args.pad))
    state = work / "throughput" / "state"
    rounds: list[Round] = []
    bare = await BareServer.start()
    try:
        async with ocean_hook(work / "throughput", *args.serve_args) as proc:
            await closed_loop(bare.url + HOOK_PATH, warm, args.concurrency)
            await closed_loop(proc.hook_url, warm, args.concurrency)
            applied = len(warm)
            await wait_applied(state, applied)
            for number in range(args.rounds):
                load = list(deliveries(args.requests, start=number * args.requests, pad=args.pad))
                before = cpu_seconds(bare.process.pid)
                bare_run = await closed_loop(bare.url + HOOK_PATH, load, args.concurrency)
                bare_cpu = cpu_seconds(bare.process.pid) - before
                before, main_before = cpu_seconds(proc.pid), cpu_seconds(proc.pid, thread=proc.pid)
                hook_run = await closed_loop(proc.hook_url, load, args.concurrency)
                hook_cpu = cpu_seconds(proc.pid) - before
                main_cpu = cpu_seconds(proc.pid, thread=proc.pid) - main_before
                applied += len(load)
                drain = await wait_applied(state, applied)
                rounds.append(Round(bare_run, hook_run, bare_cpu, hook_cpu, main_cpu, drain))
            async with aiohttp.ClientSession() as http, http.get(proc.url + "/metrics") as response:
                metrics = await response.text()
    finally:
        bare.stop()
    accepted = metric_value(metrics, "ocean_hook_deliveries_received_total", {"path": HOOK_PATH, "status": "202"})
    median = statistics.median(r.ratio for r in rounds)
    per_request = 1e6 / args.requests
    out += [
        "## (a)+(b) throughput, same client, alternating runs",
        "",
        f"{args.rounds} rounds of {args.requests:,} requests, {args.concurrency} concurrent connections, one aiohttp "
        "client process; each round runs the bare handler, then ocean-hook, then waits until ocean-hook has "
        "applied the round. CPU is the server process's (all threads; `loop` = the event loop's thread), "
        "in microseconds per request.",
        "",
        "| round | bare handler | ocean-hook (HMAC + SQLite journal, workers on) | ratio | CPU/request bare | "
        "CPU/request ocean-hook (loop) | applied after the last answer | answered and applied |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {n + 1} | {r.bare.rate:,.0f}/s | {r.hook.rate:,.0f}/s | {r.ratio:.0%} "
          f"| {r.bare_cpu * per_request:.0f} us | {r.hook_cpu * per_request:.0f} us "
          f"({r.hook_main_cpu * per_request:.0f} us) | {r.drain:.2f}s | {r.settled_rate:,.0f}/s |"
          for n, r in enumerate(rounds)),
        "",
        f"**median ratio: {median:.0%}** of the bare handler (goal >= 50%). Answers: bare "
        f"{merged(r.bare.statuses for r in rounds)}, ocean-hook {merged(r.hook.statuses for r in rounds)}; the "
        f"server counted {accepted:.0f} accepted (incl. {len(warm)} warm-up). Median rate of the round's "
        f"deliveries answered and applied (first request to last applied): "
        f"{statistics.median(r.settled_rate for r in rounds):,.0f}/s.",
        "",
    ]


def merged(counts: Iterator[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for count in counts:
        for status, n in count.items():
            total[status] = total.get(status, 0) + n
    return total


def cpu_seconds(pid: int, *, thread: int | None = None) -> float:
    """User + system CPU of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latency(args: argparse.Namespace, work: Path, out: list[str]) -> None:
    count = int(args.rate * args.seconds)
    load = list(deliveries(count, pad=args.pad))
    state = work / "latency" / "state"
    async with ocean_hook(work / "latency", *args.serve_args) as proc:
        await closed_loop(proc.hook_url, list(deliveries(200, start=10_000_000, pad=args.pad)), 8)  # warm up
        await wait_applied(state, 200)
        run = await open_loop(proc.hook_url, load, args.rate)
        await wait_applied(state, 200 + count)
        async with aiohttp.ClientSession() as http, http.get(proc.url + "/metrics") as response:
            metrics = await response.text()
    measured = end_to_end_latencies_for(state, range(count))
    p50, p99, worst = (percentile(measured, 0.50), percentile(measured, 0.99), measured[-1])
    hist_count = metric_value(metrics, "ocean_hook_end_to_end_seconds_count")
    under_50 = metric_value(metrics, "ocean_hook_end_to_end_seconds_bucket", {"le": "0.05"})
    out += [
        "## (c) receipt -> applied at a steady rate",
        "",
        f"{count} deliveries open-loop at {args.rate:.0f}/s for {args.seconds:.0f}s (achieved "
        f"{run.rate:,.0f}/s, answers {run.statuses}).",
        "",
        "| p50 | p99 | max | mean |",
        "|---|---|---|---|",
        f"| {p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms | {worst * 1000:.1f} ms | "
        f"{statistics.fmean(measured) * 1000:.1f} ms |",
        "",
        f"Per delivery: catalog `updated_at` minus journal `received_at` (server clock). Cross-check, "
        f"`ocean_hook_end_to_end_seconds` histogram: {under_50:.0f} of {hist_count:.0f} "
        f"({under_50 / hist_count:.1%}) under 50 ms (includes warm-up).",
        "",
    ]


def end_to_end_latencies_for(state_dir: Path, numbers: range) -> list[float]:
    """The latencies of the measured deliveries only (warm-up ones have numbers >= 10,000,000)."""
    journal = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    catalog = sqlite3.connect(f"file:{state_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        # order keys are `<path>:<pull request number>`
        received = {int(key.rpartition(":")[2]): at
                    for key, at in journal.execute("SELECT order_key, received_at FROM deliveries")}
        applied = {int(ident): datetime.fromisoformat(at).timestamp()
                   for ident, at in catalog.execute("SELECT identifier, updated_at FROM entities")}
    finally:
        journal.close()
        catalog.close()
    return sorted(applied[n] - received[n] for n in numbers if n in applied and n in received)


async def memory(args: argparse.Namespace, work: Path, out: list[str]) -> None:
    samples: list[tuple[int, int]] = []
    state = work / "memory" / "state"
    async with ocean_hook(work / "memory", *args.serve_args) as proc:
        started = time.perf_counter()
        sent = 0
        while sent < args.total:
            batch = min(args.sample_every, args.total - sent)
            await closed_loop(proc.hook_url, list(deliveries(batch, start=sent, pad=args.pad)), args.concurrency)
            sent += batch
            samples.append((sent, rss_kib(proc.pid)[0]))  # while the batch is being applied
            await wait_applied(state, sent)  # a sustainable pace: the backlog never exceeds a batch
        elapsed = time.perf_counter() - started
        rss, hwm = rss_kib(proc.pid)
    values = [kib for _, kib in samples]
    out += [
        "## (d) memory over a long run",
        "",
        f"{args.total:,} deliveries in {elapsed:.0f}s ({args.total / elapsed:,.0f}/s incl. applying), "
        f"sent in batches of {args.sample_every:,} ({args.concurrency} connections), each applied before "
        "the next; RSS sampled at the end of each batch's sending.",
        "",
        "| first sample | last sample | max sample | after all applied | peak (VmHWM) |",
        "|---|---|---|---|---|",
        f"| {values[0] / 1024:.1f} MiB | {values[-1] / 1024:.1f} MiB | {max(values) / 1024:.1f} MiB | "
        f"{rss / 1024:.1f} MiB | {hwm / 1024:.1f} MiB |",
        "",
        "Samples (deliveries: MiB): " + ", ".join(f"{n:,}: {kib / 1024:.1f}" for n, kib in samples),
        "",
    ]


#: (option, default, --quick default)
QUICK = (("requests", 8_000, 4_000), ("seconds", 15.0, 5.0), ("total", 100_000, 10_000),
         ("sample_every", 5_000, 2_000))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["throughput", "latency", "memory"], action="append")
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults, all four in under a minute (for a quick before/after)")
    parser.add_argument("--requests", type=int, help="(a)/(b) requests per run (default 8,000; quick 4,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="(a)/(b)/(d) connections")
    parser.add_argument("--rounds", type=int, default=5, help="(a)/(b) alternating bare/ocean-hook rounds (default 5)")
    parser.add_argument("--rate", type=float, default=200.0, help="(c) deliveries per second")
    parser.add_argument("--seconds", type=float, help="(c) duration (default 15; quick 5)")
    parser.add_argument("--total", type=int, help="(d) deliveries (default 100,000; quick 10,000)")
    parser.add_argument("--sample-every", type=int, help="(d) RSS sample interval (default 5,000; quick 2,000)")
    parser.add_argument("--serve-arg", dest="serve_args", action="append", default=[],
                        help="extra `ocean-hook serve` argument (repeatable), e.g. --serve-arg=-q")
    parser.add_argument("--pad", type=int, default=0, help="extra bytes in every payload (default: ~110 B payloads)")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args()
    for name, full, quick in QUICK:
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    only = set(args.only or ["throughput", "latency", "memory"])
    out = [
        "# ocean-hook serve benchmark",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} CPUs, load average before the run {os.getloadavg()[0]:.2f}, "
        f"payload {len(next(deliveries(1, pad=args.pad))[0]):,} bytes. "
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        if "throughput" in only:
            await throughput(args, work, out)
        if "latency" in only:
            await latency(args, work, out)
        if "memory" in only:
            await memory(args, work, out)
    text = "\n".join(out)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
