"""A `serve` frozen by a jq program that never ends is killed, says why, and loses nothing.

The freeze is real: jq's C code holds the GIL, so nothing in the process runs, and only a process
outside it can act. These run `serve` as a child process with a short `server.stall_timeout`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from serve_helpers import (
    BLUEPRINT,
    MAPPING,
    ServeProcess,
    delivery_id_of,
    github_delivery,
    pr_payload,
    wait_for,
    wait_for_entity,
    wait_until_settled,
    write_config,
)

from ocean_hook.queue.base import DeliveryState

# the title of a pull request called "loop" is computed by a jq program that never ends
LOOPING = MAPPING.replace("title: .title", 'title: if .title == "loop" then last(range(1e18)) else .title end')


def _watchdogs_of(pid: int) -> list[int]:
    """Watchdog processes started for `pid`, wherever they are now in the process tree."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ocean_hook.watchdog" in argv and str(pid).encode() in argv:
            found.append(int(entry.name))
    return found


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
        return response.status


async def test_a_stalled_serve_is_killed_naming_the_delivery_and_runs_it_again_once_fixed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path, mapping=LOOPING, server={"stall_timeout": "1s", "workers": 1})
    server = await ServeProcess.start(config)
    good_body, good_headers = github_delivery(pr_payload(1, title="fine"))
    assert await _post(server.hook_url, good_body, good_headers) == 202
    await wait_for_entity(state / "catalog.db", BLUEPRINT, "1")

    body, headers = github_delivery(pr_payload(2, title="loop"))
    assert await _post(server.hook_url, body, headers) == 202
    started = time.monotonic()
    assert await asyncio.wait_for(server.wait(), 20) == -9  # SIGKILL: nothing in it could run
    assert time.monotonic() - started < 15
    logs = server.logs()
    assert "has not run for 1 s (server.stall_timeout)" in logs
    assert f"(delivery {delivery_id_of(headers)})" in logs
    assert "Traceback" not in logs

    # the mapping fixed, the next start runs the delivery the stall interrupted
    write_config(tmp_path, server={"stall_timeout": "1s"})
    again = await ServeProcess.start(config)
    try:
        done = await wait_until_settled(state, 2)
    finally:
        assert await again.stop() == 0
    assert [d.state for d in done] == [DeliveryState.DONE, DeliveryState.DONE]
    assert (await wait_for_entity(state / "catalog.db", BLUEPRINT, "2"))["title"] == "loop"


async def test_the_watchdog_leaves_with_serve_and_a_busy_serve_is_not_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, server={"stall_timeout": "1s"})
    server = await ServeProcess.start(config)
    try:
        assert len(_watchdogs_of(server.pid)) == 1
        await asyncio.sleep(2.5)  # idle past the stall timeout: the heartbeat keeps it alive
        body, headers = github_delivery(pr_payload(7))
        assert await _post(server.hook_url, body, headers) == 202
    finally:
        assert await server.stop() == 0
    assert "has not run" not in server.logs()
    await wait_for(lambda: not _watchdogs_of(server.pid), what="the watchdog gone")


async def test_stall_timeout_zero_starts_no_watchdog(tmp_path: Path) -> None:
    server = await ServeProcess.start(write_config(tmp_path, server={"stall_timeout": "0s"}))
    try:
        assert _watchdogs_of(server.pid) == []
    finally:
        assert await server.stop() == 0


def test_the_watchdog_kills_what_goes_quiet_and_leaves_alone_what_closes_its_pipe() -> None:
    """The child alone, watching a stand-in that sends one heartbeat, then nothing."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    stand_in = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys, time\n"
         "w = subprocess.Popen([sys.executable, '-m', 'ocean_hook.watchdog', str(os.getpid()), '0.5', 'json'],"
         " stdin=subprocess.PIPE)\n"
         "w.stdin.write(b'.\\n+12 abc\\n+13 def\\n-13\\n'); w.stdin.flush()\n"
         "time.sleep(30)\n"],
        stderr=subprocess.PIPE, env=env,
    )
    _, err = stand_in.communicate(timeout=20)
    assert stand_in.returncode == -9
    assert '"level": "error"' in err.decode()
    assert "Deliveries being processed: 12 (delivery abc); they stay in the journal" in err.decode()

    closing = subprocess.run(
        [sys.executable, "-c",
         "import os, subprocess, sys\n"
         "w = subprocess.Popen([sys.executable, '-m', 'ocean_hook.watchdog', str(os.getpid()), '0.5', 'text'],"
         " stdin=subprocess.PIPE)\n"
         "w.stdin.close(); sys.exit(w.wait(timeout=10))\n"],
        capture_output=True, env=env, timeout=20,
    )
    assert closing.returncode == 0
    assert closing.stderr == b""
