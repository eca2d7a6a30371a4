"""`ocean-hook serve` killed with SIGKILL and started again: nothing answered 2xx is lost.

These run the listener as a child process, because only a process can be killed for real.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
from port_server import FakePort
from serve_helpers import (
    BLUEPRINT,
    HOOK_PATH,
    ServeProcess,
    SlowPort,
    delivery_id_of,
    github_delivery,
    github_processor,
    hook_env,
    journal_deliveries,
    port_env,
    port_target,
    pr_payload,
    read_entity,
    wait_for,
    wait_until_settled,
    write_config,
)

from ocean_hook.queue.base import DeliveryState


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with http.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


async def test_sigkill_with_work_in_progress_then_restart_applies_everything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with SlowPort(answer_delay=lambda: 0.3) as port, aiohttp.ClientSession() as http:
        config = write_config(tmp_path, target=port_target(port.url), server={"workers": 2})
        env = hook_env(port_env())
        first = await ServeProcess.start(config, env=env)
        sent = []
        for number in range(1, 13):
            body, headers = github_delivery(pr_payload(number, value=number))
            assert await _post(http, first.hook_url, body, headers) == 202
            sent.append(delivery_id_of(headers))
        await wait_for(lambda: port.calls("POST", f"/v1/blueprints/{BLUEPRINT}/"), what="a first upsert")
        first.kill()
        assert await first.wait() == -9

        left = await journal_deliveries(state)
        assert [d.delivery_id for d in left] == sent
        assert any(d.state is DeliveryState.IN_PROGRESS for d in left)  # the kill caught work mid-way
        assert sum(d.state is DeliveryState.DONE for d in left) < len(sent)

        port.answer_delay = lambda: 0.0
        second = await ServeProcess.start(config, env=env)
        try:
            done = await wait_until_settled(state, len(sent))
            await second.wait_for_log("recovered")
        finally:
            assert await second.stop() == 0
        assert {d.state for d in done} == {DeliveryState.DONE}
        for number in range(1, 13):
            assert port.entity(BLUEPRINT, str(number))["properties"]["value"] == number


async def test_every_delivery_answered_2xx_survives_a_sigkill_under_load(tmp_path: Path) -> None:
    """A client keeps 16 deliveries in flight; the server is killed after 100 answers. Every
    delivery that got its 202 must be journaled, and applied once the server is back."""
    state = tmp_path / "state"
    config = write_config(tmp_path)
    server = await ServeProcess.start(config)
    answered: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(1, 401):
        queue.put_nowait(number)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            number = queue.get_nowait()
            body, headers = github_delivery(pr_payload(number, value=number), delivery=str(uuid.uuid4()))
            try:
                status = await _post(http, server.hook_url, body, headers)
            except aiohttp.ClientError:
                continue  # no answer: the sender would send it again
            answered[delivery_id_of(headers)] = status
            if len(answered) == 100:
                server.kill()

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(client(http) for _ in range(16)))
    assert await server.wait() == -9
    accepted = {d for d, status in answered.items() if status == 202}
    assert len(accepted) >= 100
    assert accepted <= {d.delivery_id for d in await journal_deliveries(state)}

    again = await ServeProcess.start(config)
    try:
        settled = await wait_until_settled(state, len(await journal_deliveries(state)), timeout=20)
    finally:
        assert await again.stop() == 0
    assert {d.state for d in settled} == {DeliveryState.DONE}
    by_id = {d.delivery_id: d for d in settled}
    for delivery_id in accepted:
        number = by_id[delivery_id].order_key.removeprefix(f"{HOOK_PATH}:")
        entity = await read_entity(state / "catalog.db", BLUEPRINT, number)
        assert entity is not None and entity["properties"]["value"] == int(number)


async def test_retry_schedule_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with FakePort() as port, aiohttp.ClientSession() as http:
        port.fail_next(f"/v1/blueprints/{BLUEPRINT}/", 503, times=1)
        # 8 s: room for a slow restart on a loaded machine (at 4 s, a start of 3.5 s failed the test)
        retry = {"initial_retry_delay_seconds": 8.0, "max_retries": 3}
        config = write_config(tmp_path, processors=[github_processor(retry=retry)], target=port_target(port.url))
        env = hook_env(port_env())
        first = await ServeProcess.start(config, env=env)
        assert await _post(http, first.hook_url, *github_delivery(pr_payload(61, value=3))) == 202
        [failed] = await wait_for(lambda: journal_deliveries(state, DeliveryState.FAILED), what="a failed attempt")
        first.kill()
        assert await first.wait() == -9
        assert failed.attempts == 1 and failed.next_attempt_at is not None

        second = await ServeProcess.start(config, env=env)
        try:
            assert time.time() < failed.next_attempt_at - 0.5
            await asyncio.sleep(0.5)  # two worker polls: a reset schedule would retry right away
            [waiting] = await journal_deliveries(state)
            assert (waiting.state, waiting.attempts) == (DeliveryState.FAILED, 1)
            assert waiting.next_attempt_at == failed.next_attempt_at
            assert port.entity(BLUEPRINT, "61") is None
            [done] = await wait_until_settled(state, 1)
        finally:
            assert await second.stop() == 0
        assert (done.state, done.attempts) == (DeliveryState.DONE, 2)
        assert done.updated_at >= failed.next_attempt_at
        assert port.entity(BLUEPRINT, "61")["properties"]["value"] == 3
