"""Where `serve` listens: told to start where it cannot work, it says so on one line and exits 1
(2 for a journal it may not use), never a traceback; where it can, the URL it prints is one a
client can use."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from serve_helpers import ServeProcess, github_processor, hook_env, journal_depth, write_config

from ocean_hook.check import check


def serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocean_hook", "serve", "--config", str(config), *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **hook_env(), "COLUMNS": "200"},
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line `serve` printed, having exited 1 without starting."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_named_and_the_journal_is_left_as_it_was(tmp_path: Path, taken_port: int) -> None:
    config = write_config(tmp_path)
    line = refused(serve(config, "--port", str(taken_port)))
    assert line == (f"error: cannot listen on 127.0.0.1:{taken_port}: the port is already in use "
                    "(another ocean-hook?); choose another --port")
    depth = asyncio.run(journal_depth(tmp_path / "state"))  # the journal opened, closed and is usable
    assert sum(depth.values()) == 0


def test_an_unknown_host_is_named(tmp_path: Path) -> None:
    line = refused(serve(write_config(tmp_path), "--host", "no-such-host.invalid", "--port", "0"))
    assert line.startswith("error: cannot listen on no-such-host.invalid:0: no such host or address")


def test_a_journal_and_a_catalog_in_one_file_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    """serve made the file a catalog, then refused it as a journal (found by probing)."""
    config = write_config(tmp_path, queue={"type": "sqlite", "path": "one.db"},
                          target={"type": "local", "path": "one.db"})
    result = serve(config, "--port", "0")
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2, f"error: {config}: the journal (queue.path) and the local catalog (target.path) are one file, "
           f"{tmp_path}/one.db: each needs its own")
    assert not (tmp_path / "one.db").exists()


def test_an_empty_host_is_a_usage_error(tmp_path: Path) -> None:
    """It listened on every interface and said `listening on http://:PORT` (found by probing)."""
    result = serve(write_config(tmp_path), "--host", " ", "--port", "0")
    assert (result.returncode, result.stderr) == (
        2, "error: --host is empty: give an address (0.0.0.0 or :: for every interface)\n")


def test_an_address_this_machine_does_not_have_is_named(tmp_path: Path) -> None:
    line = refused(serve(write_config(tmp_path), "--host", "192.0.2.1", "--port", "0"))  # TEST-NET-1
    assert line == "error: cannot listen on 192.0.2.1:0: this machine has no such address; check --host"


def test_a_capture_path_that_is_a_file_is_refused_before_listening(tmp_path: Path) -> None:
    afile = tmp_path / "captures"
    afile.write_text("not a directory")
    line = refused(serve(write_config(tmp_path), "--capture", str(afile), "--port", "0"))
    assert line == f"error: --capture {afile}: not a directory"
    assert afile.read_text() == "not a directory"


def test_a_capture_directory_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    inside_a_file = tmp_path / "file" / "captures"
    line = refused(serve(write_config(tmp_path), "--capture", str(inside_a_file), "--port", "0"))
    assert line == f"error: --capture {inside_a_file}: cannot create the directory: Not a directory"


def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    result = serve(write_config(tmp_path), "--port", "99999")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'--port'" in result.stderr and "65535" in result.stderr


async def test_an_ipv6_address_is_printed_as_a_url_that_works(tmp_path: Path) -> None:
    server = await ServeProcess.start(write_config(tmp_path), "--host", "::1")
    try:
        assert server.url.startswith("http://[::1]:")
        async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as response:
            assert response.status == 200
    finally:
        await server.stop()


async def test_a_second_serve_on_the_same_journal_is_refused_and_the_first_keeps_serving(tmp_path: Path) -> None:
    """Its crash recovery would take the first one's claims for a dead process's and run them again."""
    config = write_config(tmp_path)
    first = await ServeProcess.start(config)
    try:
        second = await asyncio.to_thread(serve, config, "--port", "0")
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        assert second.stderr.strip() == (f"error: journal {tmp_path / 'state' / 'journal.db'}: another process "
                                         f"(pid {first.pid}) is serving from it; one serve per journal (several "
                                         "instances share the Redis queue)")
        async with aiohttp.ClientSession() as http, http.get(first.url + "/readyz") as response:
            assert response.status == 200
    finally:
        assert await first.stop() == 0
    again = await ServeProcess.start(config)  # the lock went with the process
    assert await again.stop() == 0


def test_what_the_command_line_replaces_is_not_read_from_the_config(tmp_path: Path) -> None:
    """`serve --queue X` still wanted the config's `url: ${REDIS_URL}` set, and said it twice
    (found by probing); `--target port` blamed the config's `target:` line for Port's variables."""
    unset = "OCEAN_HOOK_TEST_NEVER_SET"
    config = write_config(tmp_path, queue={"type": "redis", "url": f"${{{unset}}}"})
    line = refused(serve(config, "--queue", "sqlite", "--host", "192.0.2.1", "--port", "0"))
    assert line == "error: cannot listen on 192.0.2.1:0: this machine has no such address; check --host"
    result = serve(config, "--port", "0")
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith(f"(key queue.url): environment variable {unset} is not set")

    # --queue URL replaces the url alone: the config's stream is still read, its variable needed
    kept = write_config(tmp_path / "kept",
                        queue={"type": "redis", "url": f"${{{unset}}}", "stream": f"oh-${{{unset}}}"})
    result = serve(kept, "--queue", "redis://127.0.0.1:1/0", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith(f"(key queue.stream): environment variable {unset} is not set"), \
        result.stderr

    result = serve(write_config(tmp_path), "--target", "port", "--port", "0")
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2, "error: --target port: environment variables PORT_CLIENT_ID (the Port client id) and PORT_CLIENT_SECRET "
           "(the Port client secret) are not set")


def test_verbose_and_quiet_together_are_refused(tmp_path: Path) -> None:
    """`-q -v` was taken as quiet without a word (found by probing)."""
    result = serve(write_config(tmp_path), "-v", "-q", "--port", "0")
    assert (result.returncode, result.stderr) == (2, "error: give --verbose or --quiet, not both\n")


def test_a_kind_the_mapping_lacks_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """`check` refused it; `serve` started, answered 202 and dead-lettered every delivery
    (found by probing). `replay` says the same."""
    config = write_config(tmp_path, processors=[github_processor(kinds=["pull-requests"])])
    result = serve(config, "--port", "0")
    said = (f"error: {config}:8 (key processors[0].kinds): processor 'gh-pr' feeds kind 'pull-requests', which "
            "the mapping mapping.yml does not have (kinds: pull-request)")
    assert (result.returncode, result.stderr.splitlines()[-1]) == (2, said), result.stderr
    assert not (tmp_path / "state").exists()
    (tmp_path / "p.json").write_text("{}")
    replayed = subprocess.run([sys.executable, "-m", "ocean_hook", "replay", "--config", str(config), "--path",
                               "/webhooks/github", str(tmp_path / "p.json")],
                              capture_output=True, text=True, timeout=30, env={**os.environ, **hook_env()})
    assert (replayed.returncode, replayed.stderr.splitlines()[-1]) == (2, said), replayed.stderr


@pytest.mark.parametrize("key", ["target", "queue"])
def test_a_file_named_as_the_state_directory_is_refused_before_anything_is_made(tmp_path: Path, key: str) -> None:
    """`target: {path: state}` passed check; serve made the catalog file `state`, then failed
    on '[Errno 17] File exists' for the journal's folder, and the next check refused the file
    it had left (found by probing)."""
    spec = {"type": "local", "path": "state"} if key == "target" else {"type": "sqlite", "path": "state"}
    config = write_config(tmp_path, **{key: spec})
    said = f"{key}.path is the state directory, {tmp_path / 'state'}: name a file (in it, or elsewhere)"
    result = serve(config, "--port", "0")
    assert (result.returncode, result.stderr.splitlines()[-1]) == (2, f"error: {config}: {said}"), result.stderr
    assert not (tmp_path / "state").exists()
    assert f"{config}: {said}" in check(config, env=hook_env()).problems
