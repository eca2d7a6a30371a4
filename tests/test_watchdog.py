"""A `serve` frozen by a jq program that never ends is killed, says why, and loses nothing.

The freeze is real: jq's C code holds the GIL, so nothing in the process runs, and only a process
outside it can act. These run `serve` as a child process with a short `server.stall_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
from serve_helpers import (
    BLUEPRINT,
    HOOK_PATH,
    MAPPING,
    ServeProcess,
    delivery_id_of,
    github_delivery,
    hook_env,
    pr_payload,
    wait_for,
    wait_for_entity,
    wait_until_settled,
    write_config,
)

from ocean_hook.config import load_config
from ocean_hook.queue.base import Delivery, DeliveryState
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.runtime import Runtime
from ocean_hook.watchdog import Stall, read_stalls, write_stalls
from ocean_hook.worker import WorkerPool

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


def _serve_until_it_exits(config: Path, log_path: Path) -> int:
    """A `serve` expected to be killed before it ever listens: its exit status."""
    with log_path.open("wb") as stderr:
        return subprocess.run([sys.executable, "-m", "ocean_hook", "serve", "--config", str(config), "--port", "0"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=30,
                              env={**os.environ, **hook_env()}, cwd=config.parent).returncode


@contextlib.asynccontextmanager
async def _stalling(config: Path) -> AsyncIterator[ServeProcess]:
    """A `serve` the test expects the watchdog to kill; killed here if the test fails first."""
    server = await ServeProcess.start(config)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()
            await server.wait()


async def test_a_stalled_serve_is_killed_naming_the_delivery_and_runs_it_again_once_fixed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path, mapping=LOOPING, server={"stall_timeout": "1s", "workers": 1})
    async with _stalling(config) as server:
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
    assert f"Deliveries being processed: 2 (delivery {delivery_id_of(headers)}); they stay in the journal" in logs
    assert "Traceback" not in logs

    # the mapping fixed, the next start runs the delivery the stall interrupted, before it listens
    write_config(tmp_path, server={"stall_timeout": "1s"})
    again = await ServeProcess.start(config)
    try:
        done = await wait_until_settled(state, 2)
    finally:
        assert await again.stop() == 0
    assert "running them one at a time before listening: 2" in again.logs()
    assert [d.state for d in done] == [DeliveryState.DONE, DeliveryState.DONE]
    assert (await wait_for_entity(state / "catalog.db", BLUEPRINT, "2"))["title"] == "loop"
    assert not (state / "stalls.json").exists()


async def test_a_delivery_that_stalls_serve_when_run_alone_is_dead_lettered_and_serve_goes_on(tmp_path: Path) -> None:
    """Not fixed: the second start runs it alone and is killed again, now knowing the cause; the
    third dead-letters it and listens. Four workers, so the first stall cannot tell the cause."""
    state = tmp_path / "state"
    config = write_config(tmp_path, mapping=LOOPING, server={"stall_timeout": "1s", "workers": 4})
    async with _stalling(config) as server:
        body, headers = github_delivery(pr_payload(2, title="loop"))
        assert await _post(server.hook_url, body, headers) == 202
        assert await asyncio.wait_for(server.wait(), 20) == -9

    assert _serve_until_it_exits(config, tmp_path / "second.log") == -9
    second = (tmp_path / "second.log").read_text()
    assert "running them one at a time before listening: 1" in second
    assert "listening on" not in second
    assert f"Delivery 1 (delivery {delivery_id_of(headers)}) was running alone: it is the cause" in second

    third = await ServeProcess.start(config)
    try:
        [dead] = await wait_until_settled(state, 1)
        fresh_body, fresh_headers = github_delivery(pr_payload(3, title="fine"))
        assert await _post(third.hook_url, fresh_body, fresh_headers) == 202
        await wait_for_entity(state / "catalog.db", BLUEPRINT, "3")
    finally:
        assert await third.stop() == 0
    assert dead.state is DeliveryState.DEAD
    assert dead.last_error is not None
    assert dead.last_error.startswith("it stopped the event loop for 1 s (server.stall_timeout) when run alone")
    assert dead.last_error.endswith("then `ocean-hook deliveries retry 1`")
    assert not (state / "stalls.json").exists()


async def test_the_watchdog_leaves_with_serve_and_a_busy_serve_is_not_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, server={"stall_timeout": "1s"})
    server = await ServeProcess.start(config)
    try:
        [first] = _watchdogs_of(server.pid)
        assert os.getpgid(first) == first  # Ctrl-C at a terminal is for serve, which drains first
        await asyncio.sleep(2.5)  # idle past the stall timeout: the heartbeat keeps it alive
        body, headers = github_delivery(pr_payload(7))
        assert await _post(server.hook_url, body, headers) == 202
        os.kill(first, signal.SIGKILL)  # someone kills the watchdog: serve starts another
        [second] = await wait_for(lambda: [p for p in _watchdogs_of(server.pid) if p != first], what="a new watchdog")
        await server.wait_for_log(f"the watchdog process {first} exited (code -9); starting another")
        assert os.getpgid(second) == second
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


def _stand_in(tmp_path: Path, lines: bytes, log_format: str = "json") -> subprocess.CompletedProcess[bytes]:
    """A process that starts a watchdog, tells it `lines` (one heartbeat first), then goes quiet."""
    return subprocess.run(
        [sys.executable, "-c",
         "import os, subprocess, sys, time\n"
         "w = subprocess.Popen([sys.executable, '-m', 'ocean_hook.watchdog', str(os.getpid()), '0.5', "
         f"{log_format!r}, {str(tmp_path / 'stalls.json')!r}], stdin=subprocess.PIPE)\n"
         f"w.stdin.write(b'.\\n' + {lines!r}); w.stdin.flush()\n"
         "time.sleep(30)\n"],
        capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=20,
    )


def test_the_watchdog_kills_what_goes_quiet_and_records_what_was_being_processed(tmp_path: Path) -> None:
    """The child alone, watching a stand-in that sends one heartbeat, then nothing."""
    quiet = _stand_in(tmp_path, b"+12 abc\n+13 def\n-13\n+14 ghi\n")
    assert quiet.returncode == -9
    assert '"level": "error"' in quiet.stderr.decode()
    assert "Deliveries being processed: 12 (delivery abc), 14 (delivery ghi); they stay in the journal" in (
        quiet.stderr.decode())
    assert read_stalls(tmp_path / "stalls.json") == {"12": Stall("abc"), "14": Stall("ghi")}

    alone = _stand_in(tmp_path, b"alone\n+14 ghi\n", "text")
    assert alone.returncode == -9
    assert "Delivery 14 (delivery ghi) was running alone: it is the cause" in alone.stderr.decode()
    assert read_stalls(tmp_path / "stalls.json") == {"12": Stall("abc"), "14": Stall("ghi", alone=True)}


def test_the_watchdog_leaves_alone_what_closes_its_pipe(tmp_path: Path) -> None:
    closing = subprocess.run(
        [sys.executable, "-c",
         "import os, subprocess, sys\n"
         "w = subprocess.Popen([sys.executable, '-m', 'ocean_hook.watchdog', str(os.getpid()), '0.5', 'text', "
         f"{str(tmp_path / 'stalls.json')!r}], stdin=subprocess.PIPE)\n"
         "w.stdin.close(); sys.exit(w.wait(timeout=10))\n"],
        capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=20,
    )
    assert closing.returncode == 0
    assert closing.stderr == b""
    assert not (tmp_path / "stalls.json").exists()


def test_an_unreadable_stalls_file_is_no_advice(tmp_path: Path) -> None:
    path = tmp_path / "stalls.json"
    for text in ("", "{", "[]", '{"deliveries": {"1": {"nope": 1}}}', '{"deliveries": [1]}'):
        path.write_text(text)
        assert read_stalls(path) == {}
    write_stalls(path, {"3": Stall("x", alone=True)})
    assert read_stalls(path) == {"3": Stall("x", alone=True)}
    write_stalls(path, {})
    assert not path.exists()


async def test_a_pool_told_to_finish_its_claims_leaves_none_in_progress_and_refuses_the_culprit(
        tmp_path: Path, monkeypatch) -> None:
    """The pool of the start-up run: one at a time, what it claimed run to the end (nothing
    recovers claims after it), the culprit dead-lettered unrun, and the watchdog told of each."""
    for name, value in hook_env().items():
        monkeypatch.setenv(name, value)
    config = load_config(write_config(tmp_path))
    runtime = Runtime.build(config)
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    told: list[str] = []

    @contextlib.contextmanager
    def watch(queue_id: str, delivery_id: str) -> Iterator[None]:
        told.append(f"+{queue_id}")
        yield
        told.append(f"-{queue_id}")

    # queue id 3's record names another delivery (a journal started anew reuses ids): 3 runs
    refuse = {"2": ("d-2", "it stopped the event loop"), "3": ("d-of-an-older-journal", "it stopped the event loop")}
    pool = WorkerPool(journal, {p.name: p for p in config.processors}, runtime.mapping, runtime.target,
                      runtime.fetcher, concurrency=1, prefetch=2, watch=watch, refuse=refuse,
                      door_calm=asyncio.Event(), give_way_seconds=0.3)  # each waits 0.3 s: the stop finds all 3
    try:
        for number in (1, 2, 3):
            body, headers = github_delivery(pr_payload(number))
            await journal.put(Delivery(delivery_id=f"d-{number}", method="POST", path="/webhooks/github",
                                       headers=list(headers.items()), body=body, received_at=time.time(),
                                       processors=["gh-pr"], order_key=str(number)))
        running = asyncio.create_task(pool.run())
        await wait_for(lambda: pool.outstanding == 3, what="three claimed at once")
        pool.stop(finish_claimed=True)
        await running
        assert await pool.drain(None) == 0
        states = {d.id: (d.state, d.last_error) for d in await journal.list()}
    finally:
        await journal.close()
        await runtime.close()
    assert states == {"1": (DeliveryState.DONE, None), "2": (DeliveryState.DEAD, "it stopped the event loop"),
                      "3": (DeliveryState.DONE, None)}
    assert told == ["+1", "-1", "+2", "-2", "+3", "-3"]
    assert refuse == {}  # refused once: `deliveries retry` runs it


async def test_a_culprit_whose_id_holds_a_line_break_is_refused_at_the_next_start(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """The record keeps the id on one line; the worker compared it with the id as sent, so a
    culprit whose id (from a payload, say) held a line break was run alone, stalled and killed at
    every start, never dead-lettered (found by probing). The record here is a real watchdog's."""
    for name, value in hook_env().items():
        monkeypatch.setenv(name, value)
    culprit = "stall\n-1 caf\u00e9"
    stalled = subprocess.run(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\nfrom ocean_hook.watchdog import Watchdog\n"
         "w = Watchdog(1.0, 'text', Path(sys.argv[1]))\nw.start()\nw._send(b'.\\n')\nw.alone(True)\n"
         "with w.working_on('1', sys.argv[2]):\n    time.sleep(30)\n",
         str(tmp_path / "stalls.json"), culprit],
        capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=20,
    )
    assert stalled.returncode == -9, stalled.stderr
    [(queue_id, stall)] = read_stalls(tmp_path / "stalls.json").items()
    assert (queue_id, stall.alone) == ("1", True)
    config = load_config(write_config(tmp_path))
    runtime = Runtime.build(config)
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    pool = WorkerPool(journal, {p.name: p for p in config.processors}, runtime.mapping, runtime.target,
                      runtime.fetcher, concurrency=1, refuse={queue_id: (stall.delivery_id, "it stopped the loop")})
    try:
        body, headers = github_delivery(pr_payload(1))
        await journal.put(Delivery(delivery_id=culprit, method="POST", path="/webhooks/github",
                                   headers=list(headers.items()), body=body, received_at=time.time(),
                                   processors=["gh-pr"], order_key="1"))
        running = asyncio.create_task(pool.run())
        await wait_for(lambda: pool.refuse == {} and pool.outstanding == 0, what="the culprit settled")
        pool.stop()
        await running
        [settled] = await journal.list()
    finally:
        await journal.close()
        await runtime.close()
    assert (settled.state, settled.last_error) == (DeliveryState.DEAD, "it stopped the loop")


def test_test_mapping_stopped_by_a_jq_program_that_never_ends_says_so(tmp_path: Path) -> None:
    """It hung until the CI job's own timeout, hours later, with no word (Ctrl-C cannot reach
    it either: jq holds the GIL)."""
    (tmp_path / "m.yml").write_text(LOOPING)
    (tmp_path / "items.json").write_text(json.dumps([{"number": 1, "title": "fine"}, {"number": 2, "title": "loop"}]))
    command = [sys.executable, "-m", "ocean_hook", "test-mapping", "-m", str(tmp_path / "m.yml"),
               "-d", str(tmp_path / "items.json"), "--stall-timeout", "1"]
    started = time.monotonic()
    stuck = subprocess.run(command, capture_output=True, timeout=30)
    assert stuck.returncode == -9 and time.monotonic() - started < 20
    assert "ocean-hook test-mapping (pid " in stuck.stderr.decode()
    assert ("has not run for 1 s (--stall-timeout): a jq program that never ends on one of items 0 to 1 of the data "
            "(counted from 0); killing it.") in stuck.stderr.decode()  # as many as there are (found by probing)
    (tmp_path / "items.json").write_text(json.dumps([{"number": 1, "title": "fine"}]))
    fine = subprocess.run(command, capture_output=True, timeout=30)
    assert fine.returncode == 0, fine.stderr.decode()
    assert "1 to create" in fine.stdout.decode()


def test_test_mapping_waiting_for_slow_input_is_not_a_stall(tmp_path: Path) -> None:
    """It was: the watchdog heard only between batches, so `gh api --paginate | test-mapping -d -`
    was killed while it waited for the next page (found by probing)."""
    (tmp_path / "m.yml").write_text(LOOPING)
    command = [sys.executable, "-m", "ocean_hook", "test-mapping", "-m", str(tmp_path / "m.yml"), "-d", "-",
               "--stall-timeout", "1"]
    slow = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert slow.stdin is not None
    slow.stdin.write(b'{"number": 1, "title": "fine"}\n')
    slow.stdin.flush()
    time.sleep(3)  # three stall timeouts with nothing to read
    slow.stdin.write(b'{"number": 2, "title": "fine too"}\n')
    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 0, err.decode()
    assert "2 to create" in out.decode()


def test_replay_stopped_by_a_jq_program_that_never_ends_says_so(tmp_path: Path) -> None:
    """As test-mapping: it hung with no word, Ctrl-C unheard."""
    config = write_config(tmp_path, mapping=LOOPING)
    body, headers = github_delivery(pr_payload(2, title="loop"))
    (tmp_path / "capture.json").write_text(json.dumps(
        {"method": "POST", "path": HOOK_PATH, "headers": list(headers.items()), "body": body.decode()}))
    command = [sys.executable, "-m", "ocean_hook", "replay", str(tmp_path / "capture.json"), "--config", str(config),
               "--dry-run", "--stall-timeout", "1"]
    stuck = subprocess.run(command, capture_output=True, timeout=30, env={**os.environ, **hook_env()})
    assert stuck.returncode == -9
    assert "ocean-hook replay (pid " in stuck.stderr.decode()
    assert "has not run for 1 s (--stall-timeout): a jq program that never ends" in stuck.stderr.decode()
