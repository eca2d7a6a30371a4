"""PortTarget against the fake Port API (tests/port_server.py), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from port_server import FakePort

from ocean_hook import __version__
from ocean_hook.check import check
from ocean_hook.config import ConfigProblems, load_config
from ocean_hook.fetch import retry_after_seconds
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.targets import PortTarget, TargetError, build_target
from ocean_hook.targets import port as port_module

UA = f"ocean-hook/{__version__}/hook"
BULK = "/v1/blueprints/service/entities/bulk"
FLAGS = MappingFlags(enable_merge_entity=False, delete_dependent_entities=True, create_missing_related_entities=False)
MERGE = MappingFlags()


def make_target(port: FakePort, **overrides) -> PortTarget:
    options = {
        "client_id": port.client_id,
        "client_secret": port.client_secret,
        "integration_name": "hook",
        "retry_attempts": 4,
        "retry_min_wait": 0.01,
        "retry_max_wait": 0.05,
    }
    return PortTarget(port.url, **(options | overrides))


@pytest.fixture
async def port():
    async with FakePort() as fake:
        yield fake


@pytest.fixture
async def target(port: FakePort):
    t = make_target(port)
    yield t
    await t.close()


def svc(ident: str, **props) -> dict:
    return {"identifier": ident, "blueprint": "service", "title": ident, "properties": props}


# -- upsert ------------------------------------------------------------------------------------


async def test_create_sends_one_token_and_one_bulk_request(port: FakePort, target: PortTarget):
    entities = [svc("api", lang="py"), svc("web", lang="ts")]
    outcomes = await target.upsert(entities, FLAGS)
    assert [(o.key, o.ok) for o in outcomes] == [(("service", "api"), True), (("service", "web"), True)]
    token, bulk = port.requests
    assert (token.method, token.path) == ("POST", "/v1/auth/access_token")
    assert token.json == {"clientId": port.client_id, "clientSecret": port.client_secret}
    assert (bulk.method, bulk.path) == ("POST", BULK)
    assert bulk.query == {
        "upsert": "true",
        "merge": "false",
        "create_missing_related_entities": "false",
        "validation_only": "false",
    }
    assert bulk.json == {"entities": entities}
    assert bulk.headers["User-Agent"] == UA and token.headers["User-Agent"] == UA
    assert bulk.headers["Authorization"].startswith("Bearer ")
    assert port.entity("service", "api") == entities[0]
    assert port.store[("service", "api")].datasource == UA


async def test_merge_update_and_read_back_without_server_fields(port: FakePort, target: PortTarget):
    await target.upsert([{**svc("api", lang="py", tier=1), "relations": {"team": "core"}}], MERGE)
    partial = {"identifier": "api", "blueprint": "service", "properties": {"tier": 2}}
    assert (await target.upsert([partial], MERGE))[0].ok
    last = port.calls("POST", BULK)[-1]
    assert last.query["merge"] == "true" and last.query["create_missing_related_entities"] == "true"
    assert last.json == {"entities": [partial]}
    expected = {**svc("api", lang="py", tier=2), "relations": {"team": "core"}}
    assert port.entity("service", "api") == expected

    found = await target.get_entities([("service", "api"), ("service", "nope")])
    assert found == {("service", "api"): expected}  # no createdAt, updatedAt, $datasource, ...
    search = port.calls("POST", "/v1/entities/search")[-1]
    assert search.query == {"exclude_calculated_properties": "true"}
    assert search.json == {
        "combinator": "and",
        "rules": [
            {"property": "$identifier", "operator": "in", "value": ["api", "nope"]},
            {"property": "$blueprint", "operator": "=", "value": "service"},
        ],
    }


async def test_get_entities_searches_in_chunks_of_100(port: FakePort, target: PortTarget):
    keys = [("service", f"s{n}") for n in range(150)] + [("team", "t1")]
    port.put({"identifier": "s149", "blueprint": "service"})
    port.put({"identifier": "t1", "blueprint": "team", "team": []})
    found = await target.get_entities(keys)
    assert found == {
        ("service", "s149"): {"identifier": "s149", "blueprint": "service"},
        ("team", "t1"): {"identifier": "t1", "blueprint": "team"},
    }
    sizes = sorted(len(r.json["rules"][0]["value"]) for r in port.calls("POST", "/v1/entities/search"))
    assert sizes == [1, 50, 100]


async def test_batches_hold_at_most_20_entities_and_1_mib(port: FakePort, target: PortTarget):
    many = [svc(f"s{n}") for n in range(45)] + [{"identifier": f"t{n}", "blueprint": "team"} for n in range(3)]
    assert all(o.ok for o in await target.upsert(many, MERGE))
    sizes = sorted(len(r.json["entities"]) for r in port.calls("POST", "/v1/blueprints/"))
    assert sizes == [3, 5, 20, 20]
    assert len(port.store) == 48

    port.requests.clear()
    big = [svc(f"big{n}", blob="x" * 300_000) for n in range(7)]
    assert all(o.ok for o in await target.upsert(big, MERGE))
    assert sorted(len(r.json["entities"]) for r in port.calls("POST", BULK)) == [1, 3, 3]


async def test_a_failed_entity_fails_only_itself(port: FakePort, target: PortTarget):
    port.blueprint_schema["service"] = {"required": ["lang"]}
    outcomes = await target.upsert([svc("a", lang="py"), svc("b"), svc("c", lang="go")], MERGE)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].key == ("service", "b")
    assert "must have required property 'lang'" in outcomes[1].error
    assert not outcomes[1].retryable
    assert len(port.calls("POST", BULK)) == 1


async def test_422_is_surfaced_and_not_retried(port: FakePort, target: PortTarget):
    body = {"ok": False, "error": "invalid_request", "message": 'Blueprint "service" says no'}
    port.fail_next(BULK, 422, body=body)
    outcomes = await target.upsert([svc("a"), svc("b")], MERGE)
    assert all(not o.ok and not o.retryable for o in outcomes)
    assert outcomes[0].error == 'Port answered 422: Blueprint "service" says no'
    assert len(port.calls("POST", BULK)) == 1
    assert port.store == {}


async def test_413_falls_back_to_single_upserts(port: FakePort, target: PortTarget):
    port.fail_next(BULK, 413)
    outcomes = await target.upsert([svc("a"), svc("b")], FLAGS)
    assert all(o.ok for o in outcomes)
    singles = port.calls("POST", "/v1/blueprints/service/entities")
    singles = [r for r in singles if r.path == "/v1/blueprints/service/entities"]
    assert sorted(r.json["identifier"] for r in singles) == ["a", "b"]
    assert all(r.query == port.calls("POST", BULK)[0].query for r in singles)
    assert set(port.store) == {("service", "a"), ("service", "b")}


async def test_requests_in_flight_are_bounded(port: FakePort):
    port.latency = 0.05
    target = make_target(port, max_in_flight=2)
    try:
        entities = [{"identifier": f"e{n}", "blueprint": f"bp{n % 6}"} for n in range(60)]
        assert all(o.ok for o in await target.upsert(entities, MERGE))
    finally:
        await target.close()
    assert len(port.calls("POST", "/v1/blueprints/")) == 6
    assert port.max_concurrent == 2


async def test_without_creating_missing_related_entities_batches_go_one_after_another_in_order(port: FakePort):
    """Sent at once, a service's batch could reach Port before the batch of the team it relates
    to, and be refused (found by probing); with `createMissingRelatedEntities` Port makes the team."""
    port.latency = 0.05
    target = make_target(port, max_in_flight=4)
    entities = [{"identifier": "t1", "blueprint": "team"}, {"identifier": "s1", "blueprint": "service",
                "relations": {"team": "t1"}}, {"identifier": "t2", "blueprint": "team"}]
    try:
        assert all(o.ok for o in await target.upsert(entities, MappingFlags(create_missing_related_entities=False)))
    finally:
        await target.close()
    assert [r.path for r in port.calls("POST", "/v1/blueprints/")] == [
        "/v1/blueprints/team/entities/bulk", "/v1/blueprints/service/entities/bulk"]
    assert port.calls("POST", "/v1/blueprints/team")[0].json == {"entities": [entities[0], entities[2]]}
    assert port.max_concurrent == 1


async def test_answers_not_in_ports_shape_are_failures_not_tracebacks(port: FakePort, target: PortTarget):
    """A list where Port puts a string or a number was a TypeError traceback (found by probing)."""
    port.fail_next(BULK, 200, body={"entities": [{"index": {"i": 0}}], "errors": [{"index": [0]}]})
    [upserted] = await target.upsert([svc("a")], MERGE)
    assert (upserted.ok, upserted.error, upserted.retryable) == (False, "Port's bulk answer did not mention it", True)
    await target.upsert([svc("a")], MERGE)
    port.fail_next("/v1/blueprints/service/bulk", 200, body={"deletedEntities": [["a"]]})  # and nothing deleted
    [deleted] = await target.delete([("service", "a")], MERGE)
    assert (deleted.ok, deleted.error, deleted.retryable) == (False, "Port did not delete the entity", True)
    port.fail_next("/v1/entities/search", 200, body={"entities": [{"identifier": ["a"], "blueprint": "service"}]})
    assert (await target.delete([("service", "b")], MERGE))[0].ok  # not there: nothing to do


async def test_a_request_timeout_says_so_rather_than_unreachable(port: FakePort) -> None:
    """A Port that answers late may have applied the write: "unreachable" misled (found by probing)."""
    target = make_target(port, request_timeout=0.2, retry_attempts=1)
    try:
        await target.upsert([svc("a")], MERGE)  # the token, on time
        port.latency = 0.5
        [outcome] = await target.upsert([svc("a")], MERGE)
    finally:
        await target.close()
    assert outcome.error == f"Port at {port.url} did not answer within 0.2 s" and outcome.retryable


# -- retries -----------------------------------------------------------------------------------


async def test_429_waits_as_long_as_retry_after_says(port: FakePort):
    target = make_target(port, retry_max_wait=5)
    try:
        await target.check_ready()
        port.fail_next(BULK, 429, headers={"Retry-After": "1"})
        started = time.monotonic()
        outcomes = await target.upsert([svc("a")], MERGE)
        elapsed = time.monotonic() - started
    finally:
        await target.close()
    assert outcomes[0].ok
    assert list(target.retry_waits) == [1.0]
    assert 1.0 <= elapsed < 3.0
    assert len(port.calls("POST", BULK)) == 2


async def test_server_asked_waits_are_capped(port: FakePort, target: PortTarget):
    port.fail_next(BULK, 429, headers={"Retry-After": "3600"})
    port.fail_next(BULK, 503, headers={"x-ratelimit-reset": "2"})
    assert (await target.upsert([svc("a")], MERGE))[0].ok
    assert list(target.retry_waits) == [0.05, 0.05]


def test_retry_after_parsing():
    now = 1_700_000_000.0
    assert retry_after_seconds({"Retry-After": "7"}, now) == 7.0
    assert retry_after_seconds({"retry-after": formatdate(now + 30, usegmt=True)}, now) == 30.0
    assert retry_after_seconds({"Retry-After": formatdate(now - 30, usegmt=True)}, now) == 0.0
    assert retry_after_seconds({"X-RateLimit-Reset": "12"}, now) == 12.0
    assert retry_after_seconds({"x-ratelimit-reset": str(now + 4)}, now) == 4.0
    assert retry_after_seconds({"Retry-After": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None
    # nothing usable: the backoff decides, not an instant retry (they were 0 s; found by probing)
    for nonsense in ("-1", "nan", "inf", "-inf"):
        assert retry_after_seconds({"Retry-After": nonsense}, now) is None
        assert retry_after_seconds({"X-RateLimit-Reset": nonsense}, now) is None


async def test_503_storm_ends_in_retryable_outcomes(port: FakePort, target: PortTarget):
    port.fail_next(BULK, 503, times=100)
    outcomes = await target.upsert([svc("a"), svc("b")], MERGE)
    assert all(not o.ok and o.retryable for o in outcomes)
    assert outcomes[0].error.startswith("Port answered 503")
    assert len(port.calls("POST", BULK)) == 4  # retry_attempts
    assert len(target.retry_waits) == 3
    assert all(0.01 <= w <= 0.05 for w in target.retry_waits)


async def test_dropped_connection_is_retried(port: FakePort, target: PortTarget):
    port.fail_next(BULK, drop=True)
    assert (await target.upsert([svc("a")], MERGE))[0].ok
    assert len(port.calls("POST", BULK)) == 2
    assert port.entity("service", "a") == svc("a")


async def test_unreachable_port_raises_a_retryable_target_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    target = PortTarget(
        url, client_id="i", client_secret="s", retry_attempts=2, retry_min_wait=0.01, retry_max_wait=0.02
    )
    try:
        with pytest.raises(TargetError) as info:
            await target.upsert([svc("a")], MERGE)
    finally:
        await target.close()
    assert info.value.retryable
    assert "cannot obtain a Port access token" in str(info.value)


# -- token -------------------------------------------------------------------------------------


async def test_token_is_cached_then_renewed_before_expiry(port: FakePort, target: PortTarget):
    port.expires_in = 1  # the client renews at half-life when expiresIn is this short
    await target.upsert([svc("a")], MERGE)
    await target.upsert([svc("b")], MERGE)
    assert port.tokens_issued == 1
    time.sleep(0.6)
    await target.upsert([svc("c")], MERGE)
    assert port.tokens_issued == 2
    assert len(port.calls("POST", BULK)) == 3  # no request was refused with 401


async def test_401_renews_the_token_once_and_retries(port: FakePort, target: PortTarget):
    await target.upsert([svc("a")], MERGE)
    port.revoke_tokens()
    assert (await target.upsert([svc("b")], MERGE))[0].ok
    assert port.tokens_issued == 2
    _, refused, retried = port.calls("POST", BULK)
    assert refused.headers["Authorization"] != retried.headers["Authorization"]


async def test_bad_credentials_fail_readiness_without_leaking_the_secret(port: FakePort):
    target = make_target(port, client_secret="wrong-secret-value")
    try:
        with pytest.raises(TargetError) as info:
            await target.check_ready()
    finally:
        await target.close()
    assert not info.value.retryable
    assert "invalid client credentials" in str(info.value)
    assert "wrong-secret-value" not in str(info.value)
    assert len(port.requests) == 1


async def test_readiness_follows_port_not_the_cached_token(port: FakePort):
    """Ready, then Port answers 503 to everything: once the last exchange is older than the
    ready window a probe (one request with the cached token, one attempt) finds it; ready again
    once it recovers."""
    target = make_target(port, ready_window=0.05)
    try:
        await target.check_ready()
        port.fail_next("/v1/", 503, times=1)
        await asyncio.sleep(0.1)
        with pytest.raises(TargetError) as info:
            await target.check_ready()
        assert "Port answered 503" in str(info.value) and info.value.retryable
        await asyncio.sleep(0.1)
        await target.check_ready()  # the scripted 503 was used up: Port answers again
    finally:
        await target.close()
    assert [r.path for r in port.requests] == ["/v1/auth/access_token"] + ["/v1/organization"] * 2


async def test_a_failure_any_call_meets_counts_for_readiness_at_once(port: FakePort):
    """Within the window nothing is probed: the workers' own calls tell how Port is doing."""
    target = make_target(port, ready_window=60)
    try:
        await target.check_ready()
        port.fail_next(BULK, 503, times=4)  # every attempt of the next upsert
        assert not (await target.upsert([svc("a")], MERGE))[0].ok
        with pytest.raises(TargetError, match="Port answered 503"):
            await target.check_ready()
        assert (await target.upsert([svc("b")], MERGE))[0].ok
        await target.check_ready()
    finally:
        await target.close()
    assert port.tokens_issued == 1


async def test_a_probe_waits_for_a_silent_port_only_so_long(port: FakePort, monkeypatch) -> None:
    """/readyz took the client's whole 30 s timeout when Port hung."""
    monkeypatch.setattr(port_module, "PROBE_TIMEOUT_SECONDS", 0.2)
    target = make_target(port, ready_window=0)
    port.latency = 1.5
    try:
        started = time.monotonic()
        with pytest.raises(TargetError, match=r"Port did not answer a token request within 0\.2 s"):
            await target.check_ready()
        assert time.monotonic() - started < 1
    finally:
        port.latency = 0.0
        await target.close()


async def test_tokens_that_port_issues_and_then_refuses_make_the_target_not_ready(port: FakePort) -> None:
    target = make_target(port, ready_window=60)
    try:
        await target.check_ready()
        port.fail_next("/v1/blueprints/", 401, times=10)  # every call, with the old token and a fresh one
        with pytest.raises(TargetError, match="Port rejected a fresh access token"):
            await target.upsert([svc("a")], MERGE)
        with pytest.raises(TargetError, match="Port rejected a fresh access token"):
            await target.check_ready()
    finally:
        await target.close()


# -- delete and ownership ----------------------------------------------------------------------


async def _db_and_dependent(target: PortTarget) -> None:
    await target.upsert([{"identifier": "db", "blueprint": "database"}], MERGE)
    await target.upsert([{"identifier": "api", "blueprint": "service", "relations": {"database": "db"}}], MERGE)


async def test_delete_with_dependents(port: FakePort, target: PortTarget):
    await _db_and_dependent(target)
    port.requests.clear()
    outcomes = await target.delete([("database", "db")], MERGE)
    assert [(o.key, o.ok) for o in outcomes] == [(("database", "db"), True)]
    exists, ours, delete = port.calls()
    assert exists.path == ours.path == "/v1/entities/search"
    assert ours.json["rules"][2:] == [
        {"property": "$datasource", "operator": "contains", "value": "ocean-hook/"},
        {"property": "$datasource", "operator": "contains", "value": "/hook"},
    ]
    assert (delete.method, delete.path) == ("POST", "/v1/blueprints/database/bulk/entities/delete")
    assert delete.query == {"delete_dependents": "true"}
    assert delete.json == {"entities": ["db"]}
    assert port.store == {}


async def test_delete_without_dependents(port: FakePort, target: PortTarget):
    await _db_and_dependent(target)
    await target.delete(
        [("database", "db"), ("database", "never-existed")], MappingFlags(delete_dependent_entities=False)
    )
    delete = port.calls("POST", "/v1/blueprints/database/bulk")[-1]
    assert delete.query == {"delete_dependents": "false"}
    assert delete.json == {"entities": ["db"]}  # the missing one is ok without a request
    assert set(port.store) == {("service", "api")}


async def test_entities_of_other_writers_are_left_alone(port: FakePort, target: PortTarget):
    await target.upsert([svc("mine")], MERGE)
    port.put(svc("theirs"), datasource="port-ocean/github/gh/0.1.9/exporter")
    port.put(svc("sibling"), datasource=f"ocean-hook/{__version__}/hook-2")
    port.put(svc("older"), datasource="ocean-hook/0.0.1/hook")
    keys = [("service", k) for k in ("theirs", "mine", "sibling", "gone", "older")]
    outcomes = await target.delete(keys, MERGE)
    assert [o.key for o in outcomes] == keys
    assert [o.ok for o in outcomes] == [False, True, False, True, True]
    assert outcomes[0].error == (
        "not created by ocean-hook (datasource port-ocean/github/gh/0.1.9/exporter): left alone"
    )
    assert not outcomes[0].retryable and not outcomes[2].retryable
    assert set(port.store) == {("service", "theirs"), ("service", "sibling")}
    assert port.calls("POST", "/v1/blueprints/service/bulk")[0].json == {"entities": ["mine", "older"]}


async def test_without_datasources_in_answers_only_this_writers_entities_are_deleted(port: FakePort,
                                                                                    target: PortTarget):
    """Found by probing: with no `$datasource` in Port's answers, `contains "/hook"` also matched
    `hook-2`'s entity, and integration `hook` deleted it."""
    port.answers_datasource = False
    await target.upsert([svc("mine")], MERGE)
    port.put(svc("sibling"), datasource=f"ocean-hook/{__version__}/hook-2")
    port.put(svc("theirs"), datasource="port-ocean/github/gh/0.1.9/exporter")
    keys = [("service", k) for k in ("mine", "sibling", "theirs")]
    searches = len(port.calls("POST", "/v1/entities/search"))
    outcomes = await target.delete(keys, MERGE)
    assert len(port.calls("POST", "/v1/entities/search")) - searches == 2  # by identifier, then by exact owner
    assert [o.ok for o in outcomes] == [True, False, False]
    assert outcomes[1].error.startswith("Port did not say who wrote it, and not this version of ocean-hook/hook")
    assert not outcomes[1].retryable
    assert set(port.store) == {("service", "sibling"), ("service", "theirs")}


async def test_a_search_404_that_is_not_a_missing_blueprint_fails_the_delete(port: FakePort, target: PortTarget):
    """A wrong base_url path or a proxy answering 404 was read as "nothing exists": the delete
    was reported done while the entity stayed (found by probing)."""
    await target.upsert([svc("mine")], MERGE)
    port.fail_next("/v1/entities/search", 404, body={"message": "Route not found"})
    with pytest.raises(TargetError) as failed:
        await target.delete([("service", "mine")], MERGE)
    assert "Port search failed" in str(failed.value) and "404" in str(failed.value)
    assert set(port.store) == {("service", "mine")}
    port.blueprints = {"service"}  # Port's own 404 for a blueprint it does not have still means none
    assert (await target.delete([("nothing", "x")], MERGE))[0].ok


async def test_dot_identifiers_are_escaped_so_no_one_resolves_them_as_dot_segments(port: FakePort):
    """`DELETE /v1/blueprints/svc/entities/..` reads as `DELETE /v1/blueprints/svc` to a server or
    proxy resolving dot segments (RFC 3986): another resource altogether (found by probing)."""
    port.bulk_delete_supported = False
    target = make_target(port)
    try:
        assert all(o.ok for o in await target.upsert([svc(".."), svc("."), svc("a.b")], MERGE))
        outcomes = await target.delete([("service", ".."), ("service", "."), ("service", "a.b")], MERGE)
    finally:
        await target.close()
    assert [o.ok for o in outcomes] == [True, True, True]
    assert sorted(r.raw_path for r in port.calls("DELETE")) == [
        "/v1/blueprints/service/entities/%2E", "/v1/blueprints/service/entities/%2E%2E",
        "/v1/blueprints/service/entities/a.b",
    ]
    assert port.store == {}


async def test_paths_are_url_encoded_and_old_api_falls_back_to_single_delete(port: FakePort):
    port.bulk_delete_supported = False
    target = make_target(port)
    weird = {"identifier": "team a/b c", "blueprint": "my bp"}
    try:
        port.fail_next("/v1/blueprints/my bp/entities/bulk", 413)
        assert (await target.upsert([weird], MERGE))[0].ok
        assert (await target.delete([("my bp", "team a/b c")], MERGE))[0].ok
    finally:
        await target.close()
    raw = [(r.method, r.raw_path) for r in port.calls() if r.path.startswith("/v1/blueprints")]
    assert raw == [
        ("POST", "/v1/blueprints/my%20bp/entities/bulk"),
        ("POST", "/v1/blueprints/my%20bp/entities"),
        ("POST", "/v1/blueprints/my%20bp/bulk/entities/delete"),
        ("DELETE", "/v1/blueprints/my%20bp/entities/team%20a%2Fb%20c"),
    ]
    assert port.calls("DELETE")[0].query == {"delete_dependents": "true"}
    assert port.store == {}


@pytest.mark.parametrize("body", [{"ok": True}, "<html>gateway</html>", None])
async def test_a_search_answer_without_entities_fails_the_delete_retryably(port: FakePort, target: PortTarget,
                                                                            body) -> None:
    """A proxy's 200 page read as "nothing found" made deletes report success while the entity
    stayed in Port, and the delivery was marked done."""
    await target.upsert([svc("api")], FLAGS)
    port.fail_next("/v1/entities/search", 200, body=body, times=10)
    with pytest.raises(TargetError, match="Port search gave no 'entities' list") as caught:
        await target.delete([("service", "api")], FLAGS)
    assert caught.value.retryable
    assert port.entity("service", "api") is not None


async def test_redirects_are_not_followed_so_the_secret_stays_with_base_url(port: FakePort) -> None:
    async with FakePort(client_id=port.client_id, client_secret=port.client_secret) as elsewhere:
        target = make_target(port, retry_attempts=1)
        port.fail_next("/v1/auth/access_token", 307, headers={"Location": elsewhere.url + "/v1/auth/access_token"})
        try:
            redirect = r"Port answered 307, a redirect to http://127\.0\.0\.1:.*not followed"
            with pytest.raises(TargetError, match=redirect):
                await target.upsert([svc("api")], FLAGS)
        finally:
            await target.close()
        assert elsewhere.requests == []  # neither the client secret nor anything else went there


@pytest.mark.parametrize(("body", "problem"), [
    ("<html>login</html>", "200 without a JSON object"),
    ({"expiresIn": 3600}, "no 'accessToken' string"),
    ({"accessToken": "t", "expiresIn": "3600"}, "'expiresIn' is not a number of seconds"),
    ({"accessToken": "t\r\nX-Evil: 1", "expiresIn": 3600}, "the 'accessToken' holds control characters"),
    # a newline in the header's first word was aiohttp's bare ValueError (found by probing)
    ({"accessToken": "t", "expiresIn": 3600, "tokenType": "Bearer\nX-Evil: 1"}, "the 'tokenType' is not one word"),
    ({"accessToken": "t", "expiresIn": 3600, "tokenType": "Bearer x"}, "the 'tokenType' is not one word"),
    ({"accessToken": "t", "expiresIn": 3600, "tokenType": ["Bearer"]}, "the 'tokenType' is not one word"),
])
async def test_a_malformed_token_answer_says_what_is_wrong(port: FakePort, body, problem: str) -> None:
    target = make_target(port, retry_attempts=1)
    port.fail_next("/v1/auth/access_token", 200, body=body)
    try:
        with pytest.raises(TargetError, match=f"cannot obtain a Port access token: malformed token answer: {problem}"):
            await target.upsert([svc("api")], FLAGS)
    finally:
        await target.close()


async def test_a_token_refusal_that_echoes_the_secret_does_not_repeat_it(port: FakePort) -> None:
    """The error went to the log and to the unauthenticated /readyz (found by probing)."""
    target = make_target(port, retry_attempts=1)
    port.fail_next("/v1/auth/access_token", 400, body=f'bad request: {{"clientSecret":"{port.client_secret}"}}')
    try:
        with pytest.raises(TargetError) as failed:
            await target.upsert([svc("api")], FLAGS)
        with pytest.raises(TargetError) as not_ready:
            await target.check_ready()
    finally:
        await target.close()
    for said in (str(failed.value), str(not_ready.value)):
        assert port.client_secret not in said
        assert said.startswith("cannot obtain a Port access token: Port answered 400: bad request: ")
        assert '"clientSecret":"[redacted]"' in said


async def test_an_answer_that_echoes_the_secret_or_the_token_never_repeats_them(port: FakePort, caplog) -> None:
    """A retried 503 echoing the token request put the client secret in the log's retry line; a
    400 echoing the request's Authorization header put the token in the dead letter (found by
    probing)."""
    target = make_target(port, retry_attempts=2)
    echo = f'upstream down, request was {{"clientSecret":"{port.client_secret}"}}'
    port.fail_next("/v1/auth/access_token", 503, body=echo)
    try:
        assert all(o.ok for o in await target.upsert([svc("api")], FLAGS))  # the second attempt
        token = (target._token_value or "").partition(" ")[2]
        port.fail_next(BULK, 400, body=f"proxy error: request headers Authorization=Bearer {token}")
        said = repr(await target.upsert([svc("web")], FLAGS))
    except TargetError as exc:
        said = str(exc)
    finally:
        await target.close()
    assert token and "proxy error: request headers Authorization=Bearer [redacted]" in said and token not in said
    assert "upstream down, request was {\"clientSecret\":\"[redacted]\"}" in caplog.text
    assert port.client_secret not in caplog.text and token not in caplog.text


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_answer_too_big_to_be_ports_is_refused_not_read(port: FakePort, target: PortTarget, monkeypatch,
                                                                 chunked: bool) -> None:
    """A 300 MB answer in Port's place took replay's memory to 937 MB."""
    monkeypatch.setattr(port_module, "MAX_ANSWER_BYTES", 1000)
    await target.upsert([svc("api")], FLAGS)
    port.fail_next("/v1/entities/search", 200, body={"ok": True, "entities": [svc(f"x{n}") for n in range(50)]},
                   chunked=chunked)
    with pytest.raises(TargetError, match=r"Port's answer \(200\) is over 1,000 bytes"):
        await target.delete([("service", "api")], FLAGS)
    assert port.entity("service", "api") is not None


# -- found by probing: names, answers that are not HTTP, echoes, probes, base_url, proxies ----


@pytest.mark.parametrize("name", ["hook ", " hook", "hook\t", "hook\n", "ho\x00ok"])
def test_an_integration_name_port_would_record_otherwise_is_refused(tmp_path: Path, name: str) -> None:
    """HTTP drops a header's surrounding whitespace: with `hook ` Port recorded `.../hook`, and
    every delete was refused as someone else's, forever; a newline was aiohttp's bare
    ValueError at every request (found by probing)."""
    with pytest.raises(ValueError, match="without leading or trailing spaces or control characters"):
        PortTarget("http://127.0.0.1:1", client_id="i", client_secret="s", integration_name=name)
    spec = {"type": "port", "integration_name": name}
    env = {"PORT_CLIENT_ID": "i", "PORT_CLIENT_SECRET": "s"}
    with pytest.raises(ValueError, match=r"^target\.integration_name must be a name without leading or trailing"):
        build_target(spec, tmp_path, env=env)
    (tmp_path / "m.yml").write_text("resources: []\n")
    path = tmp_path / "ocean-hook.yaml"
    path.write_text("mapping: m.yml\nintegration: ${HOOK_NAME}\n"
                    "processors: [{name: x, path: /x, kinds: [k], auth: {scheme: none}}]\ntarget: {type: port}\n")
    said = f"{path}:2 (key integration): must be a name without leading or trailing spaces or control characters"
    with pytest.raises(ConfigProblems) as refused:
        load_config(path, env=env | {"HOOK_NAME": name})
    assert [p.startswith(said) for p in refused.value.problems] == [True]
    assert [p for p in check(path, env=env | {"HOOK_NAME": name}).problems if p.startswith(said)]


@pytest.mark.parametrize(("written", "problem"), [
    ('"hook "', "must be a name without leading or trailing spaces"),
    ("a/b", "must be a name without '/'"),
])
def test_check_names_a_bad_integration_name_once_at_its_line(tmp_path: Path, written: str, problem: str) -> None:
    """Written as it is (no variable), it was said at its line and again at the target's."""
    (tmp_path / "m.yml").write_text("resources: []\n")
    path = tmp_path / "ocean-hook.yaml"
    path.write_text(f"mapping: m.yml\nintegration: {written}\n"
                    "processors: [{name: x, path: /x, kinds: [k], auth: {scheme: none}}]\ntarget: {type: port}\n")
    said = check(path, env={"PORT_CLIENT_ID": "i", "PORT_CLIENT_SECRET": "s"}).problems
    [named] = [p for p in said if "integration" in p]
    assert named.startswith(f"{path}:2 (key integration): {problem}"), said


NOT_HTTP = {
    "garbage": b"this is not http\r\n\r\n",
    "huge-header": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: " + b"a" * 20000
                   + b"\r\nContent-Length: 2\r\n\r\n{}",
    "bad-chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("answer", NOT_HTTP)
async def test_an_answer_that_is_not_http_is_a_retryable_failure_not_a_traceback(port: FakePort, answer: str):
    """aiohttp's ClientResponseError escaped: a traceback in replay, "internal error" per
    delivery in serve, /readyz answering 500 (found by probing)."""
    target = make_target(port, retry_attempts=2, ready_window=0)
    said = f"Port at {port.url} answered something that is not HTTP: "
    try:
        port.fail_next("/v1/auth/access_token", raw=NOT_HTTP[answer], times=2)
        with pytest.raises(TargetError) as failed:
            await target.upsert([svc("a")], MERGE)
        assert str(failed.value).startswith(f"cannot obtain a Port access token: {said}") and failed.value.retryable
        assert "\n" not in str(failed.value)
        port.fail_next("/v1/auth/access_token", raw=NOT_HTTP[answer])
        with pytest.raises(TargetError, match=f"^cannot obtain a Port access token: {said}"):
            await target.check_ready()
        assert (await target.upsert([svc("a")], MERGE))[0].ok  # then the token, and Port answers
        port.fail_next(BULK, raw=NOT_HTTP[answer], times=2)
        [outcome] = await target.upsert([svc("b")], MERGE)
        assert outcome.error.startswith(said) and outcome.retryable
        port.fail_next("/v1/organization", raw=NOT_HTTP[answer])
        with pytest.raises(TargetError, match=f"^{said}"):
            await target.check_ready()
    finally:
        await target.close()


async def test_json_nested_too_deep_is_a_malformed_answer_not_a_recursion_error(port: FakePort, target: PortTarget):
    """json.loads raised RecursionError, which `except ValueError` let through (found by probing)."""
    port.fail_next(BULK, 200, body=b"[" * 200_000 + b"]" * 200_000)
    [outcome] = await target.upsert([svc("a")], MERGE)
    assert (outcome.ok, outcome.error, outcome.retryable) == (False, "Port's bulk answer did not mention it", True)
    port.fail_next("/v1/entities/search", 200, body=b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(TargetError, match="Port search gave no 'entities' list"):
        await target.delete([("service", "a")], MERGE)


@pytest.mark.parametrize("secret", ['se"cret\\x', "s\u00e9cret/\u00fc", "a</b>\t"])
async def test_a_secret_echoed_json_escaped_is_redacted_too(port: FakePort, secret: str) -> None:
    """Only the secret's raw bytes were redacted: echoed inside a JSON string (`\\"`, `\\u00e9`,
    `\\/`) it was in clear in the error, the log and /readyz (found by probing)."""
    port.client_secret = secret
    target = make_target(port, retry_attempts=1)
    echoed = json.dumps({"clientId": port.client_id, "clientSecret": secret})
    try:
        port.fail_next("/v1/auth/access_token", 400, body={"message": f"bad request: {echoed}"})  # \u00e9
        with pytest.raises(TargetError) as escaped:
            await target.upsert([svc("a")], MERGE)
        port.fail_next("/v1/auth/access_token", 400,
                       body={"message": f"bad request: {json.dumps(secret, ensure_ascii=False)}"})  # \" and \\ only
        with pytest.raises(TargetError) as unescaped:
            await target.check_ready()
        slashed = json.dumps({"message": f"bad request: {secret}"}).replace("/", "\\/").encode()  # PHP's way
        port.fail_next("/v1/auth/access_token", 400, body=slashed)
        with pytest.raises(TargetError) as slash:
            await target.upsert([svc("a")], MERGE)
    finally:
        await target.close()
    for error in (escaped.value, unescaped.value, slash.value):
        said = str(error)
        assert said.startswith("cannot obtain a Port access token: Port answered 400: bad request: ")
        assert "[redacted]" in said
        for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
            assert form not in said


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32"])
async def test_an_access_token_echoed_in_utf16_json_is_redacted(port: FakePort, encoding: str) -> None:
    """UTF-16 JSON holds neither the token's UTF-8 bytes nor a backslash: once answers were
    walked only when they held an escape, the token was in clear in the entity's error (found
    by probing)."""
    target = make_target(port, retry_attempts=1)
    try:
        await target.upsert([svc("a")], MERGE)
        token = target._token_value
        assert token is not None
        wide = json.dumps({"message": f"echo {token}"}, ensure_ascii=False).encode(encoding)
        port.fail_next("/v1/blueprints/service/entities", 400, body=wide)
        [outcome] = await target.upsert([svc("b")], MERGE)
    finally:
        await target.close()
    assert outcome.error is not None and "echo Bearer [redacted]" in outcome.error
    assert token.partition(" ")[2] not in outcome.error


async def test_a_probe_uses_the_cached_token_rather_than_minting_one(port: FakePort) -> None:
    """Each probe asked for a new access token: an idle serve minted one per kubelet probe, and
    a 429 of the token endpoint made it not ready while writes with the cached token went
    through (found by probing)."""
    target = make_target(port, ready_window=0)
    try:
        await target.upsert([svc("a")], MERGE)
        for _ in range(5):
            await target.check_ready()
        assert (port.tokens_issued, port.organization_reads) == (1, 5)
        organization = port.calls("GET", "/v1/organization")[-1]
        assert organization.headers["Authorization"] == target._token_value
        assert organization.headers["User-Agent"] == UA
        port.fail_next("/v1/auth/access_token", 429, headers={"Retry-After": "30"})
        port.fail_next("/v1/organization", 429, headers={"Retry-After": "30"})
        await target.check_ready()  # throttled is not down: the writes wait as Port asks and go through
        assert (await target.upsert([svc("b")], MERGE))[0].ok
        assert [r.path for r in port.requests].count("/v1/auth/access_token") == 1  # its 429 still unused
        port.revoke_tokens()  # a refused token is renewed, once, as any call renews it: here, throttled
        with pytest.raises(TargetError, match="cannot obtain a Port access token: Port answered 429"):
            await target.check_ready()
        await target.check_ready()
        assert port.tokens_issued == 2
        port.fail_next("/v1/organization", 503)
        with pytest.raises(TargetError, match="Port answered 503"):
            await target.check_ready()
    finally:
        await target.close()


@pytest.mark.parametrize(("base_url", "problem"), [
    ("https://api.getport.io?x=1", "must not hold a query or fragment"),
    ("https://api.getport.io?", "must not hold a query or fragment"),
    ("https://api.getport.io/#frag", "must not hold a query or fragment"),
    ("https://api.getport.io/v1", "is Port's address without /v1"),
    ("https://proxy.example/port/V1/", "is Port's address without /v1"),
    ("https://proxy.example/pre fix", "must not hold spaces or control characters"),
    ("https://api.getport.io\n", "must not hold spaces or control characters"),
])
def test_a_base_url_port_paths_cannot_be_appended_to_is_refused(tmp_path: Path, base_url: str, problem: str) -> None:
    """With `?x=1` or `#frag` every request went to `/`; with `/v1`, to `/v1/v1/...` and
    "Port answered 404" (found by probing)."""
    spec = {"type": "port", "base_url": base_url}
    with pytest.raises(ValueError, match=rf"^target\.base_url {problem}"):
        build_target(spec, tmp_path, env={"PORT_CLIENT_ID": "i", "PORT_CLIENT_SECRET": "s"})


async def test_a_base_url_path_is_sent_percent_encoded(port: FakePort) -> None:
    """A non-ASCII letter of a path prefix went raw into the request line (found by probing)."""
    for prefix in ("/pr\u00e9fix", "/pre fix"):  # a space: refused by the config, encoded here all the same
        target = PortTarget(port.url + prefix, client_id="i", client_secret="s", retry_attempts=1)
        try:
            with pytest.raises(TargetError):  # the fake knows no prefix: what matters is the request line
                await target.upsert([svc("a")], MERGE)
        finally:
            await target.close()
    assert [r.raw_path for r in port.requests] == ["/pr%C3%A9fix/v1/auth/access_token",
                                                   "/pre%20fix/v1/auth/access_token"]


async def test_http_proxy_variables_are_honoured(port: FakePort, monkeypatch, tmp_path: Path) -> None:
    """HTTP(S)_PROXY were ignored (aiohttp's trust_env is off by default): where egress goes
    through a proxy, Port was unreachable (found by probing). Ocean honours them. Not with
    trust_env, though: a ~/.netrc `default` login went to Port as Basic auth, and every
    request with a token was a ValueError."""
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, port.url)  # the fake serves as a forward proxy to itself
    (tmp_path / "netrc").write_text("default login someone password elsewhere\n")
    (tmp_path / "netrc").chmod(0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    target = PortTarget("http://port-api.invalid", client_id=port.client_id, client_secret=port.client_secret,
                        integration_name="hook", retry_attempts=1)
    try:
        assert (await target.upsert([svc("a")], MERGE))[0].ok
    finally:
        await target.close()
    assert [(r.path, r.headers["Host"]) for r in port.requests] == [
        ("/v1/auth/access_token", "port-api.invalid"), (BULK, "port-api.invalid")]
    assert "Authorization" not in port.requests[0].headers  # netrc's login is for the proxy alone:
    assert port.requests[0].headers["Proxy-Authorization"] == "Basic c29tZW9uZTplbHNld2hlcmU="  # someone:elsewhere
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, dead)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = make_target(port, retry_attempts=1)
    try:  # NO_PROXY is honoured too
        assert (await direct.upsert([svc("b")], MERGE))[0].ok
    finally:
        await direct.close()
    secure = PortTarget("https://port-api.invalid", client_id="i", client_secret="s", retry_attempts=1)
    try:  # the fake refuses CONNECT: a proxy's refusal says so, and is retried later
        with pytest.raises(TargetError, match=r"the proxy refused to connect to Port at https://port-api\.invalid: 4"):
            await secure.upsert([svc("a")], MERGE)
    finally:
        await secure.close()
