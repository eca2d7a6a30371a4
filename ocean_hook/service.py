"""`serve` = listener → journal → workers → pipeline → target, with a clean stop.

On SIGTERM or SIGINT the listener answers 503 from then on, workers stop claiming, in-flight
deliveries get `shutdown_timeout` to finish, and whatever did not finish stays in the journal
(recovered as pending at the next start). A SIGKILL loses nothing that was answered 2xx either:
the answer is only sent after the journal commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ocean_hook.config import Config
from ocean_hook.metrics import Metrics
from ocean_hook.runtime import Runtime, open_queue, queue_spec_from_option
from ocean_hook.server import Operations, WebhookDoor, create_app
from ocean_hook.worker import WorkerPool

log = logging.getLogger("ocean_hook.serve")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None
    capture_dir: Path | None = None
    queue: str | None = None
    target: str | None = None


async def serve(
    config: Config, options: ServeOptions, *, on_ready: Callable[[str], None] | None = None
) -> None:
    for warning in config.warnings:
        log.warning(warning)
    runtime = Runtime.build(config, target=options.target)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    queue = await open_queue(
        queue_spec_from_option(options.queue, config.queue), config.state_dir,
        dedup_window_seconds=config.server.dedup_window_seconds,
    )
    recovered = await queue.recover()
    if recovered:
        log.info("recovered %d delivery(ies) left in progress by an earlier run", recovered)
    metrics = Metrics()
    pool = WorkerPool(
        queue, {p.name: p for p in config.processors}, runtime.mapping, runtime.target, runtime.fetcher,
        concurrency=options.workers or config.server.workers, metrics=metrics,
        log_plans=runtime.target.name == "dry-run",
    )
    door = WebhookDoor(config, queue, metrics, notify=pool.notify, capture_dir=options.capture_dir)
    runner = web.AppRunner(create_app(door, Operations(queue, runtime.target, metrics)), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        url = _url(site, options.host)
        log.info("listening on %s (paths: %s)", url, ", ".join(config.paths))
        if on_ready is not None:
            on_ready(url)
        stop = _stop_event()
        workers = asyncio.create_task(pool.run())
        await stop.wait()
        log.info("stopping: no new deliveries accepted, finishing in-flight work")
        door.accepting = False
        pool.stop()
        await workers
        cancelled = await pool.drain(config.server.shutdown_timeout_seconds)
        if cancelled:
            log.warning("%d delivery(ies) did not finish in time; they stay pending", cancelled)
    finally:
        await runner.cleanup()
        await queue.close()
        await runtime.close()


def _url(site: web.TCPSite, host: str) -> str:
    server = site._server  # the bound socket tells the real port when --port 0 was asked
    port = server.sockets[0].getsockname()[1] if server and server.sockets else site._port  # type: ignore[union-attr]
    return f"http://{host}:{port}"


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop
