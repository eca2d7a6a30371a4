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
from collections.abc import Callable
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path

from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler as _continue
from prometheus_client import Counter

from ocean_hook.bodies import read_at_most
from ocean_hook.config import OPERATIONS_PATHS, Config
from ocean_hook.events import WebhookEvent, write_capture
from ocean_hook.logs import for_delivery
from ocean_hook.metrics import Metrics
from ocean_hook.pipeline import Admission, admit, check_media_type
from ocean_hook.queue.base import Delivery, Queue, QueueUnavailable
from ocean_hook.targets.base import Target, TargetError

log = logging.getLogger("ocean_hook.server")

BODY_TIMEOUT_SECONDS = 10.0
#: more senders than this waiting for their answers at once, and the workers give way (WorkerPool)
PRESSURE = 8


def answer(status: int, state: str, **extra: object) -> web.Response:
    return web.json_response({"status": state, **extra}, status=status)


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def accepted_answer(status: int, state: str, delivery_id: str | None) -> web.Response:
    """`answer(status, state, delivery_id=...)` byte for byte, at a third of the cost: it is
    what almost every request gets."""
    quoted = "null" if delivery_id is None else encode_basestring_ascii(delivery_id)
    body = f'{{"status": "{state}", "delivery_id": {quoted}}}'.encode()
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def payload_problem(exc: BaseException) -> str:
    """aiohttp's one-line reason for an unreadable body (its own text spans several lines)."""
    message = getattr(exc.__cause__, "message", "") or str(exc)
    return next((line.strip() for line in str(message).splitlines() if line.strip()), "unreadable body")


class JournalHealth:
    """What the door saw of the journal lately, for /readyz.

    A failed `put` makes the instance not ready; a later successful one makes it ready again,
    and so does time (`memory_seconds`): an instance taken out of rotation gets no deliveries
    with which to prove the journal works again.
    """

    def __init__(self, memory_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.memory_seconds = memory_seconds
        self.clock = clock
        self._error: str | None = None
        self._failed_at = 0.0

    def failed(self, error: str) -> None:
        self._error, self._failed_at = error, self.clock()

    def succeeded(self) -> None:
        self._error = None

    @property
    def problem(self) -> str | None:
        if self._error is not None and self.clock() - self._failed_at < self.memory_seconds:
            return f"the journal refused the last delivery: {self._error}"
        return None


class WebhookDoor:
    """The webhook routes. `notify` wakes the workers once a delivery is journaled."""

    def __init__(
        self,
        config: Config,
        queue: Queue,
        metrics: Metrics,
        *,
        notify: Callable[[], None] | None = None,
        capture_dir: Path | None = None,
        health: JournalHealth | None = None,
        calm: asyncio.Event | None = None,
    ) -> None:
        """`calm` is kept set while at most PRESSURE requests are being answered."""
        self.config = config
        self.queue = queue
        self.metrics = metrics
        self.notify = notify
        self.capture_dir = capture_dir
        self.health = health or JournalHealth()
        self.accepting = True
        self.max_body = config.server.max_body_bytes
        self.routes = {path: config.processors_for_path(path) for path in config.paths}
        self._received: dict[tuple[str, int], Counter] = {}  # labelled children, looked up once
        self.calm = calm if calm is not None else asyncio.Event()
        self.calm.set()
        self._answering = 0
        self._reading: set[asyncio.Future[bytes | None]] = set()  # bodies still arriving

    async def receive(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self._answering += 1
        if self._answering > PRESSURE:
            self.calm.clear()
        try:
            response = await self._receive(request)
        finally:
            self._answering -= 1
            if self._answering <= PRESSURE:
                self.calm.set()
        key = (request.path, response.status)
        counter = self._received.get(key)
        if counter is None:
            counter = self._received[key] = self.metrics.received.labels(key[0], str(key[1]))
        counter.inc()
        self.metrics.ingest_latency.observe(time.perf_counter() - started)
        return response

    async def _receive(self, request: web.Request) -> web.Response:
        if not self.accepting:
            return answer(503, "unavailable", reason="shutting down; send again later")
        if request.method != "POST":
            return self._not_allowed(request, "POST")
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        event = WebhookEvent(request.method, request.path, request.headers, body)  # already read-only
        reason = check_media_type(event)
        if reason:
            return self._reject(request, 415, "unsupported_media_type", reason)
        admission = admit(event, self.routes.get(request.path, []), now=time.time())
        if admission.challenge is not None:
            for_delivery(log, admission.event.delivery_id).info("answered the URL verification of %s", request.path)
            return web.json_response({"challenge": admission.challenge})
        if admission.ignored:
            self.metrics.ignored.labels(request.path).inc()
            for_delivery(log, admission.event.delivery_id).info("ignored on %s: %s", request.path, admission.reason)
            return answer(202, "ignored", reason=admission.reason)
        if admission.status == 500:  # our side: the details go to the log, not to the sender
            self.metrics.rejected.labels(admission.label).inc()
            for_delivery(log, admission.event.delivery_id).error("cannot admit a delivery to %s: %s", request.path,
                                                                 admission.reason)
            return answer(500, "error", reason="processing code failed on this delivery (see ocean-hook's log); "
                                               "send again later")
        if not admission.accepted:
            return self._reject(request, admission.status, admission.label, admission.reason,
                                delivery_id=admission.event.delivery_id)
        return await self._journal(admission)

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > self.max_body:
            return self._reject(request, 413, "too_large", f"body over the {self.max_body} byte limit")
        try:
            body: bytes | None
            if request.content.is_eof():  # all of it has arrived (the usual case): take it as it is
                body = request.content.read_nowait()
                body = body if len(body) <= self.max_body else None
            else:
                async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                    body = await self._read_slowly(request)
        except TimeoutError:
            return self._reject(request, 408, "timeout", "body not received in time")
        except _Closing:
            return await self._answer_and_close(request, answer(503, "unavailable",
                                                                reason="shutting down; send again later"))
        except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the bytes do not decode as
            return self._reject(request, 400, "bad_body", f"body cannot be read: {payload_problem(exc)}")
        if body is None:
            return self._reject(request, 413, "too_large", f"body over the {self.max_body} byte limit")
        return body

    async def _read_slowly(self, request: web.Request) -> bytes | None:
        """A body still arriving; `close_reads` cuts it short."""
        reading = asyncio.ensure_future(read_at_most(request.content, self.max_body))
        self._reading.add(reading)
        try:
            return await reading
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if reading.cancelled() and task is not None and not task.cancelling():
                raise _Closing from None
            raise
        finally:
            self._reading.discard(reading)

    async def close_reads(self, timeout: float) -> None:
        """At a stop: bodies still arriving get up to `timeout` to finish (and are journaled),
        then are answered 503 (send again later). Past this point the listener closes its
        connections and drops what arrives on them, so such a sender waited out the body
        timeout for a 408, and the stop with it."""
        if self._reading:
            await asyncio.wait(set(self._reading), timeout=timeout)
        for reading in self._reading:
            reading.cancel()
        await asyncio.sleep(0)  # their handlers answer before the connections close

    @staticmethod
    async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
        """Sent, then the connection closed: the rest of the body is not waited for (aiohttp
        would read it for 10 s, its lingering close, and the stop would wait with it)."""
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response

    def _not_allowed(self, request: web.Request, *allowed: str) -> web.Response:
        self.metrics.rejected.labels("method_not_allowed").inc()
        reason = f"method {request.method} not allowed; use {' or '.join(allowed)}"
        for_delivery(log, None).info("rejected 405 method_not_allowed on %s: %s", request.path, reason)
        return web.json_response({"status": "rejected", "reason": reason}, status=405,
                                 headers={"Allow": ", ".join(allowed)})

    def _reject(self, request: web.Request, status: int, label: str, reason: str,
                *, delivery_id: str | None = None) -> web.Response:
        """`delivery_id`: the sender's, once authenticated (earlier, any sender could write it)."""
        self.metrics.rejected.labels(label).inc()
        for_delivery(log, delivery_id).info("rejected %d %s on %s: %s", status, label, request.path, reason)
        return answer(status, "rejected", reason=reason)

    async def _journal(self, admission: Admission) -> web.Response:
        event = admission.event
        dlog = for_delivery(log, event.delivery_id)
        delivery = Delivery.from_event(event, [p.name for p in admission.processors], admission.order_key)
        try:
            put = await self.queue.put(delivery)
        except QueueUnavailable as exc:
            self.health.failed(str(exc))
            dlog.error("cannot journal delivery: %s", exc)
            return answer(503, "unavailable", reason="cannot store the delivery now; send again later")
        self.health.succeeded()
        if not put.accepted:
            self.metrics.duplicates.labels(event.path).inc()
            dlog.info("duplicate delivery, already journaled as %s", put.id)
            return accepted_answer(200, "duplicate", event.delivery_id)
        if self.notify is not None:
            self.notify()
        if self.capture_dir is not None:
            await self._capture(event, dlog)
        dlog.info("accepted for %s", ", ".join(delivery.processors))
        return accepted_answer(202, "accepted", event.delivery_id)


    async def _capture(self, event: WebhookEvent, dlog: logging.LoggerAdapter) -> None:
        """A capture is a copy for replay; the delivery is already journaled, so failing to
        write the copy is logged, not answered as an error the sender would retry."""
        try:
            await asyncio.to_thread(write_capture, self.capture_dir, event)  # type: ignore[arg-type]
        except OSError as exc:
            dlog.warning("cannot write the capture file in %s: %s", self.capture_dir, exc)

    async def expect(self, request: web.Request) -> web.Response | None:
        """`Expect: 100-continue` with a length over the limit is answered 413 at once: a `100
        Continue` would have the sender upload the whole body only to be refused."""
        if request.content_length is not None and request.content_length > self.max_body:
            return await self.receive(request)
        await _continue(request)  # aiohttp's own: 100 Continue, or 417 for another expectation
        return None

    async def unknown_path(self, request: web.Request) -> web.Response:
        if request.path in OPERATIONS_PATHS:  # a GET route: any other method gets here
            return self._not_allowed(request, "GET", "HEAD")  # aiohttp answers HEAD on a GET route
        reason = f"no processor listens on {request.path}"
        twin = request.path[:-1] if request.path.endswith("/") else request.path + "/"
        if twin in self.routes:  # the sender's URL and the config differ by a trailing slash
            reason += f" (one listens on {twin})"
        elif request.path in self.routes:  # sent as /webhooks%2Fgithub: routes match the raw path
            reason = f"no processor listens on {request.raw_path.partition('?')[0]}: an escaped '/' (%2F) is not a '/'"
        return self._reject(request, 404, "unknown_path", reason)


class _Closing(Exception):
    """A body read cut short by `WebhookDoor.close_reads`."""


class Operations:
    def __init__(
        self,
        queue: Queue,
        target: Target,
        metrics: Metrics,
        health: JournalHealth | None = None,
        *,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        """`accepting()` turns false when shutdown begins: from then on /readyz says so, and a
        load balancer stops sending deliveries that would only be answered 503."""
        self.queue = queue
        self.target = target
        self.metrics = metrics
        self.health = health or JournalHealth()
        self.accepting = accepting

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.accepting():
            return web.json_response({"status": "not ready", "problems": ["shutting down"]}, status=503)
        problems = []
        try:
            await self.queue.depth()
        except Exception as exc:
            problems.append(f"queue: {exc}")
        if self.health.problem:
            problems.append(f"queue: {self.health.problem}")
        try:
            await self.target.check_ready()
        except (TargetError, OSError) as exc:
            problems.append(f"target: {exc}")
        except Exception as exc:  # a probe's own bug: not ready, said in one line, never a 500
            log.exception("the target's readiness probe failed")
            problems.append(f"target: {type(exc).__name__}: {exc}")
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        try:
            for state, count in (await self.queue.depth()).items():
                self.metrics.queue_depth.labels(state).set(count)
        except Exception as exc:  # metrics must answer even when the queue does not
            self.metrics.queue_depth.clear()  # no depth rather than the last one, served as if current
            log.warning("queue depth unavailable for metrics: %s", exc)
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")


def create_app(door: WebhookDoor, ops: Operations) -> web.Application:
    # the body is read by the door with its own limit, answered 413; aiohttp's cap sits above it
    app = web.Application(client_max_size=door.max_body + 1)
    for path in door.routes:
        app.router.add_route("*", path, door.receive, expect_handler=door.expect)
    healthz, readyz, metrics = OPERATIONS_PATHS  # named in config.py, where processor paths are checked
    app.router.add_get(healthz, ops.healthz)
    app.router.add_get(readyz, ops.readyz)
    app.router.add_get(metrics, ops.metrics_text)
    app.router.add_route("*", r"/{tail:[\s\S]*}", door.unknown_path)  # any path, an encoded newline too
    return app
