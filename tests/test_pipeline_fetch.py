"""The fetch stage in the pipeline: a processor with `fetch:` gets the full, latest resource from
the source API, here a local HTTP server started by the test standing in for Jira's REST API.

The webhook carries a partial issue (id, key, self); what gets mapped is what the API returns.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from serve_helpers import journal_deliveries, serve_in_process, wait_for
from webhook_samples import MAPPINGS, capture, catalog, changes, sample_payload, secrets_env

from ocean_hook.config import Config, load_config
from ocean_hook.events import event_from_capture
from ocean_hook.fetch import Fetcher, FetchError, FetchResult
from ocean_hook.mapping.jq import JqQuery
from ocean_hook.pipeline import PipelineError, admit, process
from ocean_hook.processors.declarative import _fetched_items
from ocean_hook.replay import ReplayOutcome, replay_event, replay_runtime

TOKEN = "jira-api-token-7c1e"
ISSUE = ("jiraIssue", "PLAT-123")


@dataclass
class FakeJira:
    """GET /rest/api/2/issue/<id>: the full issue, unless a scripted answer is queued first."""

    url: str = ""
    issue: dict[str, Any] = field(default_factory=dict)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, str | None, float]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, request.headers.get("Authorization"), time.monotonic()))
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"errorMessages": ["scripted"]}, status=status, headers=headers)
        return web.json_response(self.issue)


@pytest.fixture
async def jira() -> AsyncIterator[FakeJira]:
    fake = FakeJira()
    full = sample_payload("jira", "issue_updated")["issue"]
    full["fields"]["status"]["name"] = "In Review"  # newer than the webhook: the API wins
    fake.issue = full
    app = web.Application()
    app.router.add_get("/rest/api/2/issue/{id}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


def write_config(tmp_path: Path, jira: FakeJira) -> Config:
    shutil.copy(MAPPINGS / "jira" / "port-app-config.yml", tmp_path / "port-app-config.yml")
    doc = {
        "mapping": "port-app-config.yml",
        "state_dir": "state",
        "fetch": {"allow_loopback": True, "attempts": 3, "timeout_seconds": 5},
        "processors": [{
            "name": "jira-issue",
            "preset": "jira",
            "events": ["jira:issue_*"],
            "kinds": ["issue"],
            "auth": {"secret": "${JIRA_WEBHOOK_SECRET}"},
            "items": ".issue",
            "delete_when": '.webhookEvent == "jira:issue_deleted"',
            "fetch": {
                "url": ".issue.self",
                "headers": {"Authorization": "Bearer ${JIRA_API_TOKEN}"},
                "allowed_hosts": [jira.url.removeprefix("http://")],
                "items": ".",
            },
        }],
    }
    (tmp_path / "ocean-hook.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(tmp_path / "ocean-hook.yaml", env={**secrets_env(), "JIRA_API_TOKEN": TOKEN})


def partial_issue_delivery(self_url: str) -> dict[str, Any]:
    """A jira:issue_updated capture whose issue is only a reference to the API resource."""
    payload = sample_payload("jira", "issue_updated")
    payload["issue"] = {"id": "20417", "key": "PLAT-123", "self": self_url}
    return capture("jira", "issue_updated", payload=payload)


async def run(config: Config, doc: dict[str, Any]) -> ReplayOutcome:
    runtime = replay_runtime(config, dry_run=False)
    try:
        return await replay_event("test", event_from_capture(doc, where="test"), config, runtime, verify=True)
    finally:
        await runtime.close()


async def test_full_resource_is_fetched_and_mapped(tmp_path: Path, jira: FakeJira) -> None:
    config = write_config(tmp_path, jira)
    outcome = await run(config, partial_issue_delivery(f"{jira.url}/rest/api/2/issue/20417"))
    assert outcome.status == "processed", outcome.error
    assert changes(outcome.to_json()) == [("create", *ISSUE)]
    assert [(path, auth) for path, auth, _ in jira.requests] == [("/rest/api/2/issue/20417", f"Bearer {TOKEN}")]
    entity = catalog(config)[ISSUE]
    assert entity["title"] == "Retry idempotent charge requests on 5xx"
    assert entity["properties"]["status"] == "In Review"
    assert entity["properties"]["assignee"] == "Alice Chen"


async def test_429_with_retry_after_then_success(tmp_path: Path, jira: FakeJira) -> None:
    config = write_config(tmp_path, jira)
    jira.script = [(429, {"Retry-After": "1"})]
    outcome = await run(config, partial_issue_delivery(f"{jira.url}/rest/api/2/issue/20417"))
    assert outcome.status == "processed", outcome.error
    assert len(jira.requests) == 2
    assert jira.requests[1][2] - jira.requests[0][2] >= 0.9  # waited as told, not the 0.5 s backoff
    assert changes(outcome.to_json()) == [("create", *ISSUE)]
    assert catalog(config)[ISSUE]["properties"]["status"] == "In Review"


async def test_404_turns_the_item_into_a_delete_of_the_existing_entity(tmp_path: Path, jira: FakeJira) -> None:
    config = write_config(tmp_path, jira)
    delivery = partial_issue_delivery(f"{jira.url}/rest/api/2/issue/20417")
    assert (await run(config, delivery)).status == "processed"
    assert ISSUE in catalog(config)

    jira.script = [(404, {})]
    outcome = await run(config, delivery)
    assert outcome.status == "processed", outcome.error
    assert changes(outcome.to_json()) == [("delete", *ISSUE)]
    assert len(jira.requests) == 2  # a 404 is an answer, not retried
    assert catalog(config) == {}


async def test_url_on_a_host_not_allowed_is_refused_and_never_fetched(tmp_path: Path, jira: FakeJira) -> None:
    config = write_config(tmp_path, jira)
    # the real webhook's `self`: a host the config does not list
    delivery = partial_issue_delivery("https://acme.atlassian.net/rest/api/2/issue/20417")
    outcome = await run(config, delivery)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "fetch refused" in outcome.error and "'acme.atlassian.net' is not in allowed_hosts" in outcome.error
    assert outcome.error.endswith("(not retryable)")
    assert outcome.to_json()["errors"] == [outcome.error]
    assert jira.requests == []

    admission = admit(event_from_capture(delivery, where="test"), config.processors, now=None)
    runtime = replay_runtime(config, dry_run=False)
    try:
        with pytest.raises(PipelineError) as raised:
            await process(admission.event, admission.processors, runtime.mapping, runtime.target, runtime.fetcher)
    finally:
        await runtime.close()
    assert raised.value.retryable is False
    assert jira.requests == [] and catalog(config) == {}


async def test_server_errors_past_the_last_attempt_fail_retryably(tmp_path: Path, jira: FakeJira) -> None:
    config = write_config(tmp_path, jira)
    jira.script = [(503, {"Retry-After": "0"})] * 3
    outcome = await run(config, partial_issue_delivery(f"{jira.url}/rest/api/2/issue/20417"))
    assert outcome.status == "failed"
    assert outcome.error is not None and "HTTP 503" in outcome.error and "gave up after 3 attempts" in outcome.error
    assert outcome.error.endswith("(retryable)")
    assert len(jira.requests) == 3
    assert json.dumps(outcome.to_json())  # the JSON report serializes


@pytest.mark.parametrize("self_url", [None, 42, ""])
async def test_a_fetch_url_that_gives_nothing_fails_the_delivery_not_silently(tmp_path: Path, jira: FakeJira,
                                                                              self_url: Any) -> None:
    """A typo in `fetch.url` made every delivery 'processed' with no change at all."""
    config = write_config(tmp_path, jira)
    outcome = await run(config, partial_issue_delivery(self_url))
    assert outcome.status == "failed"
    assert outcome.error == ("fetch refused: fetch.url '.issue.self' gives no URL (a non-empty string) for this "
                             "payload (not retryable)")
    assert jira.requests == [] and catalog(config) == {}


async def test_a_retry_after_from_the_api_sets_the_next_attempt_in_the_journal(tmp_path: Path, jira: FakeJira) -> None:
    """The worker's next attempt ignored the API's Retry-After: a 429 asking for two minutes got
    the policy's second, and the retries were spent in seconds."""
    write_config(tmp_path, jira)
    config_path = tmp_path / "ocean-hook.yaml"
    doc = yaml.safe_load(config_path.read_text())
    doc["fetch"]["attempts"] = 1  # no waiting inside the worker: the journal holds the schedule
    doc["processors"][0]["retry"] = {"max_retries": 5, "initial_retry_delay_seconds": 0.05,
                                     "max_retry_delay_seconds": 600}
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    jira.script = [(429, {"Retry-After": "120"})]
    event = event_from_capture(partial_issue_delivery(f"{jira.url}/rest/api/2/issue/20417"), where="test")
    env = {**secrets_env(), "JIRA_API_TOKEN": TOKEN}
    async with serve_in_process(config_path, env=env) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + event.path, data=event.body, headers=dict(event.headers)) as response:
            assert response.status == 202
        [failed] = await wait_for(lambda: _failed(server.state_dir), what="the failed attempt recorded")
    assert 115 < failed.next_attempt_at - failed.updated_at <= 121
    assert len(jira.requests) == 1


@pytest.mark.parametrize(("status", "asked"), [
    (429, {"Retry-After": "120"}),
    (403, {"Retry-After": "120", "X-RateLimit-Remaining": "4000"}),  # GitHub's secondary rate limit
    (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "+120"}),  # its primary one: epoch seconds
], ids=["429-retry-after", "403-retry-after", "403-ratelimit-reset"])
async def test_a_long_wait_asked_is_not_slept_in_the_worker(tmp_path: Path, jira: FakeJira, status: int,
                                                          asked: dict[str, str]) -> None:
    """A Retry-After longer than the fetcher's 30 s was cut to 30 s and slept in the worker at each
    attempt, the delivery's order key held all along; and a GitHub rate limit's 403 was dead-lettered
    at once (found by probing). Now: one request, the attempt recorded failed at once, the next one
    two minutes later."""
    write_config(tmp_path, jira)  # fetch attempts: 3
    config_path = tmp_path / "ocean-hook.yaml"
    doc = yaml.safe_load(config_path.read_text())
    doc["processors"][0]["retry"] = {"max_retries": 5, "initial_retry_delay_seconds": 0.05,
                                     "max_retry_delay_seconds": 600}
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    if asked.get("X-RateLimit-Reset") == "+120":
        asked = {**asked, "X-RateLimit-Reset": str(int(time.time()) + 121)}
    jira.script = [(status, asked)] * 3
    event = event_from_capture(partial_issue_delivery(f"{jira.url}/rest/api/2/issue/20417"), where="test")
    env = {**secrets_env(), "JIRA_API_TOKEN": TOKEN}
    async with serve_in_process(config_path, env=env) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + event.path, data=event.body, headers=dict(event.headers)) as response:
            assert response.status == 202
        sent = time.time()
        [failed] = await wait_for(lambda: _failed(server.state_dir), timeout=5, what="the failed attempt recorded")
    assert failed.updated_at - sent < 3  # not 2 x 30 s slept first
    assert 115 < failed.next_attempt_at - failed.updated_at <= 121
    assert len(jira.requests) == 1
    assert f"HTTP {status}" in failed.last_error
    assert ("longer than the 30 s a fetch waits: the delivery's next attempt waits instead, as long as the "
            "processor's max_retry_delay_seconds allows") in failed.last_error


async def _failed(state_dir: Path) -> list[Any] | None:
    found = [d for d in await journal_deliveries(state_dir) if d.state.value == "failed"]
    return found or None


@dataclass
class ItemsApi:
    """GET /items/<id>: `{"item": {...}}`; `gone` answers 404, `odd` a shape `.item` finds nothing in."""

    host: str
    config: Config
    asked: list[str]  # the paths requested, in order

    def delivery(self, *urls: str | None, ids: tuple[str, ...] = ()) -> dict[str, Any]:
        things = [{"id": i or f"t{n}", "url": u} for n, (i, u) in enumerate(zip(ids or (None,) * len(urls), urls,
                                                                                 strict=True))]
        return {"method": "POST", "path": "/many", "headers": [["Content-Type", "application/json"]],
                "body": json.dumps({"things": things})}

    def url(self, ident: str) -> str:
        return f"http://{self.host}/items/{ident}"


@pytest.fixture
async def items_api(tmp_path: Path) -> AsyncIterator[ItemsApi]:
    asked: list[str] = []

    async def item(request: web.Request) -> web.Response:
        asked.append(request.path)
        ident = request.match_info["id"]
        if ident == "gone":
            return web.json_response({"error": "not found"}, status=404)
        if ident == "odd":
            return web.json_response([{"id": ident}])
        if ident == "other":
            return web.json_response({"thing": {"id": ident}})
        if ident == "deep":  # within what answers may be (1,000 levels), past what deepcopy survives
            return web.Response(text='{"item": ' + "[" * 600 + "]" * 600 + "}", content_type="application/json")
        return web.json_response({"item": {"id": ident, "name": f"fetched {ident}"}})

    app = web.Application()
    app.router.add_get("/items/{id}", item)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    (tmp_path / "m.yml").write_text("resources:\n  - kind: thing\n    port:\n      entity:\n        mappings:\n"
                                    "          identifier: .id\n          title: .name\n"
                                    "          blueprint: '\"thing\"'\n")
    (tmp_path / "ocean-hook.yaml").write_text(yaml.safe_dump({
        "mapping": "m.yml", "state_dir": "state", "fetch": {"allow_loopback": True, "attempts": 1},
        "processors": [{"name": "many", "path": "/many", "kinds": ["thing"], "auth": {"scheme": "none"},
                        "items": ".things", "fetch": {"url": ".things[].url", "allowed_hosts": [host],
                                                      "items": ".item"}}]}))
    yield ItemsApi(host, load_config(tmp_path / "ocean-hook.yaml", env={}), asked)
    await runner.cleanup()


async def test_a_404_among_several_urls_deletes_only_the_item_of_that_url(items_api: ItemsApi) -> None:
    """One URL of two answering 404 deleted both items, the one just fetched with a 200 too
    (found by probing)."""
    config, url = items_api.config, items_api.url
    assert (await run(config, items_api.delivery(url("m1"), url("m2"), ids=("m1", "m2")))).status == "processed"
    assert set(catalog(config)) == {("thing", "m1"), ("thing", "m2")}
    outcome = await run(config, items_api.delivery(url("m1"), url("gone"), ids=("m1", "m2")))  # m2's is gone now
    assert changes(outcome.to_json()) == [("delete", "thing", "m2")]
    assert set(catalog(config)) == {("thing", "m1")}


async def test_an_item_with_no_url_keeps_its_place_and_is_not_deleted(items_api: ItemsApi) -> None:
    """An item without a URL was dropped from the list of URLs: the one URL left was taken for
    the whole payload's, and its 404 deleted every item (found by probing)."""
    config, url = items_api.config, items_api.url
    assert (await run(config, items_api.delivery(url("keep"), ids=("keep",)))).status == "processed"
    outcome = await run(config, items_api.delivery(None, url("gone"), ids=("keep", "y1")))
    assert changes(outcome.to_json()) == []  # y1 was never there; keep has no URL: left as it is
    assert set(catalog(config)) == {("thing", "keep")}


async def test_a_url_is_fetched_once_for_every_resource_of_the_mapping(items_api: ItemsApi, tmp_path: Path) -> None:
    """Each resource of the kind fetched the resource again: three requests of the API's rate
    limit where one would do, and each resource could see another version (found by probing)."""
    mapping = tmp_path / "m.yml"
    mapping.write_text(mapping.read_text() + mapping.read_text().removeprefix("resources:\n").replace(
        '\"thing\"', '\"thing-copy\"'))
    config = load_config(tmp_path / "ocean-hook.yaml", env={})
    outcome = await run(config, items_api.delivery(items_api.url("a1"), ids=("a1",)))
    assert outcome.status == "processed", outcome.error
    assert set(catalog(config)) == {("thing", "a1"), ("thing-copy", "a1")}
    assert items_api.asked == ["/items/a1"]
    await run(config, items_api.delivery(items_api.url("a1"), ids=("a1",)))  # a delivery later: asked again
    assert items_api.asked == ["/items/a1"] * 2


async def test_an_answer_fetch_items_finds_nothing_in_fails_the_delivery(items_api: ItemsApi) -> None:
    """An API answering another shape than `fetch.items` expects made every delivery "applied:
    0 to create, 0 to update" (found by probing)."""
    outcome = await run(items_api.config, items_api.delivery(items_api.url("odd")))
    assert outcome.status == "failed"
    assert outcome.error == (f"fetch.items '.item' failed on the answer of {items_api.url('odd')}: Cannot index "
                             'array with string ("item") (not retryable)')
    outcome = await run(items_api.config, items_api.delivery(items_api.url("other")))
    assert outcome.error == f"fetch.items '.item' gives null for the answer of {items_api.url('other')} (not retryable)"


@pytest.mark.parametrize(("body", "expr", "items"), [
    (b'{"data": []}', ".data[]", []),  # found by probing: an empty list failed the delivery
    (b'{"data": []}', ".data", []),
    (None, ".", []),  # an empty answer (204)
    (b'{"data": [{"id": 1}, null]}', ".data[]", [{"id": 1}]),
])
def test_an_answer_of_nothing_is_no_items_not_a_failure(body: bytes | None, expr: str, items: list[Any]) -> None:
    answer = FetchResult(200 if body else 204, None if body is None else json.loads(body), body=body)
    assert _fetched_items(JqQuery(expr), answer, "https://api.example.com/x") == items


def test_an_answer_of_json_null_is_no_answer_of_nothing() -> None:
    """`null` read as an empty answer (204) passed as "no items" (found by probing)."""
    with pytest.raises(FetchError, match=r"^fetch.items '.data' gives null for the answer of https://a/x$"):
        _fetched_items(JqQuery(".data"), FetchResult(200, None, body=b"null"), "https://a/x")


async def test_each_resource_gets_its_own_copy_of_an_answer_fetched_once(items_api: ItemsApi, tmp_path: Path) -> None:
    """A processor changing the answer in place (as Ocean's do) changed it for the next resource
    too, once the answer was fetched once per delivery (found by probing)."""
    fetcher = Fetcher(allow_loopback=True).for_one_delivery()
    try:
        asked = dict(url=items_api.url("a1"), headers={}, allowed_hosts=[items_api.host])
        first = await fetcher.get_json(**asked)  # type: ignore[arg-type]
        first.data["item"]["name"] = "changed by the first resource"
        second = await fetcher.get_json(**asked)  # type: ignore[arg-type]
    finally:
        await fetcher.close()
    assert second.data["item"]["name"] == "fetched a1"
    assert items_api.asked == ["/items/a1"]
    fetcher = Fetcher(allow_loopback=True).for_one_delivery()
    try:  # a deep answer asked twice: a deep copy of it was a RecursionError (found by probing)
        deep = dict(url=items_api.url("deep"), headers={}, allowed_hosts=[items_api.host])
        assert (await fetcher.get_json(**deep)).data == (await fetcher.get_json(**deep)).data  # type: ignore[arg-type]
    finally:
        await fetcher.close()


async def test_items_are_picked_with_their_numbers_as_sent(tmp_path: Path) -> None:
    """`items:` went through jq's doubles: id 1234567890123456789 was written as ...768, and
    1.0 as 1, where test-mapping and Ocean keep them (found by probing)."""
    (tmp_path / "m.yml").write_text("resources:\n  - kind: thing\n    port:\n      entity:\n        mappings:\n"
                                    "          identifier: .id | tostring\n          title: .v | tostring\n"
                                    "          blueprint: '\"thing\"'\n")
    (tmp_path / "ocean-hook.yaml").write_text(yaml.safe_dump({
        "mapping": "m.yml", "state_dir": "state",
        "processors": [{"name": "p", "path": "/p", "kinds": ["thing"], "auth": {"scheme": "none"},
                        "items": ".data.things"}]}))
    config = load_config(tmp_path / "ocean-hook.yaml", env={})
    body = '{"data": {"things": [{"id": 1234567890123456789, "v": 1.0}, {"id": 7, "v": 1e2}]}}'
    outcome = await run(config, {"method": "POST", "path": "/p", "headers": [["Content-Type", "application/json"]],
                                 "body": body})
    assert outcome.status == "processed", outcome.error
    assert {key: entity["title"] for key, entity in catalog(config).items()} == {
        ("thing", "1234567890123456789"): "1.0", ("thing", "7"): "100.0"}
