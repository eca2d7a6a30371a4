"""Shared helpers for tests (and benchmarks) that run the real `ocean-hook serve` listener.

    config = write_config(tmp_path, target=..., server={"max_body_bytes": 1024})
    async with serve_in_process(config) as server:          # same process, asyncio task
        body, headers = github_delivery(pr_payload(7, value=1))
        async with aiohttp.ClientSession() as http:
            await http.post(server.hook_url, data=body, headers=headers)
        await wait_for_entity(server.catalog_path, "pullRequest", "7")

    proc = await ServeProcess.start(config)                 # `python -m ocean_hook serve`
    ...; proc.terminate(); assert await proc.wait() == 0

Deliveries are GitHub pull_request webhooks signed with HMAC-SHA256 (`X-Hub-Signature-256`)
under `SECRET`, which the config reads from the environment variable `SECRET_ENV`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml
from port_server import FakePort
from prometheus_client.parser import text_string_to_metric_families

from ocean_hook.config import Config, load_config
from ocean_hook.queue.base import Delivery, DeliveryState
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.service import ServeOptions, serve
from ocean_hook.targets.local import LocalCatalog

SECRET_ENV = "OH_TEST_WEBHOOK_SECRET"
SECRET = "serve-test-secret-5f1e9c"
HOOK_PATH = "/webhooks/github"
BLUEPRINT = "pullRequest"
PORT_ID_ENV = "OH_TEST_PORT_CLIENT_ID"
PORT_SECRET_ENV = "OH_TEST_PORT_CLIENT_SECRET"

#: one resource: a pull request, keyed by its number, carrying `value` so updates are visible
MAPPING = """\
resources:
  - kind: pull-request
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .number | tostring
          title: .title
          blueprint: '"pullRequest"'
          properties:
            value: .value
            state: .state
"""


# ----------------------------------------------------------------------------- config


def github_processor(**overrides: Any) -> dict[str, Any]:
    """The processor under test: GitHub pull_request events, one order key per PR number."""
    return {
        "name": "gh-pr",
        "preset": "github",
        "events": ["pull_request"],
        "kinds": ["pull-request"],
        "auth": {"secret": f"${{{SECRET_ENV}}}"},
        "items": ".pull_request",
        "validate": [".pull_request.number != null"],
        "delete_when": '.action == "deleted"',
        "order_key": ".pull_request.number",
        **overrides,
    }


def write_config(
    directory: Path,
    *,
    processors: list[dict[str, Any]] | None = None,
    target: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    queue: Mapping[str, Any] | None = None,
    mapping: str = MAPPING,
    state_dir: str = "state",
) -> Path:
    """`ocean-hook.yaml` + `mapping.yml` in `directory`; state (journal, catalog) in `state_dir`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mapping.yml").write_text(mapping)
    doc: dict[str, Any] = {
        "mapping": "mapping.yml",
        "state_dir": state_dir,
        "processors": processors or [github_processor()],
    }
    for key, value in (("target", target), ("server", server), ("queue", queue)):
        if value is not None:
            doc[key] = dict(value)
    path = directory / "ocean-hook.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def hook_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a config written by `write_config` needs (the webhook secret)."""
    return {SECRET_ENV: SECRET, **(extra or {})}


def port_target(base_url: str, **options: Any) -> dict[str, Any]:
    """A `target:` for the Port API at `base_url` (a tests/port_server.FakePort), no inner retries."""
    return {"type": "port", "base_url": base_url, "client_id_env": PORT_ID_ENV,
            "client_secret_env": PORT_SECRET_ENV, "retry_attempts": 1, **options}


def port_env(client_id: str = "fake-client-id", client_secret: str = "fake-client-secret") -> dict[str, str]:
    """The credentials `port_target` reads, FakePort's defaults."""
    return {PORT_ID_ENV: client_id, PORT_SECRET_ENV: client_secret}


@dataclass
class SlowPort(FakePort):
    """A FakePort that holds each answer back `answer_delay()` seconds after recording the
    request: once `calls()` shows a write, the worker that sent it is certainly still waiting."""

    answer_delay: Callable[[], float] = lambda: 0.0

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)
        await asyncio.sleep(self.answer_delay())
        return response


# ----------------------------------------------------------------------------- deliveries


def pr_payload(number: int, *, value: int = 0, action: str = "opened", title: str | None = None) -> dict[str, Any]:
    return {
        "action": action,
        "number": number,
        "pull_request": {"number": number, "title": title or f"PR {number}", "value": value, "state": "open"},
    }


def github_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(
    body: bytes,
    *,
    event: str = "pull_request",
    delivery: str | None = None,
    secret: str | None = SECRET,
    content_type: str = "application/json",
    hook_id: str = "4242",
) -> dict[str, str]:
    """Headers GitHub sends; `secret=None` leaves the signature out."""
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": hook_id,
        "User-Agent": "GitHub-Hookshot/test",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = github_signature(body, secret)
    return headers


def github_delivery(
    payload: Any, *, form: bool = False, **header_options: Any
) -> tuple[bytes, dict[str, str]]:
    """A signed delivery: JSON, or GitHub's form encoding (`payload=<json>`) with `form=True`."""
    text = json.dumps(payload)
    if form:
        body = urlencode({"payload": text}).encode()
        header_options.setdefault("content_type", "application/x-www-form-urlencoded")
    else:
        body = text.encode()
    return body, github_headers(body, **header_options)


def delivery_id_of(headers: Mapping[str, str]) -> str:
    """The delivery id the github preset derives: `X-GitHub-Hook-ID:X-GitHub-Delivery`."""
    return f"{headers['X-GitHub-Hook-ID']}:{headers['X-GitHub-Delivery']}"


# ----------------------------------------------------------------------------- in-process server


@dataclass
class InProcessServer:
    url: str
    config: Config
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    @property
    def hook_url(self) -> str:
        return self.url + HOOK_PATH

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def catalog_path(self) -> Path:
        return self.config.state_dir / "catalog.db"

    @property
    def journal_path(self) -> Path:
        return self.config.state_dir / "journal.db"

    async def stop(self, timeout: float = 10.0) -> None:
        """What SIGTERM does: 503 to new deliveries, in-flight work finishes, `serve` returns."""
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


@contextlib.asynccontextmanager
async def serve_in_process(
    config_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    workers: int | None = None,
    capture_dir: Path | None = None,
    target: str | None = None,
    timeout: float = 10.0,
) -> AsyncIterator[InProcessServer]:
    """The real listener and workers as a task of the running loop, on a free 127.0.0.1 port.

    `env` is what the config's `${VAR}`s read (default: `hook_env()` over os.environ); a Port
    target reads its credentials from os.environ (use monkeypatch.setenv with `port_env()`).
    """
    config = load_config(config_path, env={**os.environ, **(env or hook_env())})
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    options = ServeOptions(host="127.0.0.1", port=0, workers=workers, capture_dir=capture_dir, target=target)
    task = asyncio.create_task(serve(config, options, on_ready=ready.set_result, stop=stop))
    await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
        raise AssertionError("serve returned before it was ready")
    if not ready.done():
        task.cancel()
        raise AssertionError(f"serve was not ready within {timeout}s")
    server = InProcessServer(ready.result(), config, task, stop)
    try:
        yield server
    finally:
        if not task.done():
            await server.stop(timeout)
        else:
            task.result()


# ----------------------------------------------------------------------------- subprocess server

_LISTENING = re.compile(r"ocean-hook listening on (http://[^\s\"]+)")  # a text line, or inside a JSON one


async def start_listening(
    command: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path, timeout: float = 20.0, what: str = "serve"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `command` and wait for its "ocean-hook listening on URL" line: the process and the URL.

    stderr goes to a file rather than a pipe, so a chatty server never blocks on a full pipe.
    """
    with log_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env=dict(env), cwd=cwd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        await asyncio.sleep(0.02)
    process.kill()
    raise AssertionError(f"{what} did not say it was listening within {timeout}s:\n{log_path.read_text()}")


@dataclass
class ServeProcess:
    """`python -m ocean_hook serve` in a child process; its stderr goes to `log_path`."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    config_path: Path

    @classmethod
    async def start(
        cls,
        config_path: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 20.0,
        log_path: Path | None = None,
    ) -> ServeProcess:
        """Start it and wait for its "ocean-hook listening on URL" line.

        stderr goes to a file rather than a pipe, so a chatty server never blocks on a full pipe.
        """
        log_path = log_path or config_path.parent / f"serve-{uuid.uuid4().hex[:8]}.log"
        command = [sys.executable, "-m", "ocean_hook", "serve", "--config", str(config_path), "--port", "0", *args]
        process, url = await start_listening(command, env={**os.environ, **(env or hook_env())},
                                             cwd=config_path.parent, log_path=log_path, timeout=timeout)
        return cls(process, url, log_path, config_path)

    @property
    def hook_url(self) -> str:
        return self.url + HOOK_PATH

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.logs()}")
            await asyncio.sleep(0.02)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()

    async def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"serve did not exit within {timeout}s:\n{self.logs()}")
            await asyncio.sleep(0.02)
        return self.process.returncode

    async def stop(self) -> int:
        """SIGTERM, then the exit code (killing it if it hangs)."""
        if self.process.poll() is None:
            self.terminate()
        return await self.wait()


# ----------------------------------------------------------------------------- state


async def wait_for(
    check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


async def read_entity(catalog_path: Path, blueprint: str, identifier: str) -> dict[str, Any] | None:
    """One entity of a local catalog, read through a connection of its own (as another process)."""
    if not catalog_path.exists():
        return None
    catalog = LocalCatalog(catalog_path)
    try:
        return (await catalog.get_entities([(blueprint, identifier)])).get((blueprint, identifier))
    finally:
        await catalog.close()


async def wait_for_entity(
    catalog_path: Path,
    blueprint: str,
    identifier: str,
    *,
    where: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Wait until the local catalog holds the entity (and `where(entity)` holds); the entity."""

    async def check() -> dict[str, Any] | None:
        entity = await read_entity(catalog_path, blueprint, identifier)
        return entity if entity is not None and (where is None or where(entity)) else None

    return await wait_for(check, timeout=timeout, what=f"entity {blueprint}/{identifier} in {catalog_path}")


@contextlib.asynccontextmanager
async def open_journal(state_dir: Path) -> AsyncIterator[SqliteJournal]:
    """The SQLite journal of a state directory, opened as another process would."""
    journal = await SqliteJournal.open(state_dir / "journal.db")
    try:
        yield journal
    finally:
        await journal.close()


async def journal_deliveries(state_dir: Path, state: DeliveryState | None = None) -> list[Delivery]:
    """Every delivery in the journal (oldest first); none when the journal does not exist yet."""
    if not (state_dir / "journal.db").exists():
        return []
    async with open_journal(state_dir) as journal:
        return list(reversed(await journal.list(state, limit=1_000_000)))


async def journal_depth(state_dir: Path) -> dict[str, int]:
    async with open_journal(state_dir) as journal:
        return await journal.depth()


async def wait_until_settled(state_dir: Path, count: int, *, timeout: float = 10.0) -> list[Delivery]:
    """Wait until `count` deliveries are journaled and none is pending, in progress or failed."""

    async def check() -> list[Delivery] | None:
        deliveries = await journal_deliveries(state_dir)
        unfinished = [d for d in deliveries if d.state not in (DeliveryState.DONE, DeliveryState.DEAD)]
        return deliveries if len(deliveries) == count and not unfinished else None

    return await wait_for(check, timeout=timeout, what=f"{count} settled deliveries")


# ----------------------------------------------------------------------------- metrics


async def settled_metrics(http: aiohttp.ClientSession, url: str, count: int, *, timeout: float = 10.0) -> str:
    """/metrics once `count` outcomes (applied or dead-lettered) are counted: a worker counts
    one when its journal write is durable, a moment after other connections can read it."""

    async def check() -> str | None:
        async with http.get(url + "/metrics") as response:
            text = await response.text()
        outcomes = ("processed", "dead_lettered")
        counted = sum(metric_value(text, f"ocean_hook_deliveries_{name}_total") for name in outcomes)
        return text if counted >= count else None

    return await wait_for(check, timeout=timeout, what=f"{count} outcomes counted in /metrics")


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample of Prometheus text (0.0 when absent). `name` is the sample name, e.g.
    `ocean_hook_deliveries_received_total` or `ocean_hook_end_to_end_seconds_count`."""
    wanted = dict(labels or {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    return 0.0
