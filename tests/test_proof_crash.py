"""Proof of the durability promise: SIGKILL at random moments under a steady stream of deliveries.

A child `ocean-hook serve` (SQLite journal, local catalog) is fed by concurrent senders, one
per pull request, each sending that PR's updates one after the other with a sequence number in
the payload. A seeded random schedule kills the server with SIGKILL (no clean-up of any kind)
and starts it again on the same port and state directory. The senders behave like real ones:
a request that fails with a connection error or a 503 is sent again with the same delivery id.

Every delivery maps to two entities: the PR itself (`pullRequest/<n>`, holding the latest
sequence number) and a marker `delivery/d-<n>-<seq>` that exists only if that delivery was
applied. At the end, after a clean start and drain:

- every delivery answered 2xx has its marker (nothing accepted was lost), and there is no marker
  for anything else;
- every PR holds its last accepted sequence number (per-PR order held through every crash; a
  replayed older delivery applied after a newer one would show up as a stale PR);
- the journal holds exactly one row per delivery id, all done (a retried delivery was not
  journaled, hence applied, a second time), none left in progress.

Set OH_CRASH_SEED to replay a run; the seed and the figures are printed, and kept in
benchmarks/results/proof_crash.json with OCEAN_HOOK_RECORD_PROOF=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from proof_helpers import record_result
from serve_helpers import (
    BLUEPRINT,
    ServeProcess,
    delivery_id_of,
    github_delivery,
    hook_env,
    journal_deliveries,
    journal_depth,
    pr_payload,
    wait_for,
    write_config,
)

from ocean_hook.queue.base import DeliveryState

PRS = 8
KILLS = 5
#: seconds between a (re)start being ready and its SIGKILL, drawn from the seeded generator
KILL_AFTER = (0.2, 0.8)
RESEND_PAUSE = 0.05
MARKER = "delivery"
TIME_BUDGET = 60.0

MAPPING = f"""\
resources:
  - kind: pull-request
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .number | tostring
          title: .title
          blueprint: '"{BLUEPRINT}"'
          properties:
            value: .value
  - kind: pull-request
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: '"d-" + (.number | tostring) + "-" + (.value | tostring)'
          title: .title
          blueprint: '"{MARKER}"'
          properties:
            pr: .number
            seq: .value
"""


@dataclass
class Sent:
    """One delivery as its sender saw it: how often it was sent and what answered it."""

    number: int
    seq: int
    delivery_id: str
    requests: int = 0
    status: int | None = None  # the 2xx that ended it
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Traffic:
    deliveries: list[Sent] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def accepted(self) -> list[Sent]:
        return [s for s in self.deliveries if s.status is not None]


@dataclass
class Kill:
    after_seconds: float
    accepted_before: int
    unfinished_in_journal: int  # pending + in progress + failed right after the kill


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def send_until_accepted(http: aiohttp.ClientSession, url: str, sent: Sent, body: bytes,
                              headers: dict[str, str]) -> None:
    """A real sender: no answer or a 503 means "send the same delivery again" (same id)."""
    while True:
        sent.requests += 1
        try:
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        if status is not None and 200 <= status < 300:
            sent.status = status
            return
        if status not in (None, 503):
            sent.unexpected.append(f"HTTP {status}")
            return
        await asyncio.sleep(RESEND_PAUSE)


async def sender(http: aiohttp.ClientSession, url: str, number: int, traffic: Traffic) -> None:
    """Updates of one PR, each sent once the previous one was accepted: a defined "last"."""
    seq = 0
    while not traffic.stop.is_set():
        seq += 1
        payload = pr_payload(number, value=seq, title=f"PR {number} #{seq}")
        body, headers = github_delivery(payload, delivery=str(uuid.uuid4()))
        sent = Sent(number, seq, delivery_id_of(headers))
        traffic.deliveries.append(sent)
        await send_until_accepted(http, url, sent, body, headers)
        if sent.unexpected:
            return


def catalog_rows(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT blueprint, identifier, entity FROM entities").fetchall()
    return {(bp, ident): json.loads(text) for bp, ident, text in rows}


async def unfinished(state: Path) -> int:
    depth = await journal_depth(state)
    return sum(depth.get(s, 0) for s in ("pending", "in_progress", "failed"))


async def crash_run(config: Path, state: Path, rng: random.Random, traffic: Traffic,
                    first_url: asyncio.Future[str], started: list[ServeProcess]) -> list[Kill]:
    """Start, let it work a random while, SIGKILL, start again on the same port and state
    directory; KILLS times. Every start goes to `started` (the last one is left running)."""
    port = free_port()
    kills: list[Kill] = []
    server = await ServeProcess.start(config, "--port", str(port))
    started.append(server)
    first_url.set_result(server.hook_url)
    for _ in range(KILLS):
        after = rng.uniform(*KILL_AFTER)
        await asyncio.sleep(after)
        accepted_before = len(traffic.accepted)
        server.kill()
        assert await server.wait() == -9, server.logs()
        kills.append(Kill(round(after, 3), accepted_before, await unfinished(state)))
        server = await ServeProcess.start(config, "--port", str(port))
        started.append(server)
        assert server.url.endswith(f":{port}"), server.url
    return kills


def cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ocean_hook", *args, "--config", str(config)],
        capture_output=True, text=True, env={**os.environ, **hook_env(), "COLUMNS": "200"}, timeout=20,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout



async def test_sigkill_at_random_moments_loses_nothing_answered_2xx(tmp_path: Path) -> None:
    seed = int(os.environ.get("OH_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    started = time.monotonic()
    state = tmp_path / "state"
    config = write_config(tmp_path, mapping=MAPPING, server={"workers": 4, "shutdown_timeout": 10})
    traffic = Traffic()
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        first_url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def run_senders() -> None:
            url = await first_url
            await asyncio.gather(*(sender(http, url, n, traffic) for n in range(1, PRS + 1)))

        senders = asyncio.create_task(run_senders())
        servers: list[ServeProcess] = []
        try:
            kills = await crash_run(config, state, rng, traffic, first_url, servers)
            # the final, clean run: senders finish the delivery in hand, the workers drain
            await asyncio.sleep(0.3)
            traffic.stop.set()
            await asyncio.wait_for(senders, 20)
            await wait_for(lambda: _drained(state), timeout=20, what="an empty journal backlog")
            stuck = cli(config, "deliveries", "list", "--state", "in_progress")
            assert await servers[-1].stop() == 0, servers[-1].logs()
        finally:
            traffic.stop.set()
            senders.cancel()
            for server in servers:
                if server.process.poll() is None:
                    server.kill()

    journal = await journal_deliveries(state)
    depth = await journal_depth(state)
    entities = catalog_rows(state / "catalog.db")
    accepted = traffic.accepted
    markers = {ident for bp, ident in entities if bp == MARKER}
    lost = [s for s in accepted if f"d-{s.number}-{s.seq}" not in markers]
    last = {n: max((s.seq for s in accepted if s.number == n), default=0) for n in range(1, PRS + 1)}
    held = {n: (entities.get((BLUEPRINT, str(n))) or {}).get("properties", {}).get("value") for n in last}
    stale = {n: value for n, value in held.items() if value != last[n]}
    rows_per_id = Counter(d.delivery_id for d in journal)
    summary = (f"crash suite: {len(traffic.deliveries)} deliveries sent, {len(accepted)} accepted, "
               f"{len(kills)} kills survived, {len(lost)} lost (seed {seed})")
    print(summary)
    record_result("proof_crash", {
        "summary": summary,
        "seed": seed,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - started, 1),
        "deliveries_sent": len(traffic.deliveries),
        "accepted": len(accepted),
        "requests": sum(s.requests for s in traffic.deliveries),
        "resent_after_no_answer_or_503": sum(s.requests - 1 for s in traffic.deliveries),
        "accepted_as_duplicate_after_lost_answer": sum(s.status == 200 for s in accepted),
        "kills_survived": len(kills),
        "kills": [k.__dict__ for k in kills],
        "lost": len(lost),
        "stale_entities": len(stale),
        "journal_rows": len(journal),
        "journaled_twice": sum(count > 1 for count in rows_per_id.values()),
        "left_in_progress": depth.get("in_progress", 0),
    })

    assert len(kills) >= 5
    assert not [s for s in traffic.deliveries if s.unexpected], "a sender got an answer other than 2xx/503"
    assert len(accepted) >= 50, summary  # a real stream, not a trickle
    assert sum(k.unfinished_in_journal for k in kills) > 0, "no kill caught any unfinished work"
    assert lost == [], f"accepted but never applied: {[s.delivery_id for s in lost][:5]}"
    assert markers <= {f"d-{s.number}-{s.seq}" for s in traffic.deliveries}, "a marker nobody sent"
    assert stale == {}, f"PRs not at their last accepted update (PR: value held): {stale}, wanted {last}"
    assert max(rows_per_id.values()) == 1, "a delivery id was journaled twice"
    assert {s.delivery_id for s in accepted} <= set(rows_per_id)
    assert {d.state for d in journal} == {DeliveryState.DONE}
    assert depth.get("in_progress", 0) == 0 and " 0 in_progress," in stuck.splitlines()[-1], stuck
    assert time.monotonic() - started < TIME_BUDGET


async def _drained(state: Path) -> bool:
    return await unfinished(state) == 0

