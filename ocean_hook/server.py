"""The listener: authenticates at the door, journals, and only then answers 2xx.

Follow one webhook: `WebhookDoor.receive` reads the body (413 past the limit), checks the media
type (415), asks `pipeline.admit` to match, authenticate, parse and validate it (404/202 ignored/
401/400/422), `queue.put`s it durably (503 if that fails, 200 for a duplicate delivery id), and
answers 202. A worker (worker.py) picks it up from the queue and runs `pipeline.process`.

Operations endpoints: /healthz (alive), /readyz (journal and target usable), /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp import web

from ocean_hook.config import Config
from ocean_hook.events import WebhookEvent, make_headers, write_capture
from ocean_hook.logs import for_delivery
from ocean_hook.metrics import Metrics
from ocean_hook.pipeline import Admission, admit, check_media_type, order_key
from ocean_hook.queue.base import Delivery, Queue, QueueUnavailable
from ocean_hook.targets.base import Target, TargetError

log = logging.getLogger("ocean_hook.server")

BODY_TIMEOUT_SECONDS = 10.0


def answer(status: int, state: str, **extra: object) -> web.Response:
    return web.json_response({"status": state, **extra}, status=status)


class WebhookDoor:
    """The webhook routes. `notify` wakes the workers once a delivery is journaled."""

    def __init__(
        self,
        config: Config,
        queue: Queue,
        metrics: Metrics,
        *,
        notify: object = None,
        capture_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.metrics = metrics
        self.notify = notify
        self.capture_dir = capture_dir
        self.accepting = True
        self.max_body = config.server.max_body_bytes

    async def receive(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._receive(request)
        self.metrics.received.labels(request.path, str(response.status)).inc()
        self.metrics.ingest_latency.observe(time.perf_counter() - started)
        return response

    async def _receive(self, request: web.Request) -> web.Response:
        if not self.accepting:
            return answer(503, "unavailable", reason="shutting down; send again later")
        if request.method != "POST":
            self.metrics.rejected.labels("method_not_allowed").inc()
            return web.json_response({"status": "rejected", "reason": f"method {request.method} not allowed; use POST"},
                                     status=405, headers={"Allow": "POST"})
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        event = WebhookEvent(request.method, request.path, make_headers(request.headers.items()), body)
        reason = check_media_type(event)
        if reason:
            return self._reject(415, "unsupported_media_type", reason)
        admission = admit(event, self.config.processors_for_path(request.path), now=time.time())
        if admission.ignored:
            self.metrics.ignored.labels(request.path).inc()
            return answer(202, "ignored", reason=admission.reason)
        if not admission.accepted:
            return self._reject(admission.status, admission.label, admission.reason)
        return await self._journal(admission)

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > self.max_body:
            return self._reject(413, "too_large", f"body over the {self.max_body} byte limit")
        try:
            body = await asyncio.wait_for(request.content.read(self.max_body + 1), BODY_TIMEOUT_SECONDS)
        except TimeoutError:
            return self._reject(408, "timeout", "body not received in time")
        if len(body) > self.max_body:
            return self._reject(413, "too_large", f"body over the {self.max_body} byte limit")
        return body

    def _reject(self, status: int, label: str, reason: str) -> web.Response:
        self.metrics.rejected.labels(label).inc()
        log.info("rejected %d %s: %s", status, label, reason)
        return answer(status, "rejected", reason=reason)

    async def _journal(self, admission: Admission) -> web.Response:
        event = admission.event
        dlog = for_delivery(log, event.delivery_id)
        delivery = Delivery.from_event(event, [p.name for p in admission.processors], order_key(admission))
        try:
            put = await self.queue.put(delivery)
        except QueueUnavailable as exc:
            dlog.error("cannot journal delivery: %s", exc)
            return answer(503, "unavailable", reason="cannot store the delivery now; send again later")
        if not put.accepted:
            self.metrics.duplicates.labels(event.path).inc()
            dlog.info("duplicate delivery, already journaled as %s", put.id)
            return answer(200, "duplicate", delivery_id=event.delivery_id)
        if self.capture_dir is not None:
            await asyncio.to_thread(write_capture, self.capture_dir, event)
        if callable(self.notify):
            self.notify()
        dlog.info("accepted for %s", ", ".join(delivery.processors))
        return answer(202, "accepted", delivery_id=event.delivery_id)


class Operations:
    def __init__(self, queue: Queue, target: Target, metrics: Metrics) -> None:
        self.queue = queue
        self.target = target
        self.metrics = metrics

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = []
        try:
            await self.queue.depth()
        except Exception as exc:
            problems.append(f"queue: {exc}")
        try:
            await self.target.check_ready()
        except (TargetError, OSError) as exc:
            problems.append(f"target: {exc}")
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        try:
            for state, count in (await self.queue.depth()).items():
                self.metrics.queue_depth.labels(state).set(count)
        except Exception:  # metrics must answer even when the queue does not
            log.warning("queue depth unavailable for metrics")
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")


async def not_found(request: web.Request) -> web.Response:
    return answer(404, "rejected", reason=f"no processor listens on {request.path}")


def create_app(door: WebhookDoor, ops: Operations) -> web.Application:
    # the body is read by the door with its own limit, answered 413; aiohttp's cap sits above it
    app = web.Application(client_max_size=door.max_body + 1)
    for path in door.config.paths:
        app.router.add_route("*", path, door.receive)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics_text)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
