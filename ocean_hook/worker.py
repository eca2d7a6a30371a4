"""Workers: claim journaled deliveries, run the pipeline's work stages, settle each one.

Each claimed delivery ends in exactly one of: ack (applied), retry_later (a retryable failure,
with the processor's backoff persisted in the queue, so a restart keeps the schedule) or
dead_letter (no attempts left, or a failure another attempt cannot fix). The queue hands out
deliveries of one order key one at a time, so those are applied in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping

from prometheus_client import Counter

from ocean_hook.events import WebhookEvent
from ocean_hook.fetch import Fetcher
from ocean_hook.logs import for_delivery
from ocean_hook.mapping.engine import Mapping as CompiledMapping
from ocean_hook.metrics import Metrics
from ocean_hook.pipeline import PayloadError, PipelineError, ProcessResult, parse_payload, process
from ocean_hook.processors.base import RetryPolicy, WebhookProcessor
from ocean_hook.queue.base import Delivery, Queue, QueueUnavailable
from ocean_hook.render import change_lines, misconfigured_line, summary_line
from ocean_hook.targets.base import Target
from ocean_hook.watchdog import as_recorded

log = logging.getLogger("ocean_hook.worker")


class WorkerPool:
    """`concurrency` deliveries processed at once; woken by `notify()` when one is journaled.

    Claiming is a journal write (one transaction), so the pool claims ahead: up to `prefetch`
    more deliveries wait in memory for a free slot, and it claims again only once at most
    `concurrency` are outstanding. Under load a claim then brings a batch instead of one
    delivery per completion. Claimed-ahead deliveries are in progress in the journal, so
    their order keys stay blocked; after a crash, or a stop before they started, the next start
    returns them to pending like any other claim.
    """

    def __init__(
        self,
        queue: Queue,
        processors: Mapping[str, WebhookProcessor],
        mapping: CompiledMapping,
        target: Target,
        fetcher: Fetcher,
        *,
        concurrency: int = 4,
        prefetch: int = 32,
        metrics: Metrics | None = None,
        poll_seconds: float = 0.25,
        clock: Callable[[], float] = time.time,
        log_plans: bool = False,
        door_calm: asyncio.Event | None = None,
        give_way_seconds: float = 0.2,
        watch: Callable[[str, str], contextlib.AbstractContextManager[None]] | None = None,
        refuse: MutableMapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """`watch(queue id, delivery id)` surrounds each delivery's run (a Watchdog's `working_on`);
        `refuse` maps queue ids to (delivery id, error): that delivery is dead-lettered unrun (one that
        stalled the event loop when run alone)."""
        self.queue = queue
        self.processors = processors
        self.mapping = mapping
        self.target = target
        self.fetcher = fetcher
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.metrics = metrics or Metrics()
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.log_plans = log_plans
        self.door_calm = door_calm  # clear while the listener has many senders waiting
        self.give_way_seconds = give_way_seconds
        self.watch = watch
        self.refuse = refuse if refuse is not None else {}  # each popped once: `deliveries retry` then runs it
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._finish_claimed = False
        self._slots = asyncio.Semaphore(concurrency)
        self._outstanding: set[asyncio.Task[None]] = set()  # claimed: running or waiting for a slot
        self._started: set[asyncio.Task[None]] = set()  # of those, the running ones
        self._claim_failing = False
        self._write_counters: dict[str, Counter] = {}

    def notify(self) -> None:
        self._wake.set()

    @property
    def outstanding(self) -> int:
        """Claimed deliveries not settled yet, running or waiting for a slot."""
        return len(self._outstanding)

    async def run(self) -> None:
        """Claim and dispatch until `stop()`; then return without waiting for claimed work."""
        while not self._stopping.is_set():
            self._wake.clear()  # before claiming: a delivery journaled during the claim wakes us
            claimed = await self._claim()
            for delivery in claimed:
                task = asyncio.create_task(self._handle_in_slot(delivery))
                self._outstanding.add(task)
                task.add_done_callback(self._done)
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _claim(self) -> list[Delivery]:
        """A journal that cannot be read now is asked again at the next poll, not fatal."""
        if len(self._outstanding) > self.concurrency:
            return []
        try:
            claimed = await self.queue.claim(self.concurrency + self.prefetch - len(self._outstanding))
        except QueueUnavailable as exc:
            if not self._claim_failing:
                log.error("cannot claim deliveries, will keep trying: %s", exc)
            self._claim_failing = True
            return []
        if self._claim_failing:
            log.info("claiming deliveries again")
            self._claim_failing = False
        return claimed

    async def _handle_in_slot(self, delivery: Delivery) -> None:
        async with self._slots:
            if self._stopping.is_set() and not self._finish_claimed:
                return  # claimed ahead, never started: the queue takes it back (`Queue.hand_back`)
            self._started.add(asyncio.current_task())  # type: ignore[arg-type]
            await self._give_way()
            if self.watch is None:
                await self.handle(delivery)
                return
            with self.watch(delivery.id, delivery.delivery_id):
                await self.handle(delivery)

    async def _give_way(self) -> None:
        """Acceptance first. Senders wait for their answers (and some never send again), while
        the catalog can be a moment late; workers and listener share one event loop. So while
        the listener is under pressure (`door_calm` clear), a delivery waits up to
        `give_way_seconds` before it starts: the pool still applies at least `concurrency /
        give_way_seconds` a second, and runs at full speed as soon as the pressure drops."""
        if self.door_calm is None or self.door_calm.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.door_calm.wait(), self.give_way_seconds)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._outstanding.discard(task)
        self._started.discard(task)
        self._wake.set()  # a finished delivery may unblock the next one of its order key

    def stop(self, *, finish_claimed: bool = False) -> None:
        """Claim no more. Deliveries claimed ahead are left in progress for the next start to
        recover, unless `finish_claimed` (a pool that another one follows in the same process)."""
        self._finish_claimed = finish_claimed
        self._stopping.set()
        self._wake.set()

    async def drain(self, timeout: float | None) -> int:
        """Wait for claimed deliveries up to `timeout` (None: all of them); cancel the rest (they
        stay claimed, for `Queue.hand_back` or the next start's recovery). Returns how many of the
        cancelled ones had started: the others were only waiting for a slot."""
        if not self._outstanding:
            return 0
        _, pending = await asyncio.wait(set(self._outstanding), timeout=timeout)
        cut_short = len(pending & self._started)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return cut_short

    async def handle(self, delivery: Delivery) -> None:
        dlog = for_delivery(log, delivery.delivery_id)
        refused = self.refuse.pop(delivery.id, None)
        # the record names this delivery, not an older journal's delivery of that queue id
        if refused is not None and refused[0] == as_recorded(delivery.delivery_id):
            await self._settle_failure(delivery, PipelineError(refused[1], retryable=False), dlog)
            return
        try:
            result = await self._run(delivery)
        except PipelineError as exc:
            await self._settle_failure(delivery, exc, dlog)
            return
        await self._record(dlog, lambda: self.queue.ack(delivery))
        self.metrics.processed.inc()
        self.metrics.end_to_end_latency.observe(max(self.clock() - delivery.received_at, 0.0))
        for change in result.changes:
            if change.writes:
                self._writes(change.action).inc()
        dlog.info("%s: %s", "planned" if self.log_plans else "applied", summary_line(result.summary()))
        for row in result.misconfigured.rows():  # which field, as test-mapping and replay say it
            dlog.info("misconfigured: %s", misconfigured_line(row))
        if self.log_plans:
            for change in result.changes:
                if change.writes:
                    dlog.info("plan: %s", " | ".join(change_lines(change)))

    async def _run(self, delivery: Delivery) -> ProcessResult:
        processors = [self.processors.get(name) for name in delivery.processors]
        if None in processors or not processors:
            raise PipelineError(f"processor(s) {delivery.processors} are no longer configured", retryable=False)
        event: WebhookEvent = delivery.to_event()
        try:
            event = event.with_payload(parse_payload(event))
        except PayloadError as exc:
            raise PipelineError(str(exc), retryable=False) from None
        try:
            return await process(event, processors, self.mapping, self.target, self.fetcher)  # type: ignore[arg-type]
        except PipelineError:
            raise
        except Exception as exc:  # a bug or an unexpected library error: keep the delivery, retry
            for_delivery(log, delivery.delivery_id).exception("unexpected error while processing it")
            raise PipelineError(f"internal error: {type(exc).__name__}: {exc}", retryable=True) from exc

    async def _settle_failure(self, delivery: Delivery, exc: PipelineError, dlog: logging.LoggerAdapter) -> None:
        self.metrics.failed.inc()
        policy = self._policy(delivery)
        if exc.retryable and delivery.attempts <= policy.max_retries:
            # no sooner than the source API asked (a 429's Retry-After), within the policy's longest delay
            delay = min(max(policy.delay(delivery.attempts), exc.retry_after or 0.0), policy.max_retry_delay_seconds)
            await self._record(dlog, lambda: self.queue.retry_later(delivery, str(exc), delay))
            self.metrics.retried.inc()
            dlog.warning("attempt %d failed, retrying in %.1fs: %s", delivery.attempts, delay, exc)
        else:
            await self._record(dlog, lambda: self.queue.dead_letter(delivery, str(exc)))
            self.metrics.dead.inc()
            dlog.error("dead-lettered after %d attempt(s): %s", delivery.attempts, exc)

    async def _record(self, dlog: logging.LoggerAdapter, outcome: Callable[[], Awaitable[None]]) -> None:
        """Write a delivery's outcome, asking again while the journal cannot take it: an outcome
        that never lands leaves the delivery in progress, blocking its order key until restart."""
        delay = 0.05
        while True:
            try:
                await outcome()
                return
            except QueueUnavailable as exc:
                dlog.warning("cannot record the outcome in the journal, retrying in %.2fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _writes(self, action: str) -> Counter:
        """The labelled counter, looked up once per action rather than per delivery."""
        counter = self._write_counters.get(action)
        if counter is None:
            counter = self._write_counters[action] = self.metrics.writes.labels(action)
        return counter

    def _policy(self, delivery: Delivery) -> RetryPolicy:
        for name in delivery.processors:
            if name in self.processors:
                return self.processors[name].retry
        return RetryPolicy()
