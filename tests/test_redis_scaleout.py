"""Several `serve` instances on one Redis queue: they share the work, survive a SIGKILL of one of
them, keep per-resource order across instances, and the `deliveries` commands work on Redis.

The scale-out test runs two real `ocean-hook serve` processes on one real redis-server, both
writing one local catalog file, and a concurrent aiohttp client sending signed GitHub deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis_server import free_port, redis_server
from serve_helpers import (
    BLUEPRINT,
    ServeProcess,
    SlowPort,
    delivery_id_of,
    github_delivery,
    hook_env,
    metric_value,
    port_env,
    port_target,
    pr_payload,
    serve_in_process,
    wait_for,
    wait_for_entity,
    write_config,
)
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.errors import ConfigError
from ocean_hook.queue.base import Delivery, DeliveryState
from ocean_hook.queue.redis import RedisQueue
from ocean_hook.runtime import open_queue, queue_spec_from_option
from ocean_hook.targets.local import LocalCatalog

PRS = 200
UPDATES = 5
TOTAL = PRS * UPDATES
CLAIM_IDLE_SECONDS = 2.0
STREAM = "ocean-hook"
GROUP = "ocean-hook"
#: requests in flight at once, over both instances
CONCURRENCY = 48


def title(number: int, update: int) -> str:
    return f"PR {number} update {update}"


# ----------------------------------------------------------------------------- the load


@dataclass
class Instance:
    process: ServeProcess
    alive: bool = True


@dataclass
class Load:
    """Sends every PR's updates in order: update k+1 only once update k was accepted (2xx).

    While both instances live, update k of PR n goes to instance (n + k) % 2, so consecutive
    updates of one resource arrive through different instances. A send that fails (connection
    error, non-2xx) is sent again, with the same delivery id, to an instance still alive.
    """

    http: aiohttp.ClientSession
    instances: list[Instance]
    halfway: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: dict[tuple[int, int], int] = field(default_factory=dict)  # (pr, update) -> status
    statuses: Counter[Any] = field(default_factory=Counter)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))

    async def run(self) -> None:
        await asyncio.gather(*(self.send_updates(number) for number in range(1, PRS + 1)))

    async def send_updates(self, number: int) -> None:
        for update in range(UPDATES):
            await self.send(number, update)

    async def send(self, number: int, update: int) -> None:
        payload = pr_payload(number, value=update, action="edited", title=title(number, update))
        body, headers = github_delivery(payload)
        for _ in range(100):
            status = await self.post(self.pick((number + update) % 2), body, headers)
            self.statuses[status] += 1
            if status in (200, 202):
                self.accepted[(number, update)] = status
                if len(self.accepted) == TOTAL // 2:
                    self.halfway.set()
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"PR {number} update {update} was never accepted: {self.statuses}")

    def pick(self, preferred: int) -> Instance:
        if self.instances[preferred].alive:
            return self.instances[preferred]
        return next(i for i in self.instances if i.alive)

    async def post(self, instance: Instance, body: bytes, headers: dict[str, str]) -> int | str:
        async with self.slots:
            try:
                async with self.http.post(instance.process.hook_url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                return type(exc).__name__


# ----------------------------------------------------------------------------- the crash


async def consumer_of(client: aioredis.Redis, pid: int) -> str:
    """The consumer name a `serve` process reads under (hostname-pid-random by default)."""
    infix = f"-{pid}-"

    async def find() -> str | None:
        for consumer in await client.xinfo_consumers(STREAM, GROUP):
            name = consumer["name"].decode()
            if infix in name:
                return name
        return None

    return await wait_for(find, timeout=10, what=f"a consumer of pid {pid} in the group")


async def claimed_seqs(client: aioredis.Redis, consumer: str) -> set[str]:
    """Queue ids of the deliveries `consumer` holds in progress (its entries in the group's PEL)."""
    pel = await client.xpending_range(STREAM, GROUP, "-", "+", 10_000, consumername=consumer)
    seqs = set()
    for entry in pel:
        for _, fields in await client.xrange(STREAM, entry["message_id"], entry["message_id"]):
            seqs.add(fields[b"seq"].decode())
    return seqs


async def kill_mid_work(instance: Instance, client: aioredis.Redis) -> set[str]:
    """SIGKILL the instance while it holds claims; the queue ids it left in progress.

    It is frozen (SIGSTOP) first so that its claims stop changing: after a moment Redis has run
    every command it had sent, and what its consumer still holds is what the crash abandons.
    Thawed and frozen again until it holds something, then killed.
    """
    instance.alive = False  # new sends go to the survivor from now on
    process = instance.process.process
    consumer = await consumer_of(client, process.pid)
    for _ in range(200):
        process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.05)
        abandoned = await claimed_seqs(client, consumer)
        if abandoned:
            process.send_signal(signal.SIGKILL)
            await instance.process.wait(timeout=10)
            return abandoned
        process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    raise AssertionError("the instance never held a claim under load")


async def wait_until_drained(queue: RedisQueue, timeout: float) -> dict[str, int]:
    async def drained() -> dict[str, int] | None:
        depth = await queue.depth()
        return depth if depth["done"] + depth["dead"] >= TOTAL and depth["in_progress"] == 0 else None

    return await wait_for(drained, timeout=timeout, interval=0.1, what="a drained queue")


async def run_cli(*args: str) -> tuple[int, str, str]:
    """`ocean-hook ...` as its own process, as an operator runs it: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocean_hook", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **hook_env(), "COLUMNS": "200"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def serve_processes(config: Path, count: int) -> AsyncIterator[list[ServeProcess]]:
    started = await asyncio.gather(*(ServeProcess.start(config) for _ in range(count)))
    try:
        yield list(started)
    finally:
        for proc in started:
            if proc.process.poll() is None:
                proc.kill()
                await proc.wait()


# ----------------------------------------------------------------------------- the tests


async def test_two_instances_share_the_work_and_survive_a_sigkill(redis_url: str, tmp_path: Path) -> None:
    catalog_path = tmp_path / "catalog.db"
    config = write_config(
        tmp_path,
        target={"type": "local", "path": str(catalog_path)},
        queue={"type": "redis", "url": redis_url, "stream": STREAM, "group": GROUP,
               "claim_idle_seconds": CLAIM_IDLE_SECONDS},
    )  # fmt: skip
    started = time.monotonic()
    client = aioredis.Redis.from_url(redis_url)
    timeout = aiohttp.ClientTimeout(total=15)
    async with (
        asyncio.timeout(80),
        serve_processes(config, 2) as (doomed, survivor),
        aiohttp.ClientSession(timeout=timeout) as http,
        await RedisQueue.open(redis_url, stream=STREAM, group=GROUP, consumer="test-observer") as queue,
    ):
        instances = [Instance(doomed), Instance(survivor)]
        load = Load(http, instances)
        sending = asyncio.create_task(load.run())
        await asyncio.wait({sending, asyncio.create_task(load.halfway.wait())},
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        abandoned = await kill_mid_work(instances[0], client)
        await sending
        depth = await wait_until_drained(queue, timeout=30)

        # every delivery was accepted once the survivor had them all
        assert len(load.accepted) == TOTAL, load.statuses
        assert depth == {"pending": 0, "in_progress": 0, "done": TOTAL, "failed": 0, "dead": 0}
        # stored exactly once each, whichever instance took it and however often it was sent
        assert int(await client.get(f"{STREAM}:seq")) == TOTAL
        # the survivor took over what the killed instance held (unacked when it died), after
        # claim_idle_seconds; the attempt the kill cut short is not counted against it
        for seq in abandoned:
            delivery = await queue.get(seq)
            assert delivery is not None and delivery.state is DeliveryState.DONE
            assert delivery.attempts == 1, delivery.summary()
        # each resource holds its latest update: order held across instances and the crash
        entities = LocalCatalog(catalog_path)
        try:
            stored = {e["identifier"]: e for e in entities.list_entities(BLUEPRINT)}
        finally:
            await entities.close()
        assert sorted(stored) == sorted(str(n) for n in range(1, PRS + 1))
        stale = {ident: (e["title"], e["properties"]["value"]) for ident, e in stored.items()
                 if e["title"] != title(int(ident), UPDATES - 1) or e["properties"]["value"] != UPDATES - 1}
        assert not stale, f"{len(stale)} entities without their latest update, e.g. {list(stale.items())[:3]}"
        # both instances did work before the crash; the survivor is healthy and stops cleanly
        assert "applied:" in doomed.logs() and "applied:" in survivor.logs()
        code, listing = await asyncio.to_thread(cli, "deliveries", "list", "-c", str(config), "--queue", redis_url)
        assert code == 0, listing
        assert f"0 pending, 0 in_progress, {TOTAL} done, 0 failed, 0 dead" in listing
        assert await survivor.stop() == 0
    await client.aclose()
    assert time.monotonic() - started < 90


# ----------------------------------------------------------------------------- deliveries commands


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={**hook_env(), "COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


async def put_claimed(queue: RedisQueue, number: int) -> Delivery:
    """A signed delivery for PR `number`, journaled and claimed as a worker would."""
    body, headers = github_delivery(pr_payload(number, value=number))
    delivery = Delivery(delivery_id=delivery_id_of(headers), method="POST", path="/webhooks/github",
                        headers=list(headers.items()), body=body, received_at=time.time(),
                        processors=["gh-pr"], order_key=str(number))  # fmt: skip
    await queue.put(delivery)
    [claimed] = await queue.claim(1)
    assert claimed.delivery_id == delivery.delivery_id
    return claimed


async def test_a_clean_stop_hands_unstarted_claims_to_the_next_instance_at_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Deliveries claimed ahead and never started waited claim_idle_seconds (30 s by default)
    after a clean restart under a new consumer name, with no word (found by probing)."""
    for name, value in port_env().items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO, logger="ocean_hook.serve")

    def config(consumer: str) -> Path:
        queue = {"type": "redis", "url": redis_url, "stream": "handback", "consumer": consumer,
                 "claim_idle_seconds": 30}
        return write_config(tmp_path / consumer, queue=queue, target=port_target(port.url))

    async with SlowPort(answer_delay=lambda: 0.5) as port, aiohttp.ClientSession() as http:
        async with serve_in_process(config("first"), workers=1) as server:
            for number in range(4):
                async with http.post(server.hook_url, data=github_delivery(pr_payload(number))[0],
                                     headers=github_delivery(pr_payload(number))[1]) as response:
                    assert response.status == 202
            await wait_for(lambda: port.calls("POST", f"/v1/blueprints/{BLUEPRINT}/entities"), what="one applying")
        assert any(re.match(r"[1-9]\d* claimed delivery\(ies\) no worker finished are pending again", r.getMessage())
                   for r in caplog.records), \
            caplog.text
        started = time.monotonic()
        async with serve_in_process(config("second"), workers=4):
            await wait_for(lambda: all(port.entity(BLUEPRINT, str(n)) for n in range(4)), timeout=10,
                           what="all four applied")
        assert time.monotonic() - started < 10


async def test_deliveries_commands_work_on_redis(redis_url: str, tmp_path: Path) -> None:
    queue_spec = {"type": "redis", "url": redis_url, "stream": "cli-hooks"}
    config = write_config(tmp_path, queue=queue_spec)
    base = ("--config", str(config), "--queue", redis_url)  # --queue keeps the config's stream
    async with await RedisQueue.open(redis_url, stream="cli-hooks", consumer="crashed-worker") as queue:
        dead = await put_claimed(queue, 1)
        await queue.dead_letter(dead, "target refused the entity")
        done = await put_claimed(queue, 2)
        await queue.ack(done)

    code, out = await asyncio.to_thread(cli, "deliveries", "list", *base)
    assert code == 0
    assert dead.delivery_id in out and done.delivery_id in out and "target refused the entity" in out
    assert "0 pending, 0 in_progress, 1 done, 0 failed, 1 dead" in out
    code, out = await asyncio.to_thread(cli, "deliveries", "list", "--state", "dead", *base)
    assert dead.delivery_id in out and done.delivery_id not in out

    code, out = await asyncio.to_thread(cli, "deliveries", "show", dead.delivery_id, *base)
    shown = json.loads(out)
    assert code == 0 and shown["state"] == "dead" and shown["attempts"] == 1
    assert shown["last_error"] == "target refused the entity"
    assert shown["body_bytes"] == len(dead.body) and "body" not in shown

    assert (await asyncio.to_thread(cli, "deliveries", "retry", done.delivery_id, *base))[0] == 1
    code, out = await asyncio.to_thread(cli, "deliveries", "retry", dead.delivery_id, *base)
    assert code == 0 and "pending again" in out
    code, out = await asyncio.to_thread(cli, "deliveries", "show", dead.id, *base)
    assert json.loads(out)["state"] == "pending" and json.loads(out)["attempts"] == 0

    # a serve instance on the same queue picks the retried delivery up and applies it
    async with serve_in_process(config) as server:
        entity = await wait_for_entity(server.catalog_path, BLUEPRINT, "1", timeout=10)
    assert entity["properties"]["value"] == 1
    code, out = await asyncio.to_thread(cli, "deliveries", "show", dead.delivery_id, *base)
    assert json.loads(out)["state"] == "done"

    async with await RedisQueue.open(redis_url, stream="cli-hooks", consumer="sender") as queue:
        body, headers = github_delivery(pr_payload(3))
        waiting = Delivery(delivery_id=delivery_id_of(headers), method="POST", path="/webhooks/github",
                           headers=list(headers.items()), body=body, received_at=time.time(),
                           processors=["gh-pr"], order_key="3")  # fmt: skip
        await queue.put(waiting)
    await asyncio.sleep(0.01)  # purge takes what finished strictly before now
    code, out = await asyncio.to_thread(cli, "deliveries", "purge", "--older-than", "0s", *base)
    assert code == 0 and "purged 2 deliveries" in out
    assert "(what arrived in the last 7d still de-duplicates redeliveries: server.dedup_window)" in out
    code, out = await asyncio.to_thread(cli, "deliveries", "list", *base)
    assert "1 pending, 0 in_progress, 0 done, 0 failed, 0 dead" in out and waiting.delivery_id in out


async def test_deliveries_on_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    code, out = await asyncio.to_thread(cli, "deliveries", "list", "--config", str(config), "--queue", url)
    assert code == 2
    assert out.strip().startswith("error: redis redis://127.0.0.1:") and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:{port}/0?password=S3cret-pw", "redis redis://127.0.0.1:{port}/0?password=***: "),
    ("redis://:S3cret-pw@127.0.0.1:{port}/0", "redis redis://:***@127.0.0.1:{port}/0: "),
])
async def test_a_redis_password_is_never_shown_in_any_form(tmp_path: Path, url: str, shown: str) -> None:
    """`?password=` was shown as written, in errors, logs and the public /readyz."""
    port = free_port()
    config = write_config(tmp_path)
    code, out = await asyncio.to_thread(cli, "deliveries", "list", "--config", str(config), "--queue",
                                        url.format(port=port))
    assert code == 2 and "S3cret" not in out
    assert out.startswith("error: " + shown.format(port=port)), out


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://:pw@127.0.0.1:99999/0", "has a port out of range (1-65535)"),
    ("redis://:pw@127.0.0.1:abc/0", "is not a valid URL (percent-encode ':', '@', '/', '?' and '#' in a password)"),
    ("redis://127.0.0.1:0/0", "has port 0: give Redis' port (6379 by default)"),  # redis-py went to 6379
])
async def test_a_bad_queue_option_url_is_said_of_the_option(tmp_path: Path, url: str, problem: str) -> None:
    """It was blamed on `queue.url`, which the config did not have, and a port out of range was
    'not a valid URL' (found by probing)."""
    code, out = await asyncio.to_thread(cli, "deliveries", "list", "--config", str(write_config(tmp_path)),
                                        "--queue", url)
    assert (code, out) == (2, f"error: --queue: the Redis URL {problem}\n")


@pytest.mark.parametrize("url", ["redis://:Zq#9@127.0.0.1:6379/0", "redis://:Zq@127.0.0.1:abc/0",
                                 "redis://:Zq@[::1/0", "redis://127.0.0.1:6379/abc"])
async def test_a_redis_url_that_does_not_parse_is_one_line_quoting_none_of_it(tmp_path: Path, url: str) -> None:
    """They ended in tracebacks (or used database 0), and `check` passed them."""
    config = write_config(tmp_path, queue={"type": "redis", "url": url})
    for args in (["deliveries", "list", "--config", str(config)], ["check", "--config", str(config)]):
        code, out = await asyncio.to_thread(cli, *args)
        assert code in (1, 2) and "queue.url" in out and "the Redis URL " in out, out
        assert "Zq" not in out and "abc" not in out and "::1" not in out


async def test_looking_at_a_stream_that_is_not_there_says_so_and_creates_nothing(tmp_path: Path,
                                                                                    redis_url: str) -> None:
    """`deliveries list` on a mistyped stream or database listed '0 pending', and created the
    stream and its group (which a full Redis refuses: looking failed there)."""
    config = write_config(tmp_path, queue={"type": "redis", "url": redis_url, "stream": "nobody-here"})
    for args in (["list"], ["show", "1"], ["purge", "--older-than", "1d"], ["retry", "--all-dead"]):
        code, out = await asyncio.to_thread(cli, "deliveries", *args, "--config", str(config))
        assert code == 1, out
        assert out.startswith("error: no queue stream 'nobody-here' at redis://") and "yet: serve creates it" in out
    raw = aioredis.Redis.from_url(redis_url)
    try:
        assert await raw.keys("nobody-here*") == []
    finally:
        await raw.aclose()


async def test_looking_at_a_stream_without_its_group_says_so(tmp_path: Path, redis_url: str) -> None:
    """A mistyped `queue.group` got Redis' own `NOGROUP No such key ...` text (found by probing)."""
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.xgroup_create("ocean-hook", "ocean-hook", id="0", mkstream=True)
    finally:
        await raw.aclose()
    config = write_config(tmp_path, queue={"type": "redis", "url": redis_url, "group": "mistyped"})
    code, out = await asyncio.to_thread(cli, "deliveries", "list", "--config", str(config))
    assert (code, out) == (1, f"error: no consumer group 'mistyped' on the queue stream 'ocean-hook' at "
                              f"{redis_url}: serve creates it when it starts (check queue.group)\n")


# ----------------------------------------------------------------------------- Redis down


@contextlib.contextmanager
def own_redis() -> Iterator[tuple[str, contextlib.ExitStack]]:
    """A redis-server of this test alone (it gets stopped mid-test); close the stack to stop it."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(redis_server()), stack


async def wait_until_done(http: aiohttp.ClientSession, url: str, count: int) -> None:
    async def done() -> bool:
        async with http.get(url + "/metrics") as resp:
            return metric_value(await resp.text(), "ocean_hook_queue_depth", {"state": "done"}) == count

    await wait_for(done, what=f"{count} done in the queue depth")


async def test_redis_down_means_503_and_nothing_accepted(redis_server_url: str, tmp_path: Path) -> None:
    """`redis_server_url` only makes the test fail in CI (skip locally) without redis-server."""
    with own_redis() as (url, redis_stack):
        config = write_config(tmp_path, queue={"type": "redis", "url": url, "claim_idle_seconds": 1})
        async with serve_in_process(config) as server, aiohttp.ClientSession() as http:
            body, headers = github_delivery(pr_payload(1))
            async with http.post(server.hook_url, data=body, headers=headers) as resp:
                assert resp.status == 202
            await wait_for_entity(server.catalog_path, BLUEPRINT, "1")
            await wait_until_done(http, server.url, 1)
            redis_stack.close()  # Redis goes away under a running instance

            body, headers = github_delivery(pr_payload(2))
            async with http.post(server.hook_url, data=body, headers=headers) as resp:
                assert resp.status == 503, await resp.text()
                assert "send again later" in (await resp.json())["reason"]
            async with http.get(server.url + "/readyz") as resp:
                assert resp.status == 503
            async with http.get(server.url + "/metrics") as resp:  # no depth, not the last one as if current
                assert resp.status == 200
                assert "ocean_hook_queue_depth{" not in await resp.text()
    # and an instance cannot start without its queue: one line, exit code 2
    code, _, errors = await run_cli("serve", "--config", str(config), "--port", str(free_port()))
    assert code == 2 and errors.startswith("error: redis redis://127.0.0.1:"), errors
    assert len(errors.strip().splitlines()) == 1, errors


# ----------------------------------------------------------------------------- the queue: block


async def test_queue_options_reach_the_redis_queue(redis_url: str, tmp_path: Path) -> None:
    spec = {"type": "redis", "url": redis_url, "stream": "s", "group": "g", "consumer": "c",
            "claim_idle_seconds": 2, "maxlen": 500, "max_connections": 8}  # fmt: skip
    queue = await open_queue(spec, tmp_path, dedup_window_seconds=60)
    try:
        assert isinstance(queue, RedisQueue)
        assert (queue.stream, queue.group, queue.consumer) == ("s", "g", "c")
        assert (queue.claim_idle_seconds, queue.maxlen, queue.dedup_window_seconds) == (2.0, 500, 60)
    finally:
        await queue.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"claim_idle_seconds": 0}, "queue.claim_idle_seconds: must be seconds, > 0, got 0"),
        ({"claim_idle_seconds": "2s"}, "queue.claim_idle_seconds: must be seconds, > 0, got '2s'"),
        ({"maxlen": 1.5}, "queue.maxlen: must be a whole number"),
        ({"max_connections": True}, "queue.max_connections: must be a whole number"),
        ({"stream": ""}, "queue.stream: must be a stream name, got ''"),
        ({"path": "journal.db"}, "queue: unknown key(s) 'path' (allowed: claim_idle_seconds, consumer,"),
    ],
)
async def test_bad_redis_queue_options_are_one_clear_error(spec: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_queue({"type": "redis", "url": "redis://127.0.0.1:1/0", **spec}, tmp_path, dedup_window_seconds=1)
    assert str(caught.value).startswith(message)


def test_queue_option_keeps_redis_settings_and_drops_sqlite_ones() -> None:
    redis_cfg = {"type": "redis", "url": "redis://a:6379/0", "stream": "s", "claim_idle_seconds": 5}
    assert queue_spec_from_option("redis://b:6379/1", redis_cfg) == {**redis_cfg, "url": "redis://b:6379/1"}
    sqlite_cfg = {"type": "sqlite", "path": "j.db"}
    assert queue_spec_from_option("redis://b:6379/1", sqlite_cfg) == {"type": "redis", "url": "redis://b:6379/1"}


@pytest.mark.parametrize("url", ["redis:/:SECRETX@127.0.0.1:1/0", " redis://:SECRETX@h/0", "valkey://:SECRETX@h"])
def test_a_mistyped_redis_url_is_never_shown_whole(url: str, tmp_path: Path) -> None:
    """A URL that is not redis://, rediss:// or unix:// was echoed whole, password and all, by
    `--queue` and by `check` (found by probing): only up to its first ':' is shown."""
    with pytest.raises(ConfigError) as caught:
        queue_spec_from_option(url, {})
    assert "SECRETX" not in str(caught.value)
    assert str(caught.value).startswith(f"--queue must be 'sqlite' or a redis:// URL, got '{url.split(':')[0]}:...'")
    config = write_config(tmp_path, queue={"type": "redis", "url": url})
    result = CliRunner().invoke(app, ["check", "--no-env", "--config", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "SECRETX" not in result.output
    assert "queue type redis needs 'url' (redis://host:6379/0), got" in result.output


def test_a_redis_url_scheme_is_read_in_any_case() -> None:
    """URL schemes are case-insensitive, and redis-py reads `REDIS://` as redis://."""
    assert queue_spec_from_option("REDIS://h:6379/1", {}) == {"type": "redis", "url": "REDIS://h:6379/1"}
