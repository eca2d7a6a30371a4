"""Proof: a payload cannot make ocean-hook fetch from a host the config did not list.

Two local servers: the API the config allows (`allowed_hosts: [127.0.0.1:<api port>]`) and
another one, standing for anything the sender would like us to reach (a metadata endpoint, an
internal service). Payloads point the fetch at the other one every way we know: another port,
`localhost`, legacy IPv4 spellings, IPv6, `user@host` forms, backslashes, percent-encoding,
other schemes, and redirects from the allowed API. Through the real pipeline (`replay`, then
`serve`), each delivery fails with a clear reason, is not retried, and the other server never
sees a single connection; the allowed API answers only the redirects it was asked for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from proof_helpers import amend_config
from serve_helpers import (
    SECRET,
    SECRET_ENV,
    ServeProcess,
    github_headers,
    github_processor,
    journal_deliveries,
    settled_metrics,
    wait_for,
    write_config,
)
from typer.testing import CliRunner, Result
from webhook_samples import catalog

from ocean_hook.cli import app
from ocean_hook.config import load_config
from ocean_hook.queue.base import DeliveryState

NOT_LISTED = "is not in allowed_hosts"
USERINFO = "URLs with userinfo (user@host) are not allowed"
UNSAFE = "it contains whitespace, a backslash or a control character"
NOT_HTTP = "only absolute http:// and https:// URLs can be fetched"
REDIRECT = "redirect from 'http://127.0.0.1:"

#: (url, *words the refusal must contain); {api}/{evil} are host:port, {ap}/{ep} the ports
REFUSED = {
    "other port on the allowed address": ("http://{evil}/items/1", NOT_LISTED),
    "localhost, other port": ("http://localhost:{ep}/items/1", NOT_LISTED),
    "localhost, the allowed port": ("http://localhost:{ap}/items/1", NOT_LISTED),
    "sub.localhost": ("http://api.localhost:{ep}/items/1", NOT_LISTED),
    "127.1": ("http://127.1:{ep}/items/1", NOT_LISTED),
    "hex IPv4": ("http://0x7f000001:{ep}/items/1", NOT_LISTED),
    "decimal IPv4": ("http://2130706433:{ep}/items/1", NOT_LISTED),
    "octal IPv4": ("http://017700000001:{ep}/items/1", NOT_LISTED),
    "0.0.0.0": ("http://0.0.0.0:{ep}/items/1", NOT_LISTED),
    "IPv4-mapped IPv6": ("http://[::ffff:127.0.0.1]:{ep}/items/1", NOT_LISTED),
    "IPv6 loopback, the allowed port": ("http://[::1]:{ap}/items/1", NOT_LISTED),
    "trailing dot": ("http://127.0.0.1.:{ep}/items/1", NOT_LISTED),
    "fullwidth digits": ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{ep}/items/1", NOT_LISTED),
    "ideographic full stop": ("http://127.0.0.1\u3002:{ep}/items/1", NOT_LISTED),
    "allowed host as a subdomain": ("http://127.0.0.1.nip.io:{ap}/items/1", NOT_LISTED),
    "allowed host as userinfo": ("http://{api}@{evil}/items/1", USERINFO),
    "user:password on the allowed host": ("http://user:secret@{api}/items/1", USERINFO),
    "user on the other host": ("http://user@{evil}/items/1", USERINFO),
    "percent-encoded authority": ("http://127.0.0.1%3A{ap}@{evil}/items/1", USERINFO),
    "backslash before @": ("http://{api}\\@{evil}/items/1", UNSAFE),
    "space before @": ("http://{api} @{evil}/items/1", UNSAFE),
    "tab in the host": ("http://127.0.0.1\t:{ep}/items/1", UNSAFE),
    "scheme-relative": ("//{evil}/items/1", NOT_HTTP),
    "http: without slashes": ("http:{evil}/items/1", NOT_HTTP),
    "file": ("file:///etc/passwd", NOT_HTTP),
    "ftp": ("ftp://{evil}/items/1", NOT_HTTP),
    "gopher": ("gopher://{evil}/_GET", NOT_HTTP),
    "redirect to the other port": ("http://{api}/redirect?to=http://{evil}/items/1", REDIRECT, NOT_LISTED),
    "redirect to localhost": ("http://{api}/redirect?to=http://localhost:{ep}/items/1", REDIRECT, NOT_LISTED),
    "redirect with userinfo": ("http://{api}/redirect?to=http://{api}@{evil}/items/1", REDIRECT, USERINFO),
    "redirect, then redirect away": (
        "http://{api}/redirect?to=/redirect%3Fto%3Dhttp://{evil}/items/1", REDIRECT, NOT_LISTED),
}
#: controls: fetched from the allowed API, so the refusals above are not a broken fetch
ALLOWED = {
    "the allowed API": "http://{api}/items/{n}",
    "a redirect that stays on the allowed API": "http://{api}/redirect?to=/items/{n}",
}


@dataclass
class Api:
    """The allowed API: items, and redirects to wherever `?to=` says."""

    url: str = ""
    requests: list[str] = field(default_factory=list)

    async def item(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        number = int(request.match_info["n"])
        return web.json_response({"number": number, "title": f"fetched {number}", "value": number})

    async def redirect(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        raise web.HTTPFound(request.query["to"])


@dataclass
class Other:
    """The host nobody may reach: counts every connection, answers as if it were an API."""

    url: str = ""
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"number": 999, "title": "from the other host", "value": 666}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[Api, Other]]:
    api, other = Api(), Other()
    application = web.Application()
    application.router.add_get("/items/{n}", api.item)
    application.router.add_get("/redirect", api.redirect)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    api.url = "http://{}:{}".format(*runner.addresses[0][:2])
    server = await asyncio.start_server(other.handle, "127.0.0.1", 0)
    other.url = "http://{}:{}".format(*server.sockets[0].getsockname()[:2])
    yield api, other
    server.close()
    await server.wait_closed()
    await runner.cleanup()


def fill(template: str, api: Api, other: Other, n: int = 0) -> str:
    a, o = api.url.removeprefix("http://"), other.url.removeprefix("http://")
    return template.format(api=a, evil=o, ap=a.split(":")[1], ep=o.split(":")[1], n=n)


def config(directory: Path, *allowed: str) -> Path:
    """One processor whose fetch URL comes from the payload; refusals would be retried 3 times
    if they were retryable (they must not be)."""
    fetch = {"url": ".pull_request.url", "allowed_hosts": list(allowed), "items": "."}
    processor = github_processor(fetch=fetch, retry={"max_retries": 3, "initial_retry_delay_seconds": 0.1})
    path = write_config(directory, processors=[processor])
    return amend_config(path, fetch={"allow_loopback": True, "attempts": 1, "timeout_seconds": 5})


def payload(number: int, url: str) -> dict[str, Any]:
    return {"action": "opened", "number": number, "pull_request": {"number": number, "url": url}}


def capture(number: int, url: str) -> dict[str, Any]:
    body = json.dumps(payload(number, url))
    return {"method": "POST", "path": "/webhooks/github", "body": body,
            "headers": [[k, v] for k, v in github_headers(body.encode()).items()]}


async def cli(*args: str | Path) -> Result:
    """The real command in a thread (it runs its own event loop, ours serves the hosts)."""
    return await asyncio.to_thread(CliRunner().invoke, app, [str(a) for a in args], catch_exceptions=False)


async def replay(directory: Path, config_path: Path) -> list[dict[str, Any]]:
    result = await cli("replay", directory, "--config", config_path, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


async def test_replay_refuses_every_url_off_the_allowed_host_and_never_connects(
    tmp_path: Path, hosts: tuple[Api, Other], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, other = hosts
    monkeypatch.setenv(SECRET_ENV, SECRET)
    cfg = config(tmp_path / "cfg", api.url.removeprefix("http://"))
    cases = [(case, fill(template, api, other)) for case, (template, *_) in REFUSED.items()]
    controls = [(case, fill(template, api, other, n=100 + i)) for i, (case, template) in enumerate(ALLOWED.items())]
    captures = tmp_path / "captures"
    captures.mkdir()
    for n, (_, url) in enumerate([*cases, *controls], start=1):
        (captures / f"{n:03d}.json").write_text(json.dumps(capture(n, url)))

    outcomes = await replay(captures, cfg)

    assert len(outcomes) == len(cases) + len(controls)
    for (case, _), outcome in zip(cases, outcomes[: len(cases)], strict=True):
        assert outcome["status"] == "failed", (case, outcome)
        [error] = outcome["errors"]
        assert error.startswith("fetch refused: "), (case, error)
        for word in REFUSED[case][1:]:
            assert word in error, (case, error)
    for (case, _), outcome in zip(controls, outcomes[len(cases):], strict=True):
        assert outcome["status"] == "processed", (case, outcome)
    assert other.connections == 0
    # the allowed API saw the redirects it was asked for and the controls' items, nothing else
    hops = sum(2 if "then" in case else 1 for case in REFUSED if case.startswith("redirect")) + 1
    assert len([r for r in api.requests if r.startswith("/redirect?")]) == hops
    assert sorted(r for r in api.requests if not r.startswith("/redirect?")) == ["/items/100", "/items/101"]
    assert sorted(k[1] for k in catalog(load_config(cfg))) == ["100", "101"]

    # the other host was reachable all along: listed, it is fetched (and the fetch is what it answered)
    listed = config(tmp_path / "listed", other.url.removeprefix("http://"))
    one = tmp_path / "one"
    one.mkdir()
    (one / "001.json").write_text(json.dumps(capture(7, f"{other.url}/items/7")))
    [outcome] = await replay(one, listed)
    assert outcome["status"] == "processed" and other.connections == 1
    assert catalog(load_config(listed))[("pullRequest", "999")]["title"] == "from the other host"


async def test_serve_dead_letters_refused_fetches_at_once_with_the_reason(
    tmp_path: Path, hosts: tuple[Api, Other]
) -> None:
    api, other = hosts
    cfg = config(tmp_path, api.url.removeprefix("http://"))
    sent = {
        "other port on the allowed address": 1, "localhost, other port": 2, "allowed host as userinfo": 3,
        "redirect to the other port": 4, "decimal IPv4": 5,
    }
    proc = await ServeProcess.start(cfg)
    try:
        async with aiohttp.ClientSession() as http:
            urls = {n: fill(REFUSED[case][0], api, other) for case, n in sent.items()}
            urls[6] = fill(ALLOWED["the allowed API"], api, other, n=6)
            for n, url in urls.items():
                body = json.dumps(payload(n, url)).encode()
                async with http.post(proc.hook_url, data=body, headers=github_headers(body)) as response:
                    assert response.status == 202

            async def settled() -> list[Any] | None:
                deliveries = await journal_deliveries(tmp_path / "state")
                finished = [d for d in deliveries if d.state in (DeliveryState.DONE, DeliveryState.DEAD)]
                return deliveries if len(finished) == 6 else None

            deliveries = await wait_for(settled, timeout=15, what="six deliveries done or dead")
            metrics = await settled_metrics(http, proc.url, 6)
    finally:
        assert await proc.stop() == 0

    by_number = {json.loads(d.body)["number"]: d for d in deliveries}
    assert by_number[6].state == DeliveryState.DONE
    for case, n in sent.items():
        delivery = by_number[n]
        assert (delivery.state, delivery.attempts) == (DeliveryState.DEAD, 1), case  # refused: not retried
        assert (delivery.last_error or "").startswith("fetch refused: "), delivery.last_error
        assert all(word in delivery.last_error for word in REFUSED[case][1:]), (case, delivery.last_error)
    assert "ocean_hook_deliveries_dead_lettered_total 5.0" in metrics
    assert "ocean_hook_deliveries_retried_total 0.0" in metrics
    assert other.connections == 0
    assert sorted(api.requests)[0] == "/items/6" and len(api.requests) == 2  # and the one redirect

    # what a user sees
    show = await cli("deliveries", "show", by_number[3].delivery_id, "--config", cfg)
    assert show.exit_code == 0 and "URLs with userinfo (user@host) are not allowed" in show.output
    listing = await cli("deliveries", "list", "--state", "dead", "--config", cfg)
    assert listing.exit_code == 0 and "1 done, 0 failed, 5 dead" in listing.output
