"""One contract for both queues: the SQLite journal (a file in tmp_path) and Redis Streams (a real
redis-server). Time is a controllable clock; only Redis' own timers (key TTL, PEL idle time) need
short real sleeps, in the Redis-specific tests at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from read_only import only_readable, snapshot
from redis_server import redis_server

from ocean_hook.queue.base import Delivery, DeliveryState, Queue, QueueUnavailable, Requeued
from ocean_hook.queue.redis import RedisQueue
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.targets.local import LocalCatalog

PENDING, IN_PROGRESS, DONE, FAILED, DEAD = (
    DeliveryState.PENDING,
    DeliveryState.IN_PROGRESS,
    DeliveryState.DONE,
    DeliveryState.FAILED,
    DeliveryState.DEAD,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """Opens queue objects on one store; several objects = several instances (or a restart)."""

    name: str
    clock: Clock
    target: Any  # the sqlite path or the redis URL
    opened: list[Queue] = field(default_factory=list)

    async def open(self, instance: str = "one", **options: Any) -> Queue:
        if self.name == "sqlite":
            queue: Queue = await SqliteJournal.open(self.target, clock=self.clock, **options)
        else:
            options.setdefault("consumer", f"consumer-{instance}")
            queue = await RedisQueue.open(self.target, clock=self.clock, **options)
        self.opened.append(queue)
        return queue

    async def let_time_pass(self, seconds: float) -> None:
        """The clock for both; Redis key expiry runs on the server's own clock."""
        self.clock.advance(seconds)
        if self.name == "redis":
            await asyncio.sleep(seconds)


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        target: Any = tmp_path / "state" / "journal.db"
    else:
        target = request.getfixturevalue("redis_url")
    backend = Backend(request.param, Clock(), target)
    yield backend
    for queue in backend.opened:
        await queue.close()


@pytest.fixture
async def queue(backend: Backend) -> Queue:
    return await backend.open()


def delivery(n: int, clock: Clock, *, key: str = "", delivery_id: str | None = None) -> Delivery:
    return Delivery(
        delivery_id=f"gh-{n}" if delivery_id is None else delivery_id,
        method="POST",
        path="/hooks/github",
        headers=[("Content-Type", "application/json"), ("X-Sig", "a"), ("x-sig", "b")],
        body=b'{"n": %d, "raw": "\xff\x00"}' % n,
        received_at=clock(),
        processors=["github", "audit"],
        order_key=key,
    )


async def put_all(queue: Queue, *deliveries: Delivery) -> list[str]:
    ids = []
    for d in deliveries:
        result = await queue.put(d)
        assert result.accepted
        ids.append(result.id)
    return ids


def ids_of(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


# ----------------------------------------------------------------------------- put and dedup


async def test_put_keeps_the_delivery_byte_for_byte(queue: Queue, backend: Backend) -> None:
    sent = delivery(1, backend.clock, key="repo/1")
    result = await queue.put(sent)
    assert result.accepted and result.id

    for lookup in (result.id, "gh-1"):
        got = await queue.get(lookup)
        assert got is not None
        assert (got.id, got.delivery_id, got.method, got.path) == (result.id, "gh-1", "POST", sent.path)
        assert got.headers == sent.headers  # duplicates and case kept
        assert got.body == sent.body
        assert (got.processors, got.order_key, got.received_at) == (["github", "audit"], "repo/1", sent.received_at)
        assert (got.state, got.attempts, got.last_error, got.next_attempt_at) == (PENDING, 0, None, None)
    assert got.to_event().headers.getall("x-sig") == ["a", "b"]


async def test_duplicate_put_later_returns_the_first_id(queue: Queue, backend: Backend) -> None:
    first = await queue.put(delivery(1, backend.clock))
    backend.clock.advance(3600)
    again = await queue.put(delivery(1, backend.clock))
    assert not again.accepted and again.id == first.id
    assert (await queue.depth())["pending"] == 1


async def test_duplicates_in_one_batch_store_one_delivery(queue: Queue, backend: Backend) -> None:
    results = await asyncio.gather(
        queue.put(delivery(1, backend.clock)),
        queue.put(delivery(2, backend.clock)),
        queue.put(delivery(1, backend.clock)),
    )
    assert [r.accepted for r in results] == [True, True, False]
    assert results[2].id == results[0].id != results[1].id
    assert (await queue.depth())["pending"] == 2


@pytest.mark.parametrize("batched", [False, True])
async def test_the_same_delivery_id_on_another_path_is_another_delivery(
    queue: Queue, backend: Backend, batched: bool
) -> None:
    """One sender's ids say nothing about another's: a PagerDuty id "1" made a GitLab delivery
    "1" a duplicate, never processed."""
    github = delivery(1, backend.clock, delivery_id="same-id")
    gitlab = dataclasses.replace(github, path="/hooks/gitlab")
    sent = [github, gitlab, dataclasses.replace(gitlab, body=b"{}")]
    if batched:  # one commit round (SQLite's group commit checks within the batch too)
        results = await asyncio.gather(*(queue.put(d) for d in sent))
    else:
        results = [await queue.put(d) for d in sent]
    first, *gitlab_ones = results
    assert first.accepted and sorted(r.accepted for r in gitlab_ones) == [False, True]  # either one (Redis
    assert gitlab_ones[0].id == gitlab_ones[1].id != first.id  # runs concurrent puts in any order)
    assert (await queue.get(results[0].id)).path == "/hooks/github"  # type: ignore[union-attr]
    assert (await queue.get("same-id")).path == "/hooks/gitlab"  # type: ignore[union-attr]  # the newest


async def test_dedup_ends_with_the_window(backend: Backend) -> None:
    queue = await backend.open(dedup_window_seconds=0.3)
    first = await queue.put(delivery(1, backend.clock))
    await backend.let_time_pass(0.5)
    later = await queue.put(delivery(1, backend.clock))
    assert later.accepted and later.id != first.id


async def test_empty_delivery_id_is_never_deduplicated(queue: Queue, backend: Backend) -> None:
    a = await queue.put(delivery(1, backend.clock, delivery_id=""))
    b = await queue.put(delivery(2, backend.clock, delivery_id=""))
    assert a.accepted and b.accepted and a.id != b.id


# ----------------------------------------------------------------------------- claim and finish


async def test_claim_marks_in_progress_and_counts_the_attempt(queue: Queue, backend: Backend) -> None:
    [id1] = await put_all(queue, delivery(1, backend.clock))
    claimed = await queue.claim(10)
    assert ids_of(claimed) == [id1]
    assert (claimed[0].state, claimed[0].attempts) == (IN_PROGRESS, 1)
    assert claimed[0].body == delivery(1, backend.clock).body
    stored = await queue.get(id1)
    assert stored is not None and (stored.state, stored.attempts) == (IN_PROGRESS, 1)
    assert await queue.claim(10) == []


async def test_claim_takes_arrival_order_and_honours_limit(queue: Queue, backend: Backend) -> None:
    ids = await put_all(queue, *(delivery(n, backend.clock) for n in range(5)))
    assert ids_of(await queue.claim(2)) == ids[:2]
    assert ids_of(await queue.claim(10)) == ids[2:]
    assert await queue.claim(0) == []


async def test_ack_finishes_the_delivery(queue: Queue, backend: Backend) -> None:
    await put_all(queue, delivery(1, backend.clock))
    [d] = await queue.claim(1)
    await queue.ack(d)
    stored = await queue.get(d.id)
    assert stored is not None and stored.state == DONE and stored.attempts == 1
    assert await queue.claim(10) == []


async def test_a_delivery_done_after_a_failed_attempt_shows_no_error(queue: Queue, backend: Backend) -> None:
    """`deliveries list` showed a done delivery with its earlier attempt's error (found by probing)."""
    await put_all(queue, delivery(1, backend.clock))
    [d] = await queue.claim(1)
    await queue.retry_later(d, "Port answered 503", 0)
    failed = await queue.get(d.id)
    assert failed is not None and failed.last_error == "Port answered 503"
    [again] = await queue.claim(1)
    await queue.ack(again)
    assert again.last_error is None
    stored = await queue.get(d.id)
    assert stored is not None and (stored.state, stored.attempts, stored.last_error) == (DONE, 2, None)


async def test_retry_waits_until_due_even_across_reopen(backend: Backend) -> None:
    queue = await backend.open()
    await put_all(queue, delivery(1, backend.clock))
    [d] = await queue.claim(1)
    await queue.retry_later(d, "Port answered 503", 60)

    stored = await queue.get(d.id)
    assert stored is not None
    assert (stored.state, stored.last_error, stored.attempts) == (FAILED, "Port answered 503", 1)
    assert stored.next_attempt_at == pytest.approx(backend.clock() + 60)
    assert await queue.claim(10) == []
    backend.clock.advance(59)
    assert await queue.claim(10) == []

    await queue.close()
    reopened = await backend.open()
    assert await reopened.claim(10) == []
    backend.clock.advance(2)
    [again] = await reopened.claim(10)
    assert (again.id, again.attempts, again.last_error) == (d.id, 2, "Port answered 503")
    await reopened.ack(again)
    assert (await reopened.depth())["done"] == 1


async def test_dead_letter_list_and_requeue(queue: Queue, backend: Backend) -> None:
    ids = await put_all(queue, delivery(1, backend.clock), delivery(2, backend.clock))
    first, _ = await queue.claim(2)
    await queue.dead_letter(first, "mapping failed: .foo is null")

    [dead] = await queue.list(DEAD)
    assert (dead.id, dead.state, dead.attempts, dead.last_error) == (ids[0], DEAD, 1, "mapping failed: .foo is null")
    assert dead.body == delivery(1, backend.clock).body
    assert (await queue.requeue(ids[1])).count == 0  # in progress: not requeueable

    assert (await queue.requeue("gh-1")).count == 1
    assert await queue.list(DEAD) == []
    [back] = await queue.claim(10)
    assert (back.id, back.attempts) == (ids[0], 1)
    assert (await queue.requeue("no-such-delivery")).count == 0


async def test_requeue_dead_takes_every_dead_letter_and_nothing_else(queue: Queue, backend: Backend) -> None:
    ids = await put_all(queue, *(delivery(n, backend.clock) for n in range(4)))
    a, b, c, _ = await queue.claim(4)
    await queue.dead_letter(a, "x")
    await queue.dead_letter(b, "y")
    await queue.retry_later(c, "z", 600)
    assert (await queue.requeue_dead()).count == 2
    assert (await queue.requeue_dead()).count == 0
    assert sorted(ids_of(await queue.claim(10)), key=int) == ids[:2]
    failed = await queue.get(ids[2])
    assert failed is not None and failed.state == FAILED


async def test_requeue_dead_puts_a_keys_dead_letters_back_in_arrival_order(queue: Queue, backend: Backend) -> None:
    """Redis requeued them in the order they died: B (died first this time) led its key again, and
    A's older content was applied over B's (found by probing)."""
    a_id, b_id = await put_all(queue, delivery(1, backend.clock, key="pr/70"), delivery(2, backend.clock, key="pr/70"))
    for expected in (a_id, b_id):
        [claimed] = await queue.claim(10)
        assert claimed.id == expected
        await queue.dead_letter(claimed, "Port answered 422")
    assert (await queue.requeue(a_id)).count == 1
    [again] = await queue.claim(10)
    await queue.dead_letter(again, "Port answered 422")  # A dies again: after B now
    assert (await queue.requeue_dead()).count == 2
    [first] = await queue.claim(10)
    assert first.id == a_id
    await queue.ack(first)
    assert ids_of(await queue.claim(10)) == [b_id]


async def test_a_dead_letter_with_a_newer_applied_delivery_of_its_key_is_superseded(
    queue: Queue, backend: Backend
) -> None:
    """Requeuing it would write its older content over the newer: `superseded` names it, with the
    delivery that replaced it, and a requeue that spares superseded dead letters leaves it dead."""
    [old] = await put_all(queue, delivery(1, backend.clock, key="repo/1"))
    [first] = await queue.claim(1)
    await queue.dead_letter(first, "Port answered 422")
    ids = await put_all(queue, delivery(2, backend.clock, key="repo/1"), delivery(3, backend.clock, key="repo/2"),
                        delivery(4, backend.clock))
    newer, lone, unkeyed = ids
    claimed = {d.id: d for d in await queue.claim(10)}
    assert set(claimed) == {newer, lone, unkeyed}
    await queue.ack(claimed[newer])
    await queue.dead_letter(claimed[lone], "no newer delivery of repo/2")
    await queue.dead_letter(claimed[unkeyed], "no order key: nothing to compare with")

    assert await queue.superseded() == {old: newer}
    assert await queue.requeue(old, spare_superseded=True) == Requeued(0, {old: newer})
    assert await queue.requeue_dead(spare_superseded=True) == Requeued(2, {old: newer})
    assert ids_of(await queue.list(DEAD)) == [old]
    assert await queue.superseded() == {old: newer}  # still dead, still superseded

    assert await queue.requeue_dead() == Requeued(1)  # asked for explicitly: it goes back
    assert await queue.superseded() == {}
    again = await queue.get(old)
    assert again is not None and again.state == PENDING


async def test_a_dead_letter_with_a_newer_unfinished_delivery_of_its_key_is_superseded(
    queue: Queue, backend: Backend
) -> None:
    """Found by probing: retried while a newer delivery of its key was in progress, the dead
    letter was applied after it, its older content last. Newer content on the way (pending, in
    progress or waiting for a retry) supersedes it as applied content does."""
    [old] = await put_all(queue, delivery(1, backend.clock, key="repo/1"))
    [first] = await queue.claim(1)
    await queue.dead_letter(first, "Port answered 422")
    [newer] = await put_all(queue, delivery(2, backend.clock, key="repo/1"))
    assert await queue.superseded() == {old: newer}  # pending
    [running] = await queue.claim(10)
    assert await queue.requeue(old, spare_superseded=True) == Requeued(0, {old: newer})  # in progress
    await queue.retry_later(running, "Port answered 503", 0)
    assert await queue.requeue_dead(spare_superseded=True) == Requeued(0, {old: newer})  # waiting for a retry
    assert await queue.superseded() == {old: newer}
    [again] = await queue.claim(10)
    await queue.ack(again)
    assert await queue.superseded() == {old: newer}  # applied now
    assert ids_of(await queue.list(DEAD)) == [old]


async def test_a_dead_letter_retried_and_dead_again_is_still_superseded(queue: Queue, backend: Backend) -> None:
    """On Redis, a dead letter requeued once lost its superseded mark: dead again, `retry
    --all-dead` wrote its older content over the newer (found by probing)."""
    [old] = await put_all(queue, delivery(1, backend.clock, key="repo/1"))
    [first] = await queue.claim(1)
    await queue.dead_letter(first, "Port answered 422")
    [newer] = await put_all(queue, delivery(2, backend.clock, key="repo/1"))
    [second] = await queue.claim(1)
    await queue.ack(second)
    assert await queue.requeue(old) == Requeued(1)  # asked for explicitly
    [again] = await queue.claim(1)
    await queue.dead_letter(again, "Port answered 422")
    assert await queue.superseded() == {old: newer}
    assert await queue.requeue_dead(spare_superseded=True) == Requeued(0, {old: newer})
    dead = await queue.get(old)
    assert dead is not None and dead.state == DEAD and dead.next_attempt_at is None


async def test_redis_a_dead_letter_retried_and_applied_leaves_no_record_of_its_key(redis_url: str,
                                                                                clock: Clock) -> None:
    """A requeued dead letter stays counted until applied: then its key's records go, or they
    would pile up for every key that ever had a dead letter."""
    async with await RedisQueue.open(redis_url, clock=clock) as queue:
        [old] = await put_all(queue, delivery(1, clock, key="repo/1"))
        [first] = await queue.claim(1)
        await queue.dead_letter(first, "x")
        [newer] = await put_all(queue, delivery(2, clock, key="repo/1"))
        [second] = await queue.claim(1)
        await queue.ack(second)
        assert await queue.requeue(old) == Requeued(1)
        [again] = await queue.claim(1)
        await queue.ack(again)
        records = aioredis.Redis.from_url(redis_url)
        assert await records.hgetall("ocean-hook:deadkeys") == {}
        assert await records.hgetall("ocean-hook:applied") == {}
        await records.aclose()
        assert newer


async def test_a_dead_letter_shows_no_next_attempt(queue: Queue, backend: Backend) -> None:
    """Redis dead letters kept the time of the retry before their last attempt."""
    [id1] = await put_all(queue, delivery(1, backend.clock))
    [d] = await queue.claim(1)
    await queue.retry_later(d, "timeout", 0)
    [d] = await queue.claim(1)
    await queue.dead_letter(d, "gave up")
    dead = await queue.get(id1)
    assert dead is not None and (dead.state, dead.next_attempt_at) == (DEAD, None)


async def test_superseded_forgets_a_key_once_its_dead_letters_are_gone(backend: Backend) -> None:
    queue = await backend.open(dedup_window_seconds=60)  # the dead letter purged below is past the window
    [old] = await put_all(queue, delivery(1, backend.clock, key="repo/1"))
    [first] = await queue.claim(1)
    await queue.dead_letter(first, "x")
    backend.clock.advance(100)
    [newer] = await put_all(queue, delivery(2, backend.clock, key="repo/1"))
    [second] = await queue.claim(1)
    await queue.ack(second)
    assert await queue.superseded() == {old: newer}
    assert await queue.purge(50) == 1  # the dead letter is older than 50 s, the done one is not
    assert await queue.superseded() == {}
    [later] = await put_all(queue, delivery(3, backend.clock, key="repo/1"))
    [third] = await queue.claim(1)
    await queue.dead_letter(third, "y")
    assert await queue.superseded() == {}  # the earlier applied delivery is older than this one
    assert later


async def test_a_dead_letter_is_found_by_its_delivery_id_after_the_dedup_window(backend: Backend) -> None:
    """On Redis, `deliveries show ID` and `retry ID` knew a delivery id only for the dedup window
    (7 days by default): an older dead letter answered 'no delivery' (found by probing)."""
    queue = await backend.open(dedup_window_seconds=0.3)
    [dead_id, failed_id] = await put_all(queue, delivery(1, backend.clock), delivery(2, backend.clock))
    first, second = await queue.claim(2)
    await queue.dead_letter(first, "gave up")
    await queue.retry_later(second, "Port answered 503", 3600)
    await backend.let_time_pass(0.5)
    dead, failed = await queue.get("gh-1"), await queue.get("gh-2")
    assert dead is not None and (dead.id, dead.state) == (dead_id, DEAD)
    assert failed is not None and (failed.id, failed.state) == (failed_id, FAILED)
    assert await queue.requeue("gh-1") == Requeued(1)
    assert await queue.requeue("gh-2") == Requeued(1)
    assert ids_of(await queue.claim(10)) == [dead_id, failed_id]


async def test_retry_of_digits_takes_the_dead_delivery_of_that_delivery_id_when_the_queue_id_is_done(
    queue: Queue, backend: Backend
) -> None:
    """A sender's delivery ids may be digits: `retry 1` on Redis took queue id 1, done, and said
    'nothing to retry' while the dead delivery '1' waited."""
    [done_id] = await put_all(queue, delivery(1, backend.clock, delivery_id="a"))
    [first] = await queue.claim(1)
    await queue.ack(first)
    [dead_id] = await put_all(queue, delivery(2, backend.clock, delivery_id=done_id))
    [second] = await queue.claim(1)
    await queue.dead_letter(second, "gave up")
    assert await queue.requeue(done_id) == Requeued(1)
    again = await queue.get(dead_id)
    assert again is not None and again.state == PENDING


async def test_requeue_makes_a_failed_delivery_due_now(queue: Queue, backend: Backend) -> None:
    [id1] = await put_all(queue, delivery(1, backend.clock))
    [d] = await queue.claim(1)
    await queue.retry_later(d, "timeout", 3600)
    assert (await queue.requeue(id1)).count == 1
    [again] = await queue.claim(1)
    assert (again.id, again.attempts) == (id1, 1)


async def test_recover_after_crash(backend: Backend) -> None:
    crashed = await backend.open()
    ids = await put_all(crashed, delivery(1, backend.clock), delivery(2, backend.clock))
    assert len(await crashed.claim(1)) == 1
    await crashed.close()  # no ack: the process died mid-work

    restarted = await backend.open()
    assert await restarted.recover() == 1
    claimed = sorted(await restarted.claim(10), key=lambda d: int(d.id))
    assert ids_of(claimed) == ids  # order only holds within an order key: Redis re-adds at the tail
    assert [d.attempts for d in claimed] == [1, 1]  # an attempt the crash cut short is not used up
    assert await restarted.recover() == 0  # its own live claims are not "crashed"


# ----------------------------------------------------------------------------- ordering


async def test_same_key_waits_while_in_progress_or_retrying(queue: Queue, backend: Backend) -> None:
    a1, a2, b1 = await put_all(
        queue,
        delivery(1, backend.clock, key="repo/a"),
        delivery(2, backend.clock, key="repo/a"),
        delivery(3, backend.clock, key="repo/b"),
    )
    first = await queue.claim(10)
    assert ids_of(first) == [a1, b1]  # different keys run side by side
    assert await queue.claim(10) == []

    await queue.retry_later(first[0], "boom", 30)
    assert await queue.claim(10) == []  # a2 waits for a1's retry
    backend.clock.advance(31)
    [retried] = await queue.claim(10)
    assert retried.id == a1
    await queue.ack(retried)
    assert ids_of(await queue.claim(10)) == [a2]


async def test_dead_letter_does_not_block_its_key(queue: Queue, backend: Backend) -> None:
    _, a2 = await put_all(queue, delivery(1, backend.clock, key="k"), delivery(2, backend.clock, key="k"))
    [first] = await queue.claim(10)
    await queue.dead_letter(first, "gave up")
    assert ids_of(await queue.claim(10)) == [a2]


async def test_requeued_dead_letter_runs_before_later_ones_of_its_key(queue: Queue, backend: Backend) -> None:
    [a1] = await put_all(queue, delivery(1, backend.clock, key="k"))
    [d1] = await queue.claim(1)
    await queue.dead_letter(d1, "gave up")
    a2, a3 = await put_all(queue, delivery(2, backend.clock, key="k"), delivery(3, backend.clock, key="k"))
    [d2] = await queue.claim(10)
    assert d2.id == a2

    assert (await queue.requeue(a1)).count == 1
    assert await queue.claim(10) == []  # a2 still in progress
    await queue.ack(d2)
    [again] = await queue.claim(10)
    assert again.id == a1
    await queue.ack(again)
    assert ids_of(await queue.claim(10)) == [a3]


async def test_order_holds_across_two_instances(backend: Backend) -> None:
    one = await backend.open("one")
    two = await backend.open("two")
    a1, a2 = await put_all(one, delivery(1, backend.clock, key="k"), delivery(2, backend.clock, key="k"))
    [b1] = await put_all(two, delivery(3, backend.clock, key="other"))

    [d1] = await one.claim(1)
    assert d1.id == a1
    assert ids_of(await two.claim(10)) == [b1]
    assert await two.claim(10) == []
    seen_by_two = await two.get(a1)
    assert seen_by_two is not None and seen_by_two.state == IN_PROGRESS
    await one.ack(d1)
    assert ids_of(await two.claim(10)) == [a2]


async def test_busy_instances_keep_per_key_order(backend: Backend) -> None:
    """Three instances, two workers each, random pauses and first-attempt failures."""
    rng = random.Random(7)
    instances = [await backend.open(f"i{n}") for n in range(3)]
    keys = ["a", "b", "c", "d"]
    sent = [delivery(n, backend.clock, key=keys[n % 4]) for n in range(40)]
    arrival = await put_all(instances[0], *sent)
    running: dict[str, str] = {}
    finished: dict[str, list[str]] = {key: [] for key in keys}

    async def worker(queue: Queue) -> None:
        while sum(map(len, finished.values())) < len(sent):
            claimed = await queue.claim(2)
            for d in claimed:
                assert d.order_key not in running, f"{d.id} runs beside {running[d.order_key]}"
                running[d.order_key] = d.id
            for d in claimed:
                await asyncio.sleep(rng.random() / 500)
                del running[d.order_key]
                if d.attempts == 1 and rng.random() < 0.3:
                    await queue.retry_later(d, "flaky", 0)
                else:
                    finished[d.order_key].append(d.id)
                    await queue.ack(d)
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(*(worker(q) for q in instances for _ in range(2))), 10)
    for key in keys:
        assert finished[key] == [i for i, d in zip(arrival, sent, strict=True) if d.order_key == key]


async def test_unkeyed_deliveries_are_not_serialised(queue: Queue, backend: Backend) -> None:
    ids = await put_all(queue, *(delivery(n, backend.clock) for n in range(3)))
    assert ids_of(await queue.claim(10)) == ids


# ----------------------------------------------------------------------------- inspection


async def test_list_is_newest_first_and_filters_by_state(queue: Queue, backend: Backend) -> None:
    ids = await put_all(queue, *(delivery(n, backend.clock) for n in range(4)))
    [d0] = await queue.claim(1)
    await queue.ack(d0)
    assert ids_of(await queue.list()) == ids[::-1]
    assert ids_of(await queue.list(limit=2)) == ids[:1:-1]
    assert ids_of(await queue.list(PENDING)) == ids[:0:-1]
    assert ids_of(await queue.list(DONE)) == ids[:1]
    [d1] = await queue.claim(1)
    assert ids_of(await queue.list(IN_PROGRESS)) == [d1.id]
    assert [d.state for d in await queue.list()] == [PENDING, PENDING, IN_PROGRESS, DONE]


async def test_list_is_newest_first_by_arrival_whatever_order_they_finished_in(queue: Queue, backend: Backend) -> None:
    """On Redis `list -n 3` took the last entries of each stream, in the order they finished."""
    ids = await put_all(queue, *(delivery(n, backend.clock) for n in range(6)))
    claimed = {d.id: d for d in await queue.claim(6)}
    for id_ in reversed(ids):  # the newest finishes first
        await queue.ack(claimed[id_])
    assert ids_of(await queue.list(limit=3)) == ids[:2:-1]
    assert ids_of(await queue.list(DONE, limit=2)) == ids[:3:-1]


async def test_depth_counts_every_state(queue: Queue, backend: Backend) -> None:
    assert await queue.depth() == {"pending": 0, "in_progress": 0, "done": 0, "failed": 0, "dead": 0}
    await put_all(queue, *(delivery(n, backend.clock) for n in range(6)))
    await put_all(queue, delivery(10, backend.clock, key="k"), delivery(11, backend.clock, key="k"))
    a, b, c, _ = await queue.claim(4)
    await queue.ack(a)
    await queue.retry_later(b, "later", 60)
    await queue.dead_letter(c, "never")
    assert await queue.depth() == {"pending": 4, "in_progress": 1, "done": 1, "failed": 1, "dead": 1}


async def test_purge_forgets_only_old_done_and_dead(backend: Backend) -> None:
    queue = await backend.open(dedup_window_seconds=60)  # what is purged here is past the window
    ids = await put_all(queue, *(delivery(n, backend.clock) for n in range(5)))
    done, dead, failed, _ = await queue.claim(4)
    await queue.ack(done)
    await queue.dead_letter(dead, "never")
    await queue.retry_later(failed, "later", 10)
    backend.clock.advance(100)
    [recent] = await put_all(queue, delivery(9, backend.clock))
    [late] = [d for d in await queue.claim(10) if d.id == recent]
    await queue.ack(late)

    assert await queue.purge(50) == 2
    assert await queue.get(ids[0]) is None and await queue.get(ids[1]) is None
    assert {d.id for d in await queue.list()} == {ids[2], ids[3], ids[4], recent}
    assert await queue.purge(50) == 0


async def test_purge_keeps_what_still_deduplicates_a_redelivery(backend: Backend) -> None:
    """`purge --older-than 1h` on SQLite deleted the rows the de-duplication looks up: a redelivery
    within the window was then accepted and applied a second time."""
    queue = await backend.open(dedup_window_seconds=3600)
    [first] = await put_all(queue, delivery(1, backend.clock))
    [claimed] = await queue.claim(1)
    await queue.ack(claimed)
    backend.clock.advance(600)
    await queue.purge(60)
    again = await queue.put(delivery(1, backend.clock))
    assert not again.accepted and again.id == first


async def test_unknown_ids(queue: Queue) -> None:
    assert await queue.get("12345") is None
    assert await queue.get("nope") is None
    assert (await queue.requeue("12345")).count == 0


# ----------------------------------------------------------------------------- SQLite only


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_sqlite_group_commit_batches_concurrent_puts(tmp_path: Path, clock: Clock) -> None:
    async with await SqliteJournal.open(tmp_path / "j.db", clock=clock) as journal:
        before = journal.commits
        results = await asyncio.gather(*(journal.put(delivery(n, clock)) for n in range(200)))
        assert all(r.accepted for r in results)
        assert len({r.id for r in results}) == 200
        assert journal.commits - before <= 5
        assert (await journal.depth())["pending"] == 200


async def test_sqlite_put_is_on_disk_when_it_returns(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "j.db"
    journal = await SqliteJournal.open(path, clock=clock)
    result = await journal.put(delivery(1, clock, key="k"))
    with sqlite3.connect(path) as other:  # another connection, as another process would see it
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        row = other.execute("SELECT delivery_id, body, state FROM deliveries WHERE id = ?", (int(result.id),))
        assert row.fetchone() == ("gh-1", delivery(1, clock).body, "pending")
    await journal.close()
    await journal.close()

    async with await SqliteJournal.open(path, clock=clock) as reopened:
        got = await reopened.get(result.id)
        assert got is not None and got.body == delivery(1, clock).body and got.order_key == "k"
        assert not (await reopened.put(delivery(1, clock))).accepted


async def test_sqlite_put_is_answered_only_once_its_wal_is_fsynced(tmp_path: Path, clock: Clock) -> None:
    """`synchronous=NORMAL` does not sync at commit: the journal's own fsync of the WAL file,
    held back here on its helper thread, is what a put waits for."""
    path = tmp_path / "j.db"
    release, synced = threading.Event(), []

    def held_fsync(fd: int) -> None:
        release.wait(10)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    async with await SqliteJournal.open(path, clock=clock) as journal:
        assert journal._connection().execute("PRAGMA synchronous").fetchone() == (1,)
        journal.fsync = held_fsync
        put = asyncio.create_task(journal.put(delivery(1, clock)))
        await asyncio.sleep(0.3)
        with sqlite3.connect(path) as other:  # committed, visible to others, yet not answered
            assert other.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (1,)
        assert not put.done()
        release.set()
        assert (await put).accepted
    assert synced == [f"{path}-wal"]


async def test_sqlite_journal_behind_a_symbolic_link_fsyncs_the_real_wal(tmp_path: Path, clock: Clock) -> None:
    """SQLite keeps the WAL beside the link's target: `serve` could not start on a linked journal
    ("No such file or directory: 'link.db-wal'")."""
    (tmp_path / "real").mkdir()
    real, link = tmp_path / "real" / "j.db", tmp_path / "link.db"
    link.symlink_to(real)
    synced = []

    def recorded_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    async with await SqliteJournal.open(link, clock=clock) as journal:
        journal.fsync = recorded_fsync
        assert (await journal.put(delivery(1, clock))).accepted
    assert synced == [f"{real}-wal"]


async def test_sqlite_one_serve_per_journal_holds_through_a_symbolic_link(tmp_path: Path, clock: Clock) -> None:
    """A second serve reaching the journal through a link took the first one's claims for a crashed
    process's, and applied deliveries into its own catalog (found by probing)."""
    (tmp_path / "real").mkdir()
    real, link = tmp_path / "real" / "j.db", tmp_path / "link.db"
    link.symlink_to(real)
    async with (await SqliteJournal.open(real, clock=clock) as first,
                await SqliteJournal.open(link, clock=clock) as other):
        await first.recover()
        with pytest.raises(QueueUnavailable, match=r"another process \(pid \d+\) is serving from it"):
            await other.recover()


async def test_sqlite_journal_of_a_newer_schema_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """It was silently rewritten as this version's (found by probing)."""
    path = tmp_path / "j.db"
    async with await SqliteJournal.open(path):
        pass
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version=3")
    with pytest.raises(QueueUnavailable, match=r"j\.db: it was written by a newer ocean-hook \(journal schema 3; "
                                               r"this one knows 2\): upgrade ocean-hook"):
        await SqliteJournal.open(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


async def test_sqlite_row_changed_by_hand_is_dead_lettered_not_a_stop_of_the_workers(tmp_path: Path,
                                                                                      clock: Clock) -> None:
    """Headers that are not JSON made every claim fail ("cannot claim deliveries, will keep
    trying") and nothing was applied again; `deliveries list` and `show` ended in tracebacks
    (found by probing)."""
    path = tmp_path / "j.db"
    async with await SqliteJournal.open(path, clock=clock) as journal:
        ids = await put_all(journal, delivery(1, clock, key="k"), delivery(2, clock, key="k"), delivery(3, clock))
        with sqlite3.connect(path) as other:
            other.execute("UPDATE deliveries SET headers = 'not json' WHERE id = ?", (int(ids[0]),))
        assert ids_of(await journal.claim(10)) == [ids[2]]
        assert ids_of(await journal.claim(10)) == [ids[1]]  # the next of its key leads once it is dead
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT state, last_error FROM deliveries WHERE id = ?", (int(ids[0]),)).fetchone()[
                0] == "dead"
        # `deliveries list` and `show` still show every row: the damaged one with what can be read
        listed = await journal.list()
        assert [(d.id, d.state) for d in listed] == [(ids[2], DeliveryState.IN_PROGRESS),
                                                     (ids[1], DeliveryState.IN_PROGRESS),
                                                     (ids[0], DeliveryState.DEAD)]
        damaged = await journal.get(ids[0])
        assert damaged is not None and damaged.delivery_id == listed[2].delivery_id != ""
        # what can be read is shown as it is: the body was shown as 0 bytes (found by probing)
        assert (damaged.body, damaged.processors, damaged.headers) == (delivery(1, clock).body, ["github", "audit"], [])
        assert re.fullmatch(rf"journal row {ids[0]} is damaged \(JSONDecodeError: .*\); it was changed outside "
                            "ocean-hook", damaged.last_error or "")


async def test_sqlite_row_whose_state_was_changed_by_hand_is_listed_as_dead(tmp_path: Path, clock: Clock) -> None:
    """Not claimable (no worker takes a state it does not know), so dead is what it is; the
    other rows are listed with it."""
    path = tmp_path / "j.db"
    async with await SqliteJournal.open(path, clock=clock) as journal:
        ids = await put_all(journal, delivery(1, clock), delivery(2, clock))
        with sqlite3.connect(path) as other:
            other.execute("UPDATE deliveries SET state = 'paused', received_at = 'yesterday' WHERE id = ?",
                          (int(ids[1]),))
        listed = await journal.list()
        assert [(d.id, d.state, d.received_at) for d in listed] == [(ids[1], DeliveryState.DEAD, 0.0),
                                                                    (ids[0], DeliveryState.PENDING, clock.now)]
        assert "'paused' is not a valid DeliveryState" in (listed[0].last_error or "")
        assert ids_of(await journal.claim(10)) == [ids[0]]


async def test_sqlite_journal_is_read_by_a_user_who_may_not_write_it(tmp_path: Path, clock: Clock) -> None:
    """An operator listing the journal of a `serve` run by a service user: "attempt to write a
    readonly database" was all `deliveries list` said. A look writes nothing, and sees what a
    running serve committed (in its WAL, not checkpointed yet)."""
    state = tmp_path / "state"
    path = state / "journal.db"
    async with await SqliteJournal.open(path, clock=clock) as journal:
        ids = await put_all(journal, delivery(1, clock), delivery(2, clock))
    with only_readable(state):
        before = snapshot(state)
        async with await SqliteJournal.open(path, clock=clock, looking=True) as look:
            assert ids_of(await look.list()) == ids[::-1]
            assert (await look.get("gh-1")) is not None
            with pytest.raises(QueueUnavailable, match=r"attempt to write a readonly database"):
                await look.purge(0)
        assert snapshot(state) == before  # no WAL index left behind, owned by whoever looked
        with pytest.raises(QueueUnavailable, match=r"attempt to write a readonly database; this user may not "
                                                   r"write it \(or make its WAL beside it\): run as the user serve"):
            await SqliteJournal.open(path, clock=clock)
    async with await SqliteJournal.open(path, clock=clock) as serving:
        third = await put_all(serving, delivery(3, clock))
        with only_readable(state):  # the WAL and its index too
            async with await SqliteJournal.open(path, clock=clock, looking=True) as look:
                assert ids_of(await look.list()) == third + ids[::-1]


async def test_sqlite_syncs_what_it_was_asked_to_before_its_own_wal(tmp_path: Path, clock: Clock) -> None:
    """`sync_before`: the local catalog's writes reach the disk before the journal records the
    delivery done, in the same step on the helper thread; a failure there fails the round."""
    steps: list[tuple[str, str]] = []
    async with await SqliteJournal.open(tmp_path / "j.db", clock=clock) as journal:
        real_fsync = journal.fsync

        def fsync(fd: int) -> None:
            real_fsync(fd)
            steps.append(("journal", threading.current_thread().name.split("_")[0]))

        journal.fsync = fsync  # type: ignore[method-assign]
        journal.sync_before(lambda: steps.append(("first", threading.current_thread().name.split("_")[0])))
        assert (await journal.put(delivery(1, clock))).accepted
        [claimed] = await journal.claim(1)
        await journal.ack(claimed)
        assert steps == [("first", "ocean-hook-fsync"), ("journal", "ocean-hook-fsync")] * 3

        def broken() -> None:
            raise OSError(5, "cannot sync the local catalog /state/catalog.db: Input/output error")

        journal.sync_before(broken)
        with pytest.raises(QueueUnavailable, match=r"j\.db: .*cannot sync the local catalog /state/catalog\.db: Input"):
            await journal.put(delivery(2, clock))


async def test_sqlite_checkpoints_on_its_helper_thread_and_keeps_the_wal_small(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never inside a commit on the loop: every CHECKPOINT_AFTER writes the helper thread copies
    the WAL back into the database, between two rounds, so the next commit starts the WAL over
    and it stays the size of a few rounds however much goes through it."""
    monkeypatch.setattr("ocean_hook.queue.sqlite.CHECKPOINT_AFTER", 100)
    path = tmp_path / "j.db"
    threads: list[str] = []
    async with await SqliteJournal.open(path, clock=clock) as journal:
        assert journal._connection().execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        checkpoint = journal._checkpoints.run

        def recorded() -> None:
            threads.append(threading.current_thread().name)
            checkpoint()

        journal._checkpoints.run = recorded  # type: ignore[method-assign]
        for start in range(0, 2000, 50):  # 2,000 deliveries of 4 KB: 8 MB through the WAL
            batch = [replace(delivery(n, clock), body=bytes(4000)) for n in range(start, start + 50)]
            assert all(r.accepted for r in await asyncio.gather(*(journal.put(d) for d in batch)))
        wal_bytes = os.path.getsize(f"{path}-wal")
        assert (await journal.depth())["pending"] == 2000
    assert len(threads) >= 15 and {name.split("_")[0] for name in threads} == {"ocean-hook-fsync"}
    assert wal_bytes < 2 * 2**20


async def test_sqlite_a_failing_checkpoint_is_logged_and_fails_no_put(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("ocean_hook.queue.sqlite.CHECKPOINT_AFTER", 10)
    async with await SqliteJournal.open(tmp_path / "j.db", clock=clock) as journal:

        def refuse(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            raise sqlite3.OperationalError("unable to open database file")

        monkeypatch.setattr("ocean_hook.queue.sqlite.sqlite3.connect", refuse)  # the checkpointer's
        results = [await journal.put(delivery(n, clock)) for n in range(30)]
        assert all(r.accepted for r in results) and (await journal.depth())["pending"] == 30
    assert "checkpoint failed, the WAL keeps growing until one succeeds: unable to open database file" in caplog.text


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's write lock: the put waits between attempts on the loop (which keeps
    running), succeeds once the lock goes, and gives up with QueueUnavailable after BUSY_SECONDS."""
    path = tmp_path / "j.db"
    async with await SqliteJournal.open(path, clock=clock) as journal:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        put = asyncio.create_task(journal.put(delivery(1, clock)))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not put.done() and ticks == 20
        other.execute("COMMIT")
        assert (await asyncio.wait_for(put, 5)).accepted

        monkeypatch.setattr("ocean_hook.queue.sqlite.BUSY_SECONDS", 0.2)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(QueueUnavailable, match="locked"):
            await journal.put(delivery(2, clock))
        other.execute("ROLLBACK")
        other.close()
        assert (await journal.put(delivery(2, clock))).accepted


async def test_sqlite_opens_and_reads_while_another_process_writes(tmp_path: Path, clock: Clock) -> None:
    """`deliveries list` and `show` took the write lock to open the file, so a write transaction
    of another process (a busy serve) made them wait 10 s and fail (found by probing)."""
    path = tmp_path / "j.db"
    async with await SqliteJournal.open(path, clock=clock) as journal:
        await journal.put(delivery(1, clock))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        async with await SqliteJournal.open(path, clock=clock) as reader:
            assert [d.delivery_id for d in await reader.list()] == ["gh-1"]
        assert time.monotonic() - started < 2
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_sqlite_gives_up_after_busy_seconds_by_the_clock_even_on_a_busy_loop(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait added up its pauses, not the time: on a loop busy with other senders each pause
    lasted longer, and a put waited 17 s for a lock with BUSY_SECONDS at 10 (found by probing)."""
    path = tmp_path / "j.db"
    monkeypatch.setattr("ocean_hook.queue.sqlite.BUSY_SECONDS", 0.3)

    async def hog() -> None:  # other work on the loop: 0.2 s at a time
        while True:
            time.sleep(0.2)
            await asyncio.sleep(0)

    async with await SqliteJournal.open(path, clock=clock) as journal:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        hogging = asyncio.create_task(hog())
        started = time.monotonic()
        try:
            with pytest.raises(QueueUnavailable, match="locked"):
                await journal.put(delivery(1, clock))
            assert time.monotonic() - started < 1.2  # 0.3 s, and one hog turn past it
        finally:
            hogging.cancel()
            other.execute("ROLLBACK")
            other.close()


async def test_sqlite_a_retry_scheduled_before_the_clock_stepped_back_is_due_now(tmp_path: Path,
                                                                                clock: Clock) -> None:
    """Times are the wall clock's: a retry 15 s away, scheduled an hour ahead of a clock then set
    back, held its delivery and every later one of its key for an hour (found by probing)."""
    async with await SqliteJournal.open(tmp_path / "j.db", clock=clock) as journal:
        await put_all(journal, delivery(1, clock, key="k"), delivery(2, clock, key="k"))
        [first] = await journal.claim(10)
        await journal.retry_later(first, "Port answered 503", 15)
        assert await journal.claim(10) == []  # not due, and the key waits for it
        clock.advance(-3600)  # NTP steps the clock back an hour
        assert ids_of(await journal.claim(10)) == [first.id]


async def test_sqlite_closed_journal_is_unavailable(tmp_path: Path, clock: Clock) -> None:
    journal = await SqliteJournal.open(tmp_path / "j.db", clock=clock)
    await journal.close()
    with pytest.raises(QueueUnavailable, match="closed"):
        await journal.put(delivery(1, clock))


async def test_sqlite_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(QueueUnavailable, match=r"j\.db.*not a database"):
        await SqliteJournal.open(path)


async def test_sqlite_file_of_something_else_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """The local catalog named as the journal (queue.path) keeps its tables, and gets no others."""
    path = tmp_path / "catalog.db"
    await LocalCatalog(path).close()
    before = path.read_bytes()
    with pytest.raises(QueueUnavailable) as info:
        await SqliteJournal.open(path)
    assert str(info.value) == (f"journal {path}: it holds the tables of something else (entities), not a journal; "
                               "it was left as it was")
    assert path.read_bytes() == before


async def test_sqlite_unwritable_location_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(QueueUnavailable, match=r"file/j\.db"):
        await SqliteJournal.open(tmp_path / "file" / "j.db")


async def test_sqlite_full_disk_fails_the_batch_not_the_journal(tmp_path: Path, clock: Clock) -> None:
    async with await SqliteJournal.open(tmp_path / "j.db", clock=clock) as journal:
        await journal.put(delivery(0, clock))

        def fill_up() -> None:  # SQLite's own "disk full": no page may be added any more
            assert journal._conn is not None
            pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
            journal._conn.execute(f"PRAGMA max_page_count = {pages}")

        fill_up()
        big = delivery(1, clock)
        big.body = b"x" * 200_000
        results = await asyncio.gather(journal.put(big), journal.put(delivery(2, clock)), return_exceptions=True)
        assert all(isinstance(r, QueueUnavailable) for r in results)
        assert "full" in str(results[0])
        assert (await journal.depth())["pending"] == 1  # nothing half-written; reads still work


# ----------------------------------------------------------------------------- Redis only


async def test_redis_url_with_an_option_redis_does_not_know_is_unavailable_not_a_crash(redis_url: str) -> None:
    """redis-py hands unknown ?options to each connection it makes, which raises TypeError."""
    with pytest.raises(QueueUnavailable, match=r"the URL has an option Redis does not know \(.*'colour'\)"):
        await RedisQueue.open(redis_url + "?colour=blue")
    async with await RedisQueue.open(redis_url + "?socket_timeout=5") as queue:  # a real option
        assert (await queue.depth())["pending"] == 0


async def test_redis_put_is_one_stream_entry_with_raw_fields(redis_url: str, clock: Clock) -> None:
    async with await RedisQueue.open(redis_url, stream="hooks", clock=clock, dedup_window_seconds=600) as queue:
        sent = delivery(1, clock, key="k")
        first = await queue.put(sent)
        assert not (await queue.put(sent)).accepted
        raw = aioredis.Redis.from_url(redis_url)
        try:
            [(_, fields)] = await raw.xrange("hooks")
            assert fields[b"body"] == sent.body
            assert fields[b"delivery_id"] == b"gh-1" and fields[b"seq"] == first.id.encode()
            assert 590_000 < await raw.pttl("hooks:dedup:/hooks/github gh-1") <= 600_000
            assert 590_000 < await raw.pttl("hooks:id:gh-1") <= 600_000
            await raw.delete("hooks:id:gh-1")  # as a version before per-path dedup left it
            await raw.set("hooks:dedup:gh-1", first.id)
            assert (await queue.get("gh-1")).id == first.id  # type: ignore[union-attr]
            [group] = await raw.xinfo_groups("hooks")
            assert group["name"] == b"ocean-hook"
        finally:
            await raw.aclose()


async def test_redis_depth_is_read_when_redis_is_full(redis_url: str, clock: Clock) -> None:
    """At its maxmemory (noeviction, as the README advises) Redis refused the depth's MULTI, reads
    and all: `deliveries list` and /metrics failed when the operator needed them (found by probing)."""
    async with await RedisQueue.open(redis_url, clock=clock) as queue:
        await queue.put(delivery(1, clock))
        raw = aioredis.Redis.from_url(redis_url)
        before = await raw.config_get("maxmemory*")
        try:
            await raw.config_set("maxmemory-policy", "noeviction")
            await raw.config_set("maxmemory", 1)
            with pytest.raises(QueueUnavailable):
                await queue.put(delivery(2, clock))  # full: the listener answers 503
            assert (await queue.depth())[DeliveryState.PENDING] == 1
            assert [d.delivery_id for d in await queue.list()] == ["gh-1"]
        finally:
            await raw.config_set("maxmemory", before["maxmemory"])
            await raw.config_set("maxmemory-policy", before["maxmemory-policy"])
            await raw.aclose()


async def test_a_clean_stop_hands_back_what_was_claimed_and_not_finished(backend: Backend) -> None:
    """SQLite left them in progress until the next start, which reported them as a crash's
    (found by probing); on Redis see the next test."""
    stopping = await backend.open("a")
    ids = await put_all(stopping, *(delivery(n, backend.clock, key=f"k{n % 2}") for n in range(3)))
    assert len(await stopping.claim(10)) == 2  # one per key
    assert await stopping.hand_back() == 2
    assert (await stopping.depth())[PENDING] == 3
    assert await stopping.hand_back() == 0
    await stopping.close()
    restarted = await backend.open("b")
    assert await restarted.recover() == 0
    assert sorted(ids_of(await restarted.claim(10)), key=int) == ids[:2]  # in order per key


async def test_redis_hands_back_what_it_claimed_at_a_clean_stop(redis_url: str, clock: Clock) -> None:
    """Claimed ahead and never started, they waited claim_idle_seconds after a clean restart (a
    new consumer name), their keys blocked, with no word (found by probing)."""
    stopping = await RedisQueue.open(redis_url, consumer="a", clock=clock, claim_idle_seconds=30)
    ids = await put_all(stopping, *(delivery(n, clock, key=f"k{n % 2}") for n in range(3)))
    assert len(await stopping.claim(10)) == 2  # one per key
    assert await stopping.hand_back() == 2
    await stopping.close()
    async with await RedisQueue.open(redis_url, consumer="b", clock=clock, claim_idle_seconds=30) as restarted:
        assert sorted(ids_of(await restarted.claim(10)), key=int) == ids[:2]  # at once, in order per key


async def test_redis_takes_over_a_silent_consumer(redis_url: str, clock: Clock) -> None:
    crashed = await RedisQueue.open(redis_url, consumer="a", clock=clock)
    [id1] = await put_all(crashed, delivery(1, clock, key="k"))
    await crashed.claim(1)
    await crashed.close()

    async with await RedisQueue.open(redis_url, consumer="b", clock=clock, claim_idle_seconds=0.1) as survivor:
        assert await survivor.claim(10) == []  # not idle long enough: maybe just slow
        await asyncio.sleep(0.15)
        [taken] = await survivor.claim(10)
        assert (taken.id, taken.attempts) == (id1, 1)  # the silent consumer's attempt never ended


async def test_redis_stale_worker_cannot_end_a_taken_over_claim(redis_url: str, clock: Clock) -> None:
    async with (
        await RedisQueue.open(redis_url, consumer="slow", clock=clock) as slow,
        await RedisQueue.open(redis_url, consumer="fast", clock=clock, claim_idle_seconds=0.1) as fast,
    ):
        a1, a2 = await put_all(slow, delivery(1, clock, key="k"), delivery(2, clock, key="k"))
        [stale] = await slow.claim(1)
        await asyncio.sleep(0.15)  # slow's heartbeat runs every 10 s: its claim looks abandoned
        [taken] = await fast.claim(10)
        assert taken.id == a1

        await slow.ack(stale)  # ignored: the claim is fast's now
        assert await fast.claim(10) == []
        current = await fast.get(a1)
        assert current is not None and current.state == IN_PROGRESS
        await fast.ack(taken)
        assert ids_of(await fast.claim(10)) == [a2]


async def test_redis_a_retry_claimed_again_before_the_first_worker_resumes_can_be_acked(
    redis_url: str, clock: Clock
) -> None:
    """Two workers share one queue object. Worker A's retry_later moves the delivery out, and
    (delay 0) worker B claims it again before A's call has returned: A finishing must not take
    B's claim with it, or B's ack is ignored and the key stays blocked until the takeover."""
    async with await RedisQueue.open(redis_url, consumer="shared", clock=clock) as queue:
        [first_id] = await put_all(queue, delivery(1, clock, key="k"))
        [first] = await queue.claim(1)
        again: list[Delivery] = []
        run = queue._run

        async def run_then_let_b_claim(script: str, *args: Any) -> Any:
            result = await run(script, *args)
            if script == "finish" and not again:
                again.extend(await queue.claim(1))  # B, while A waits for its answer
            return result

        queue._run = run_then_let_b_claim  # type: ignore[method-assign]
        await queue.retry_later(first, "flaky", 0)
        queue._run = run  # type: ignore[method-assign]
        assert ids_of(again) == [first_id]
        await queue.ack(again[0])
        done = await queue.get(first_id)
        assert done is not None and done.state == DONE


async def test_redis_restarted_empty_an_old_claims_outcome_never_lands_on_the_new_delivery_of_its_number(
    redis_url: str, clock: Clock
) -> None:
    """A Redis restarted without persistence counts queue ids from 1 again. The worker still on
    the lost delivery 1 acked the new delivery 1, accepted after the restart: it showed done
    before it ran, and its own failure was then ignored (found by probing)."""
    async with await RedisQueue.open(redis_url, consumer="one", clock=clock) as queue:
        await put_all(queue, delivery(1, clock))
        [lost] = await queue.claim(1)
        flush = aioredis.Redis.from_url(redis_url)
        await flush.flushdb()  # the restart: everything Redis held is gone
        await flush.aclose()
        [new_id] = await put_all(queue, delivery(2, clock))
        [new] = await queue.claim(1)
        assert new.id == lost.id == new_id  # the same number

        await queue.ack(lost)  # the lost delivery's outcome: nothing left to record it on
        current = await queue.get(new_id)
        assert current is not None and current.state == IN_PROGRESS and current.delivery_id == "gh-2"
        await queue.retry_later(new, "target down", 0)
        failed = await queue.get(new_id)
        assert failed is not None and failed.state == FAILED and failed.last_error == "target down"


async def test_redis_heartbeat_keeps_a_live_claim(redis_url: str, clock: Clock) -> None:
    async with (
        await RedisQueue.open(redis_url, consumer="a", clock=clock, claim_idle_seconds=0.2) as worker,
        await RedisQueue.open(redis_url, consumer="b", clock=clock, claim_idle_seconds=0.2) as other,
    ):
        [id1] = await put_all(worker, delivery(1, clock))
        [d] = await worker.claim(1)
        await asyncio.sleep(0.5)
        assert await other.claim(10) == []
        await worker.ack(d)
        done = await other.get(id1)
        assert done is not None and done.state == DONE


async def test_redis_done_history_is_bounded(redis_url: str, clock: Clock) -> None:
    async with await RedisQueue.open(redis_url, clock=clock, maxlen=3) as queue:
        ids = await put_all(queue, *(delivery(n, clock) for n in range(5)))
        for d in await queue.claim(10):
            await queue.ack(d)
        assert (await queue.depth())["done"] == 3
        assert await queue.get(ids[0]) is None
        assert ids_of(await queue.list(DONE)) == ids[:1:-1]
        raw = aioredis.Redis.from_url(redis_url)
        try:
            assert await raw.xlen("ocean-hook") == 0  # finished work leaves the main stream
            assert await raw.hlen("ocean-hook:loc") == 3
        finally:
            await raw.aclose()


async def test_redis_unreachable_is_queue_unavailable(redis_server_url: str, clock: Clock) -> None:
    """A server of its own, stopped under the queue (redis_server_url: skip/fail without redis)."""
    with redis_server() as url:
        secret_url = url.replace("redis://", "redis://:s3cret@")
        queue = await RedisQueue.open(url, clock=clock)
    try:
        with pytest.raises(QueueUnavailable, match=r"redis redis://127\.0\.0\.1"):
            await queue.put(delivery(1, clock))
        with pytest.raises(QueueUnavailable, match="redis"):
            await queue.claim(1)
    finally:
        await queue.close()
    with pytest.raises(QueueUnavailable) as raised:
        await RedisQueue.open(secret_url, clock=clock)
    assert "s3cret" not in str(raised.value) and ":***@" in str(raised.value)


async def test_redis_drops_entries_it_did_not_write(redis_url: str, clock: Clock) -> None:
    async with await RedisQueue.open(redis_url, clock=clock) as queue:
        raw = aioredis.Redis.from_url(redis_url)
        try:
            await raw.xadd("ocean-hook", {"hello": "world"})
            [id1] = await put_all(queue, delivery(1, clock))
            assert ids_of(await queue.claim(10)) == [id1]
            assert await raw.xlen("ocean-hook") == 1
        finally:
            await raw.aclose()


async def test_redis_burst_waits_for_a_connection(redis_url: str, clock: Clock) -> None:
    async with await RedisQueue.open(redis_url, clock=clock, max_connections=2) as queue:
        results = await asyncio.gather(*(queue.put(delivery(n, clock)) for n in range(50)))
        assert all(r.accepted for r in results)
        assert (await queue.depth())["pending"] == 50


async def test_redis_forgets_long_silent_empty_consumers(redis_url: str, clock: Clock) -> None:
    async with (
        await RedisQueue.open(redis_url, consumer="gone", clock=clock) as gone,
        await RedisQueue.open(redis_url, consumer="busy", clock=clock) as busy,
        await RedisQueue.open(redis_url, consumer="me", clock=clock) as me,
    ):
        await put_all(gone, delivery(1, clock))
        assert len(await busy.claim(10)) == 1  # holds the delivery: never forgotten, however silent
        assert await gone.claim(10) == []  # now a consumer of the group, with nothing pending
        me.forget_consumers_after_seconds = 0.05
        await asyncio.sleep(0.1)
        await me.recover()
        raw = aioredis.Redis.from_url(redis_url)
        try:
            names = {c["name"] for c in await raw.xinfo_consumers("ocean-hook", "ocean-hook")}
        finally:
            await raw.aclose()
        assert b"busy" in names and b"gone" not in names


async def test_redis_bad_url_is_queue_unavailable() -> None:
    with pytest.raises(QueueUnavailable, match="redis"):
        await RedisQueue.open("http://127.0.0.1:1/0")


@pytest.mark.parametrize("value", ["plain", "é and 中", "quote \" back\\slash", "\ud800 lone", "", "tab\there"])
def test_headers_are_stored_as_json_would_write_them(value: str) -> None:
    from ocean_hook.queue.codec import decode_headers, encode_headers

    pairs = [("X-Name", value), ("x-name", "second copy")]
    assert encode_headers(pairs) == json.dumps(pairs)
    assert decode_headers(encode_headers(pairs)) == pairs


@pytest.mark.parametrize(("suffix", "expected"), [("loc", "hash"), ("seq", "string"), ("retry:due", "zset")])
async def test_redis_a_key_of_another_type_under_the_streams_name_is_refused_at_start(
    redis_url: str, suffix: str, expected: str
) -> None:
    """With `ocean-hook:loc` a string, serve started; each put then failed half way, answered
    503 with the delivery stored, and its resend was a 'duplicate' (found by probing)."""
    other = aioredis.Redis.from_url(redis_url)
    if expected == "string":
        await other.hset(f"ocean-hook:{suffix}", "a", "b")
        kind = "hash"
    else:
        await other.set(f"ocean-hook:{suffix}", "another program's")
        kind = "string"
    await other.aclose()
    with pytest.raises(QueueUnavailable) as caught:
        await RedisQueue.open(redis_url)
    assert str(caught.value).endswith(
        f"key 'ocean-hook:{suffix}' is a {kind}, not the {expected} ocean-hook keeps there: is another program "
        "using the name 'ocean-hook'? (queue.stream)")
