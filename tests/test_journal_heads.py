"""The SQLite journal's marked key heads and batched puts give the answers the plain queries give.

The reference is what the journal used to compute on every claim: group every unfinished
delivery by order key, take the oldest of each, keep it when it is due and nothing of its key is
in progress. Random sequences of every queue operation, with concurrent (batched) puts carrying
duplicate and empty delivery ids, are checked against it step by step; so is a version-1 file.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from ocean_hook.queue.base import Delivery
from ocean_hook.queue.sqlite import SqliteJournal

UNFINISHED = "('pending', 'in_progress', 'failed')"

REFERENCE_CLAIMABLE = f"""
SELECT id FROM (
    SELECT d.id FROM (
        SELECT MIN(id) AS id FROM deliveries WHERE state IN {UNFINISHED} AND order_key != ''
        GROUP BY order_key HAVING SUM(state = 'in_progress') = 0) AS head
    JOIN deliveries AS d ON d.id = head.id
    WHERE d.state = 'pending' OR (d.state = 'failed' AND d.next_attempt_at <= :now))
UNION ALL
SELECT id FROM deliveries WHERE order_key = '' AND state = 'pending'
UNION ALL
SELECT id FROM deliveries WHERE order_key = '' AND state = 'failed' AND next_attempt_at <= :now
ORDER BY 1 LIMIT :limit
"""

REFERENCE_HEADS = f"""
SELECT id FROM deliveries WHERE state IN {UNFINISHED} AND (order_key = '' OR id IN (
    SELECT MIN(id) FROM deliveries WHERE state IN {UNFINISHED} GROUP BY order_key)) ORDER BY id
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def delivery(n: int, delivery_id: str, key: str, clock: Clock) -> Delivery:
    return Delivery(delivery_id, "POST", "/hooks", [("X-N", str(n))], b'{"n": %d}' % n, clock(), ["p"], key)


def marked_heads(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT id FROM deliveries WHERE head = 1 ORDER BY id")]


def reference_heads(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute(REFERENCE_HEADS)]


async def random_walk(path: Path, seed: int, steps: int) -> None:
    rnd = random.Random(seed)
    clock = Clock()
    journal = await SqliteJournal.open(path, clock=clock)
    db = sqlite3.connect(path)
    claimed: dict[str, Delivery] = {}
    first_id: dict[str, str] = {}
    n = 0
    try:
        for step in range(steps):
            op = rnd.choice(["put"] * 5 + ["claim"] * 3 + ["ack", "retry", "dead", "requeue", "requeue_dead",
                                                            "time", "restart"])
            where = f"seed {seed} step {step} {op}"
            if op == "put":  # several at once: they share one transaction
                batch = []
                for _ in range(rnd.choice([1, 1, 2, 3, 6])):
                    n += 1
                    delivery_id = rnd.choice([f"d{n}", f"d{n}", "", f"d{rnd.randint(1, n)}"])
                    batch.append(delivery(n, delivery_id, rnd.choice(["", "a", "b", "c"]), clock))
                results = await asyncio.gather(*(journal.put(d) for d in batch))
                for sent, result in zip(batch, results, strict=True):
                    if sent.delivery_id in first_id:
                        assert (result.accepted, result.id) == (False, first_id[sent.delivery_id]), where
                        continue
                    assert result.accepted, where
                    if sent.delivery_id:
                        first_id[sent.delivery_id] = result.id
                    stored = await journal.get(result.id)
                    assert stored is not None and (stored.body, stored.order_key) == (sent.body, sent.order_key)
            elif op == "claim":
                limit = rnd.randint(1, 4)
                expected = [str(row[0]) for row in db.execute(REFERENCE_CLAIMABLE, {"now": clock(), "limit": limit})]
                got = await journal.claim(limit)
                assert [d.id for d in got] == expected, where
                claimed.update((d.id, d) for d in got)
            elif op == "ack" and claimed:  # several at once: they share one transaction
                chosen = rnd.sample(sorted(claimed), min(len(claimed), rnd.choice([1, 2, 4])))
                await asyncio.gather(*(journal.ack(claimed.pop(id_)) for id_ in chosen))
            elif op in ("retry", "dead") and claimed:
                taken = claimed.pop(rnd.choice(sorted(claimed)))
                if op == "retry":
                    await journal.retry_later(taken, "later", rnd.choice([0, 5, 50]))
                else:
                    await journal.dead_letter(taken, "gave up")
            elif op == "requeue":
                ended = db.execute("SELECT id FROM deliveries WHERE state IN ('dead', 'failed')").fetchall()
                if ended:
                    chosen = str(rnd.choice(ended)[0])
                    await journal.requeue(chosen)
                    claimed.pop(chosen, None)
            elif op == "requeue_dead":
                await journal.requeue_dead()
            elif op == "time":
                clock.now += rnd.choice([1, 10, 100])
            elif op == "restart" and rnd.random() < 0.3:  # a crash: claims go back to pending
                await journal.close()
                journal = await SqliteJournal.open(path, clock=clock)
                await journal.recover()
                claimed.clear()
            assert marked_heads(db) == reference_heads(db), where
    finally:
        db.close()
        await journal.close()


@pytest.mark.parametrize("seed", range(8))
async def test_claims_and_heads_match_the_reference_through_random_operations(tmp_path: Path, seed: int) -> None:
    await random_walk(tmp_path / "journal.db", seed, 150)


async def test_a_version_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    db = sqlite3.connect(path)
    db.executescript(VERSION_1_SCHEMA)
    rnd = random.Random(7)
    for i in range(400):
        state = rnd.choice(["pending", "in_progress", "failed", "done", "dead"])
        db.execute(
            "INSERT INTO deliveries (delivery_id, method, path, headers, body, processors, order_key, state,"
            " next_attempt_at, received_at, created_at, updated_at) VALUES (?, 'POST', '/', '[]', x'7b7d', '[]',"
            " ?, ?, ?, 1, 1, 1)",
            (f"d{i}", rnd.choice(["", "a", "b", "k1", "k2"]), state, 5.0 if state == "failed" else None),
        )
    db.execute("PRAGMA user_version=1")
    db.commit()
    expected = [str(row[0]) for row in db.execute(REFERENCE_CLAIMABLE, {"now": 10.0, "limit": 50})]
    db.close()

    journal = await SqliteJournal.open(path, clock=lambda: 10.0)
    try:
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert marked_heads(db) == reference_heads(db)
        assert [d.id for d in await journal.claim(50)] == expected
        assert marked_heads(db) == reference_heads(db)
        db.close()
    finally:
        await journal.close()
    reopened = await SqliteJournal.open(path, clock=lambda: 10.0)  # a second open changes nothing
    await reopened.close()


VERSION_1_SCHEMA = """
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, processors TEXT NOT NULL,
    order_key TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, next_attempt_at REAL, received_at REAL NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL);
CREATE INDEX deliveries_delivery_id ON deliveries (delivery_id, received_at);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at, id);
CREATE INDEX deliveries_key ON deliveries (order_key, state, id);
CREATE INDEX deliveries_unfinished ON deliveries (order_key, id, state)
    WHERE state IN ('pending', 'in_progress', 'failed');
CREATE INDEX deliveries_updated ON deliveries (state, updated_at);
"""


async def test_a_hot_key_and_a_long_backlog_keep_claims_exact(tmp_path: Path) -> None:
    """3,000 waiting behind one key and 3,000 on keys of their own: claims take heads only."""
    clock = Clock()
    journal = await SqliteJournal.open(tmp_path / "journal.db", clock=clock)
    try:
        await asyncio.gather(*(journal.put(delivery(i, f"h{i}", "hot", clock)) for i in range(3000)))
        await asyncio.gather(*(journal.put(delivery(i, f"k{i}", f"k{i}", clock)) for i in range(3000, 6000)))
        first = await journal.claim(40)
        assert [d.order_key for d in first] == ["hot", *(f"k{i}" for i in range(3000, 3039))]
        await asyncio.gather(*(journal.ack(d) for d in first))
        second = await journal.claim(2)
        assert [(d.order_key, d.delivery_id) for d in second] == [("hot", "h1"), ("k3039", "k3039")]
    finally:
        await journal.close()
