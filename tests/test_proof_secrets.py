"""Proof: known secrets and tokens never come out of ocean-hook.

The whole path runs with secrets whose values we know: `serve` as a child process (with
`--capture`, `--log-format json` and debug logging, its stderr kept), deliveries authenticated
by a webhook secret, a bearer token and a GitLab token, a fetch that sends `Authorization:
Bearer <token>` to a local API (which echoes that header back in an error, as careless APIs do),
a Port target with its client secret, error answers, `/metrics`, `deliveries list/show`,
`catalog export` and `replay` of the captures. None of the secrets may appear in any of it.

The mapping also tries to read the environment (`env.X`, `$ENV.X`): by default it gets {} / null,
and only `jq: {allow_env: true}` lets the value through (checked, so the guard is what keeps it out).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from port_server import FakePort
from proof_helpers import amend_config
from serve_helpers import (
    SECRET,
    SECRET_ENV,
    ServeProcess,
    github_headers,
    github_processor,
    hook_env,
    journal_deliveries,
    port_env,
    port_target,
    pr_payload,
    wait_for,
    write_config,
)
from typer.testing import CliRunner
from webhook_samples import catalog

from ocean_hook.cli import app
from ocean_hook.config import load_config
from ocean_hook.queue.base import DeliveryState

BEARER_ENV, BEARER = "OH_PROOF_BEARER_TOKEN", "bearer-token-4f0e9a7c21d3b856"
GITLAB_ENV, GITLAB = "OH_PROOF_GITLAB_TOKEN", "gitlab-token-9d2c6e1a7b3f4058"
FETCH_ENV, FETCH_TOKEN = "OH_PROOF_FETCH_TOKEN", "fetch-api-token-3a8e5c0f6d1b7294"
ENV_NAME, ENV_SECRET = "OH_PROOF_ENV_SECRET", "env-only-secret-7b1d4f9e2c5a0863"
PORT_SECRET = "port-client-secret-5e2a9c7d0f8b1436"
SECRETS = {"webhook secret": SECRET, "bearer token": BEARER, "gitlab token": GITLAB,
           "fetch token": FETCH_TOKEN, "environment secret": ENV_SECRET, "Port client secret": PORT_SECRET}
ENV = {SECRET_ENV: SECRET, BEARER_ENV: BEARER, GITLAB_ENV: GITLAB, FETCH_ENV: FETCH_TOKEN, ENV_NAME: ENV_SECRET}

#: the test mapping, plus four properties that try to read the environment
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
          blueprint: '"pullRequest"'
          properties:
            value: .value
            env_var: env.{ENV_NAME}
            env_all: env
            dollar_env_var: $ENV.{ENV_NAME}
            dollar_env_all: $ENV
"""
FAST_RETRY = {"max_retries": 2, "initial_retry_delay_seconds": 0.1}


def processors(api: str) -> list[dict[str, Any]]:
    host = api.removeprefix("http://")
    common = {"kinds": ["pull-request"], "items": ".pull_request", "retry": FAST_RETRY}
    return [
        github_processor(retry=FAST_RETRY),
        {"name": "bearer", "path": "/webhooks/bearer", "auth": {"scheme": "bearer", "secret": f"${{{BEARER_ENV}}}"},
         **common},
        {"name": "gitlab", "preset": "gitlab", "auth": {"secret": f"${{{GITLAB_ENV}}}"}, **common},
        {"name": "fetch", "path": "/webhooks/fetch", "auth": {"scheme": "github", "secret": f"${{{SECRET_ENV}}}"},
         **common, "fetch": {"url": ".pull_request.url", "allowed_hosts": [host], "items": ".",
                             "headers": {"Authorization": f"Bearer ${{{FETCH_ENV}}}"}}},
    ]


def config_with(directory: Path, api: str, **extra: Any) -> Path:
    path = write_config(directory, processors=processors(api), mapping=MAPPING)
    return amend_config(path, fetch={"allow_loopback": True, "attempts": 1}, **extra)


@dataclass
class Api:
    """A third-party API: full resources for the right token; errors that echo the token back."""

    url: str = ""
    seen: list[str | None] = field(default_factory=list)

    async def item(self, request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization")
        self.seen.append(sent)
        number = int(request.match_info["n"])
        if request.match_info["kind"] == "echo" or sent != f"Bearer {FETCH_TOKEN}":
            return web.json_response({"error": "bad request", "you sent": sent}, status=400)
        return web.json_response({"number": number, "title": f"fetched {number}", "value": 100 + number})


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    fake = Api()
    application = web.Application()
    application.router.add_get("/{kind}/{n}", fake.item)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = "http://{}:{}".format(*runner.addresses[0][:2])
    yield fake
    await runner.cleanup()


@dataclass
class Seen:
    """Everything ocean-hook said, by where it said it."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str | bytes) -> str:
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        self.texts[where] = self.texts.get(where, "") + text + "\n"
        return text

    def leaks(self) -> list[tuple[str, str]]:
        return [(name, where) for name, secret in SECRETS.items() for where, text in self.texts.items()
                if secret in text]


async def cli(seen: Seen, where: str, *args: str, exit_code: int = 0) -> str:
    """The real command in a thread (it runs its own event loop); its output, kept in `seen`."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    return seen.add(where, result.output)


async def post(seen: Seen, http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with http.post(url, data=body, headers=headers) as response:
        seen.add("HTTP answers", f"{response.status} {dict(response.headers)} {await response.text()}")
        return response.status


def signed(payload: Any, **options: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, github_headers(body, **options)


def plain(payload: Any, **headers: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}


async def test_no_secret_in_logs_captures_metrics_answers_journal_views_catalog_or_replay(
    tmp_path: Path, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with(tmp_path / "live", api.url)
    captures = tmp_path / "captures"
    seen = Seen()
    proc = await ServeProcess.start(config, "--capture", str(captures), "--log-format", "json", "-vv",
                                    env=hook_env(ENV))
    try:
        async with aiohttp.ClientSession() as http:
            hook = proc.url + "/webhooks"
            accepted = [
                ("/github", signed(pr_payload(1, value=1))),
                ("/bearer", plain(pr_payload(2, value=2), Authorization=f"Bearer {BEARER}")),
                ("/gitlab", plain(pr_payload(3, value=3), **{"X-Gitlab-Token": GITLAB, "X-Gitlab-Event": "MR Hook",
                                                             "Idempotency-Key": str(uuid.uuid4())})),
                ("/fetch", signed({"action": "opened", "pull_request": {"number": 4, "url": f"{api.url}/items/4"}})),
                ("/fetch", signed({"action": "opened", "pull_request": {"number": 5, "url": f"{api.url}/echo/5"}})),
            ]
            for path, (body, headers) in accepted:
                assert await post(seen, http, hook + path, body, headers) == 202
            # near misses: the sender's value contains the real secret, the answer must not echo it
            rejected = [
                ("/github", signed(pr_payload(6), secret=SECRET + "x")),
                ("/github", signed(pr_payload(6), secret=None)),
                ("/bearer", plain(pr_payload(7), Authorization=f"Bearer {BEARER}x")),
                ("/bearer", plain(pr_payload(7), Authorization=f"Basic {BEARER}")),
                ("/gitlab", plain(pr_payload(8), **{"X-Gitlab-Token": GITLAB + "x", "X-Gitlab-Event": "MR Hook"})),
            ]
            for path, (body, headers) in rejected:
                assert await post(seen, http, hook + path, body, headers) == 401
            body, headers = signed(pr_payload(9))
            assert await post(seen, http, hook + "/github", body, {**headers, "Content-Type": "text/plain"}) == 415
            assert await post(seen, http, proc.url + "/webhooks/unknown", body, headers) == 404

            async def settled() -> bool:
                deliveries = await journal_deliveries(tmp_path / "live" / "state")
                return len(deliveries) == 5 and all(d.state in (DeliveryState.DONE, DeliveryState.DEAD)
                                                    for d in deliveries)

            await wait_for(settled, timeout=15, what="five deliveries done or dead")
            for path in ("/metrics", "/healthz", "/readyz"):
                async with http.get(proc.url + path) as response:
                    seen.add(path, await response.text())
    finally:
        assert await proc.stop() == 0
    seen.add("serve logs (stderr)", proc.logs())
    # the journal on disk keeps the raw request, but not its secret-bearing headers
    for file in sorted((tmp_path / "live" / "state").glob("journal.db*")):
        seen.add("journal files", file.read_bytes().decode("latin-1"))
    for file in sorted(captures.iterdir()):
        seen.add("capture files", file.read_text())

    assert api.seen == [f"Bearer {FETCH_TOKEN}"] * 2  # the token did go where it belongs, twice
    deliveries = await journal_deliveries(tmp_path / "live" / "state")
    await cli(seen, "deliveries list", "deliveries", "list", "--config", str(config))
    for delivery in deliveries:
        await cli(seen, "deliveries show", "deliveries", "show", delivery.delivery_id, "--config", str(config))
    exported = json.loads(await cli(seen, "catalog export", "catalog", "export", "--config", str(config)))

    # replay the captures elsewhere, re-checking signatures (the captured tokens are redacted)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    replay_config = config_with(tmp_path / "replayed", api.url)
    replayed = await cli(seen, "replay", "replay", str(captures), "--config", str(replay_config), "--verify",
                         "--format", "json", exit_code=1)

    assert seen.leaks() == []

    # ... and what was checked is the real thing, not empty output
    logs = seen.texts["serve logs (stderr)"]
    assert all(json.loads(line) for line in logs.splitlines() if line.strip().startswith("{"))
    assert "rejected 401" in logs and "debug" in logs and "dead-lettered" in logs
    by_number = {d.processors[0] + ":" + str(json.loads(d.body)["pull_request"]["number"]): d for d in deliveries}
    assert {k: str(d.state) for k, d in by_number.items()} == {
        "gh-pr:1": "done", "bearer:2": "done", "gitlab:3": "done", "fetch:4": "done", "fetch:5": "dead"}
    assert "HTTP 400 from" in (by_number["fetch:5"].last_error or "")
    assert "***" in (by_number["fetch:5"].last_error or "")  # the echoed token, scrubbed
    assert len(list(captures.iterdir())) == 5 and "[redacted]" in seen.texts["capture files"]
    assert sorted(e["identifier"] for e in exported) == ["1", "2", "3", "4"]
    assert next(e for e in exported if e["identifier"] == "4")["title"] == "fetched 4"
    assert "signature mismatch" in seen.texts["HTTP answers"] and "token mismatch" in seen.texts["HTTP answers"]
    assert "ocean_hook_deliveries_received_total" in seen.texts["/metrics"]
    outcomes = {o["delivery_id"]: o for o in json.loads(replayed)}
    assert {o["status"] for o in outcomes.values()} == {"processed", "failed"}

    # the mapping asked for the environment and got nothing
    for entity in exported:
        properties = entity["properties"]
        assert (properties.get("env_var"), properties.get("env_all")) == (None, {})
        assert (properties.get("dollar_env_var"), properties.get("dollar_env_all")) == (None, {})


def test_the_environment_reaches_the_catalog_only_when_the_config_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the guard: `jq: {allow_env: true}` lets `env.X` through, so it is the
    guard, not an accident of the test, that keeps the secret out above."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    body, headers = signed(pr_payload(1, value=1))
    capture = tmp_path / "capture.json"
    capture.write_text(json.dumps({"method": "POST", "path": "/webhooks/github", "body": body.decode(),
                                   "headers": [[k, v] for k, v in headers.items()]}))
    for allowed in (False, True):
        config = config_with(tmp_path / str(allowed), "http://127.0.0.1:9", jq={"allow_env": allowed})
        result = CliRunner().invoke(app, ["replay", str(capture), "--config", str(config), "--format", "json"])
        assert result.exit_code == 0, result.output
        [entity] = catalog(load_config(config)).values()
        got = entity["properties"]
        if allowed:
            assert (got["env_var"], got["dollar_env_var"]) == (ENV_SECRET, ENV_SECRET)
            assert got["env_all"][ENV_NAME] == ENV_SECRET
        else:
            blocked = (got["env_var"], got["env_all"], got["dollar_env_var"], got["dollar_env_all"])
            assert blocked == (None, {}, None, {})


async def test_port_client_secret_and_access_tokens_never_come_out(tmp_path: Path) -> None:
    """Against a Port API whose token service fails once, then (later) refuses the credentials:
    the client secret and every access token it issued stay out of the logs, the journal views,
    /readyz and /metrics."""
    seen = Seen()
    async with FakePort(client_secret=PORT_SECRET) as port, aiohttp.ClientSession() as http:
        config = write_config(tmp_path, processors=[github_processor(retry=FAST_RETRY)],
                              target=port_target(port.url))
        port.fail_next("/v1/auth/access_token", 500, body={"ok": False, "error": "internal", "message": "down"})
        proc = await ServeProcess.start(config, "--log-format", "json", "-vv",
                                        env=hook_env(port_env(client_secret=PORT_SECRET)))
        try:
            for number in (1, 2):
                body, headers = signed(pr_payload(number, value=number))
                assert await post(seen, http, proc.hook_url, body, headers) == 202

            async def settled() -> bool:
                deliveries = await journal_deliveries(tmp_path / "state")
                return len(deliveries) == 2 and all(d.state == DeliveryState.DONE for d in deliveries)

            await wait_for(settled, timeout=15, what="both deliveries applied")
            # then Port stops taking the token and the credentials: the next delivery is dead-lettered
            port.revoke_tokens()
            port.fail_next("/v1/auth/access_token", 401, times=10)
            body, headers = signed(pr_payload(3, value=3))
            assert await post(seen, http, proc.hook_url, body, headers) == 202

            async def dead() -> bool:
                return any(d.state == DeliveryState.DEAD for d in await journal_deliveries(tmp_path / "state"))

            await wait_for(dead, timeout=15, what="the third delivery dead-lettered")
            for path in ("/readyz", "/metrics"):
                async with http.get(proc.url + path) as response:
                    seen.add(path, await response.text())
        finally:
            assert await proc.stop() == 0
        seen.add("serve logs (stderr)", proc.logs())
        await cli(seen, "deliveries list", "deliveries", "list", "--config", str(config))
        for delivery in await journal_deliveries(tmp_path / "state"):
            await cli(seen, "deliveries show", "deliveries", "show", delivery.delivery_id, "--config", str(config))
        tokens = {r.headers["Authorization"].removeprefix("Bearer ") for r in port.requests
                  if r.headers.get("Authorization", "").startswith("Bearer ")}
        assert port.entity("pullRequest", "1") and port.entity("pullRequest", "2") and tokens
    assert seen.leaks() == []
    leaked_tokens = [where for where, text in seen.texts.items() for token in tokens if token in text]
    assert leaked_tokens == []
    assert "cannot obtain a Port access token" in seen.texts["serve logs (stderr)"]
    assert "cannot obtain a Port access token" in seen.texts["deliveries show"]  # the dead one's last error
