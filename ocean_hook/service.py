"""`serve` = listener → journal → workers → pipeline → target, with a clean stop.

On SIGTERM or SIGINT the listener answers 503 from then on, workers stop claiming, in-flight
deliveries get `shutdown_timeout` to finish, and whatever did not finish stays in the journal
(recovered as pending at the next start). A SIGKILL loses nothing that was answered 2xx either:
the answer is only sent after the journal commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ocean_hook.config import Config
from ocean_hook.errors import ConfigError, OceanHookError
from ocean_hook.logs import quiet_sender_errors
from ocean_hook.metrics import Metrics
from ocean_hook.queue.base import DeliveryState, Queue, QueueUnavailable
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.runtime import Runtime, files_clash, open_queue, queue_spec_from_option, target_spec
from ocean_hook.server import JournalHealth, Operations, WebhookDoor, create_app
from ocean_hook.targets.local import LocalCatalog
from ocean_hook.watchdog import Stall, Watchdog, read_stalls, write_stalls
from ocean_hook.worker import WorkerPool

log = logging.getLogger("ocean_hook.serve")


class StartError(OceanHookError):
    """`serve` cannot start where it was told to (address, capture directory): one line, exit 1."""

    exit_code = 1


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None
    capture_dir: Path | None = None
    queue: str | None = None
    target: str | None = None
    #: kills the process if its event loop stalls (`ocean-hook serve` sets one; an embedding
    #: program, a test say, may not want its own process killed)
    watchdog: Watchdog | None = None


async def serve(
    config: Config,
    options: ServeOptions,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, or until `stop` is set when the caller passes one.

    A caller that passes `stop` (tests, an embedding program) owns shutdown: no signal handlers
    are installed, so the process's own handling of Ctrl-C is left alone.
    """
    quiet_sender_errors()
    for warning in config.warnings + config.code_warnings:
        log.warning(warning)
    if options.capture_dir is not None:
        _prepare_capture_dir(options.capture_dir)
    queue_spec = queue_spec_from_option(options.queue, config.queue)
    if shared := files_clash(queue_spec, target_spec(config, options.target), config.state_dir):
        raise ConfigError(shared, where=str(config.file))
    async with contextlib.AsyncExitStack() as resources:  # closed in reverse, whatever fails
        runtime = Runtime.build(config, target=options.target)
        resources.push_async_callback(runtime.close)
        for warning in runtime.mapping.config.warnings:  # read as the mapping was, not from the file again
            log.warning(warning)
        queue = await open_queue(
            queue_spec, config.state_dir,
            dedup_window_seconds=config.server.dedup_window_seconds,
        )
        resources.push_async_callback(queue.close)
        if isinstance(queue, SqliteJournal) and isinstance(runtime.target, LocalCatalog):
            # a delivery the journal marks done has its entities on disk, even across a power cut
            queue.sync_before(runtime.target.sync_writes)
        recovered = await queue.recover()
        if recovered:
            log.info("recovered %d delivery(ies) left in progress by an earlier run", recovered)
        metrics = Metrics()
        watch, stalls = None, {}
        if options.watchdog is not None:
            resources.enter_context(options.watchdog.running())
            watch, stalls = options.watchdog.working_on, read_stalls(options.watchdog.stalls_path)
        refuse = {queue_id: (stall.delivery_id, _culprit(queue_id, config))
                  for queue_id, stall in stalls.items() if stall.alone}

        def workers(concurrency: int, **tuning: Any) -> WorkerPool:
            return WorkerPool(
                queue, {p.name: p for p in config.processors}, runtime.mapping, runtime.target, runtime.fetcher,
                concurrency=concurrency, metrics=metrics, log_plans=runtime.target.name == "dry-run",
                watch=watch, refuse=refuse, **tuning,
            )

        if options.watchdog is not None:
            await _run_stalled_alone(queue, workers(1, prefetch=0), options.watchdog, stalls)
        door_calm = asyncio.Event()  # clear while many senders wait: the workers give way
        pool = workers(options.workers or config.server.workers, door_calm=door_calm)
        health = JournalHealth()
        door = WebhookDoor(config, queue, metrics, notify=pool.notify, capture_dir=options.capture_dir, health=health,
                           calm=door_calm)
        ops = Operations(queue, runtime.target, metrics, health, accepting=lambda: door.accepting)
        # bounded, so idle clients and slow headers cannot hold sockets for aiohttp's default hour
        runner = web.AppRunner(create_app(door, ops), access_log=None,
                               keepalive_timeout=config.server.idle_timeout_seconds)
        await runner.setup()
        resources.push_async_callback(runner.cleanup)
        # signals are handled before anyone is told the URL, and through draining (a second
        # SIGTERM is ignored rather than killing the process mid-drain)
        stopping = resources.enter_context(_stop_signals(stop))
        site = await _listen(runner, options.host, options.port)
        url = _url(site, options.host)
        log.info("listening on %s (paths: %s)", url, ", ".join(config.paths))
        if on_ready is not None:
            on_ready(url)
        await _run_until_stopped(door, pool, stopping, config.server.shutdown_timeout_seconds)
        await _hand_back(queue)


async def _hand_back(queue: Queue) -> None:
    """What a queue cannot take back now (Redis down) another instance takes over later: no
    reason to fail a clean stop."""
    try:
        handed = await queue.hand_back()
    except QueueUnavailable as exc:
        log.warning("cannot hand the claimed deliveries back to the queue (%s); another instance takes them over "
                    "once they have been idle claim_idle_seconds", exc)
        return
    if handed:
        log.info("%d claimed delivery(ies) no worker finished are pending again", handed)


async def _run_stalled_alone(queue: Queue, pool: WorkerPool, watchdog: Watchdog, stalls: dict[str, Stall]) -> None:
    """Before listening, run the deliveries the last stall caught one at a time (`pool` has one
    slot, claims one by one), so that a stall now is the running delivery's alone: the watchdog
    records it as the cause. Deliveries that come first in the journal run alone too."""
    waiting = await _unfinished(queue, stalls)
    if waiting:
        shown = ", ".join(sorted(waiting, key=lambda queue_id: (len(queue_id), queue_id)))  # 9 before 10
        log.warning("the event loop stalled while %d delivery(ies) were being processed; running them one at a "
                    "time before listening: %s", len(waiting), shown)
        watchdog.alone(True)
        running = asyncio.create_task(pool.run())
        while waiting and not running.done():
            await asyncio.sleep(0.05)
            waiting = await _unfinished(queue, {queue_id: stalls[queue_id] for queue_id in waiting})
        pool.stop(finish_claimed=True)  # what it claimed last must not stay in progress: no recovery follows
        await running
        await pool.drain(None)
        watchdog.alone(False)
    try:
        write_stalls(watchdog.stalls_path, {})
    except OSError as exc:  # the next start finds those settled, and runs nothing twice
        log.warning("cannot remove %s: %s", watchdog.stalls_path, exc.strerror or exc)


async def _unfinished(queue: Queue, stalls: dict[str, Stall]) -> set[str]:
    """Queue ids among `stalls` still to run (pending, or claimed and not settled yet)."""
    left = set()
    for queue_id in stalls:
        found = await queue.get(queue_id)
        if found is not None and found.state in (DeliveryState.PENDING, DeliveryState.IN_PROGRESS):
            left.add(queue_id)
    return left


def _culprit(queue_id: str, config: Config) -> str:
    return (f"it stopped the event loop for {config.server.stall_timeout_seconds:g} s (server.stall_timeout) when run "
            "alone: a jq program that never ends on its payload, or processor code that blocks; fix that, then "
            f"`ocean-hook deliveries retry {queue_id}`")


async def _run_until_stopped(door: WebhookDoor, pool: WorkerPool, stop: asyncio.Event, timeout: float) -> None:
    """Work until asked to stop, then answer 503 to new deliveries while in-flight work finishes.

    A worker pool that died is a reason to stop too (its error is raised below), rather than a
    listener accepting work that nobody does.
    """
    workers = asyncio.create_task(pool.run())
    waiting = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiting, workers}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # cancelled from outside: nothing may outlive the journal
        pool.stop()
        workers.cancel()
        await pool.drain(0)
        raise
    finally:
        waiting.cancel()
    if workers.done() and not stop.is_set():
        log.error("the workers stopped unexpectedly; shutting down")
    log.info("stopping: no new deliveries accepted, finishing in-flight work")
    door.accepting = False
    pool.stop()
    await workers
    stopped = time.monotonic()
    cut_short = await pool.drain(timeout)
    await door.close_reads(max(0.0, timeout - (time.monotonic() - stopped)))
    if cut_short:
        log.warning("%d delivery(ies) did not finish within server.shutdown_timeout (%g s): cut short, they run "
                    "again from the start", cut_short, timeout)


def tune_gc_for_serving() -> None:
    """For a process that will do nothing but serve: call once everything is loaded.

    A listener allocates a few dozen short-lived containers per delivery, so CPython's default
    young-generation threshold (700) ran a collection every ~30 deliveries, each walking the
    objects of every request in flight: 190 ms of an 8,500-delivery benchmark, and 110 ms more
    in full collections walking the ~65,000 objects of imported modules, compiled jq programs
    and the config, which live as long as the process. Freezing those and collecting the young
    generation every 10,000 allocations cut the process's garbage collection time from 340 to
    40 ms (~35 us of CPU per delivery). The garbage waiting for a collection stays under a few
    MB, and memory stays flat (benchmarks/bench_serve.py --only memory).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _prepare_capture_dir(directory: Path) -> None:
    """Found unusable at start rather than at every accepted delivery (those would only log it)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StartError(f"--capture {directory}: not a directory") from None
    except OSError as exc:
        raise StartError(f"--capture {directory}: cannot create the directory: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartError(f"--capture {directory}: the directory is not writable")


async def _listen(runner: web.AppRunner, host: str, port: int) -> web.TCPSite:
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise StartError(f"cannot listen on {host}:{port}: {_bind_problem(exc)}") from None
    return site


def _bind_problem(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"no such host or address ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use (another ocean-hook?); choose another --port"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose another --port"
    if exc.errno == errno.EADDRNOTAVAIL or (exc.errno is None and str(exc).startswith("could not bind on any address")):
        # from 3.13 asyncio skips an address it cannot assign (taken for a disabled family,
        # bpo-30945) and, none left, raises this OSError without an errno
        return "this machine has no such address; check --host"
    return exc.strerror or str(exc)


def _url(site: web.TCPSite, host: str) -> str:
    # the bound socket tells the real port when --port 0 was asked; `sockets` is on the
    # concrete server (asyncio's or uvloop's), not on the AbstractServer aiohttp declares
    sockets = getattr(site._server, "sockets", None)
    port = sockets[0].getsockname()[1] if sockets else site._port
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"  # IPv6 in brackets


@contextlib.contextmanager
def _stop_signals(stop: asyncio.Event | None) -> Iterator[asyncio.Event]:
    """The caller's stop event, or one set by SIGTERM/SIGINT (handlers removed on the way out)."""
    if stop is not None:
        yield stop
        return
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, event.set)
            installed.append(sig)
    try:
        yield event
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
