"""The fetch stage against real aiohttp servers on 127.0.0.1: retries, redirects, refusals."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ocean_hook.fetch import (
    Fetcher,
    FetchError,
    FetchRefused,
    _describe,
    check_url,
    parse_allowed_host,
    parse_retry_after,
)

TOKEN = "ghp_s3cr3tTokenValue1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(status: int = 200, *, json: object = None, text: str | None = None, **headers: str) -> Reply:
    async def respond(request: web.Request) -> web.StreamResponse:
        if text is not None:
            return web.Response(status=status, text=text, headers=headers)
        return web.json_response(json, status=status, headers=headers)

    return respond


def redirect(location: str, status: int = 302) -> Reply:
    return reply(status, text="", Location=location)


def slow(seconds: float, then: Reply) -> Reply:
    async def respond(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await then(request)

    return respond


def streamed(*chunks: bytes) -> Reply:
    """A chunked body: no Content-Length for the client to trust."""

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    return respond


@dataclass
class Upstream:
    """A scripted third-party API: each path answers its replies in order, repeating the last."""

    port: int = 0
    script: dict[str, list[Reply]] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def on(self, path: str, *replies: Reply) -> str:
        self.script[path] = list(replies)
        return f"{self.base}{path}"

    def hits(self, path: str | None = None) -> int:
        return sum(1 for seen_path, _, _ in self.seen if path in (None, seen_path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, dict(request.headers), time.monotonic()))
        replies = self.script.get(request.path) or [reply(599, text="unscripted")]
        return await (replies.pop(0) if len(replies) > 1 else replies[0])(request)


async def start_upstream(aiohttp_server) -> Upstream:
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    upstream.port = (await aiohttp_server(app)).port
    return upstream


@pytest.fixture
async def api(aiohttp_server) -> Upstream:
    return await start_upstream(aiohttp_server)


@pytest.fixture
async def other(aiohttp_server) -> Upstream:
    """A second local server that is never listed: it must never see a request."""
    return await start_upstream(aiohttp_server)


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with Fetcher(allow_loopback=True, min_wait=0.01, max_wait=2, timeout_seconds=2) as fetcher:
        yield fetcher


# -- success and retries ------------------------------------------------------------------------


async def test_full_resource_is_returned_with_headers_sent(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/repos/o/r/pulls/1", reply(json={"number": 1, "title": "Fix", "labels": ["a"]}))
    result = await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert (result.status, result.gone) == (200, False)
    assert result.data == {"number": 1, "title": "Fix", "labels": ["a"]}
    [(_, headers, _)] = api.seen
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/json"


async def test_429_honours_retry_after_seconds(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", reply(429, json={"message": "slow down"}, **{"Retry-After": "1"}), reply(json=[1]))
    result = await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert result.data == [1]
    assert api.hits() == 2
    assert api.seen[1][2] - api.seen[0][2] >= 0.95


async def test_fractional_retry_after_is_accepted(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", reply(429, text="", **{"Retry-After": "0.3"}), reply(json={"ok": True}))
    assert (await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])).data == {"ok": True}
    assert 0.28 <= api.seen[1][2] - api.seen[0][2] < 1.5


async def test_503_twice_then_success(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", reply(503, text="busy"), reply(503, text="busy"), reply(json={"id": 7}))
    result = await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert result.data == {"id": 7}
    assert api.hits() == 3


async def test_exhausted_retries_are_retryable_with_last_status(api: Upstream) -> None:
    url = api.on("/r", reply(502, text="bad gateway"))
    async with Fetcher(allow_loopback=True, attempts=3, min_wait=0.01, max_wait=0.05) as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert (caught.value.retryable, caught.value.status) == (True, 502)
    assert "gave up after 3 attempts" in str(caught.value)
    assert api.hits() == 3
    async with Fetcher(allow_loopback=True, attempts=1) as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert str(caught.value).endswith("(gave up after 1 attempt)")


async def test_a_wait_longer_than_max_wait_is_not_slept_but_handed_to_the_worker(api: Upstream) -> None:
    """A Retry-After of an hour was cut to max_wait and slept in the worker, which holds the
    delivery's order key meanwhile, at every attempt (found by probing): now the fetch gives up at
    once, retryably, with the wait asked for, and the worker schedules the next attempt."""
    url = api.on("/r", reply(429, text="", **{"Retry-After": "3600"}), reply(json=1))
    async with Fetcher(allow_loopback=True, min_wait=0.01, max_wait=0.2) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert time.monotonic() - started < 1
    assert (caught.value.retryable, caught.value.status, caught.value.retry_after) == (True, 429, 3600)
    assert api.hits() == 1
    assert "asked to wait 3600 s, longer than the 0.2 s a fetch waits" in str(caught.value)
    assert "gave up after" not in str(caught.value)


async def test_a_wait_of_max_wait_exactly_is_slept(api: Upstream) -> None:
    url = api.on("/r", reply(503, text="", **{"Retry-After": "0.3"}), reply(json=1))
    async with Fetcher(allow_loopback=True, min_wait=0.01, max_wait=0.3) as fetcher:
        assert (await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])).data == 1
    assert api.hits() == 2 and api.seen[1][2] - api.seen[0][2] >= 0.28


def github_rate_limit(status: int = 403, *, left: int = 0, reset_in: float = 3600, **headers: str) -> Reply:
    """GitHub's rate limit answer: its quota headers, the reset in epoch seconds."""
    quota = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(left),
             "X-RateLimit-Reset": str(int(time.time() + reset_in)), "X-RateLimit-Resource": "core"}
    message = "API rate limit exceeded" if left == 0 else "You have exceeded a secondary rate limit"
    return reply(status, json={"message": message}, **quota, **headers)


@pytest.mark.parametrize("status", [403, 429])
async def test_a_spent_rate_limit_waits_until_its_reset(api: Upstream, fetcher: Fetcher, status: int) -> None:
    """A 403 with X-RateLimit-Remaining: 0 (GitHub's primary rate limit) was final: the delivery
    was dead-lettered at once; and X-RateLimit-Reset was read by nobody, a 429's neither."""
    url = api.on("/r", github_rate_limit(status, reset_in=2), reply(json={"id": 1}))
    assert (await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])).data == {"id": 1}
    assert api.hits() == 2
    assert api.seen[1][2] - api.seen[0][2] >= 0.9  # until the reset (1 to 2 s away), not the 0.01 s backoff


@pytest.mark.parametrize("status", [403, 429])
async def test_a_spent_rate_limit_resetting_later_than_max_wait_goes_to_the_worker(api: Upstream, fetcher: Fetcher,
                                                                                   status: int) -> None:
    url = api.on("/r", github_rate_limit(status, reset_in=600), reply(json=1))
    with pytest.raises(FetchError) as caught:
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert (caught.value.retryable, caught.value.status) == (True, status)
    assert caught.value.retry_after is not None and 590 < caught.value.retry_after <= 600
    assert api.hits() == 1


async def test_a_secondary_rate_limit_403_honours_retry_after(api: Upstream, fetcher: Fetcher) -> None:
    """GitHub's secondary rate limits: a 403 with Retry-After, quota left."""
    url = api.on("/r", github_rate_limit(403, left=4000, **{"Retry-After": "1"}), reply(json=[2]))
    assert (await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])).data == [2]
    assert api.hits() == 2
    assert api.seen[1][2] - api.seen[0][2] >= 0.95  # Retry-After, not the reset an hour away


@pytest.mark.parametrize("answer", [
    reply(403, json={"message": "Resource not accessible by integration"}),
    github_rate_limit(403, left=4999),  # GitHub's quota headers come with every answer
])
async def test_any_other_403_is_final(api: Upstream, fetcher: Fetcher, answer: Reply) -> None:
    url = api.on("/r", answer, reply(json=1))
    with pytest.raises(FetchError) as caught:
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert (caught.value.retryable, caught.value.status, caught.value.retry_after) == (False, 403, None)
    assert api.hits() == 1


async def test_the_reset_of_a_quota_left_is_no_wait_asked(api: Upstream, fetcher: Fetcher) -> None:
    """A 502 or a 429 with quota left carries the hourly reset too: backoff, not an hour's wait."""
    url = api.on("/r", github_rate_limit(502, left=4999), github_rate_limit(429, left=10), reply(json=3))
    assert (await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])).data == 3
    assert api.hits() == 3


async def test_408_is_retried(api: Upstream, fetcher: Fetcher) -> None:
    """A 408 was final (the Port target retries it)."""
    url = api.on("/r", reply(408, text="request timeout"), reply(json={"id": 8}))
    assert (await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])).data == {"id": 8}
    assert api.hits() == 2


@pytest.mark.parametrize("status", [404, 410])
async def test_404_and_410_mean_gone(api: Upstream, fetcher: Fetcher, status: int) -> None:
    url = api.on("/r", reply(status, json={"message": "Not Found"}))
    result = await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert (result.status, result.gone, result.data) == (status, True, None)
    assert api.hits() == 1


async def test_401_is_final_and_never_shows_the_token(api: Upstream, fetcher: Fetcher) -> None:
    # The server echoes the credentials in its body, as a careless API might.
    url = api.on("/r", reply(401, text=f"Bad credentials: Bearer {TOKEN}"))
    with pytest.raises(FetchError) as caught:
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert (caught.value.retryable, caught.value.status) == (False, 401)
    assert "HTTP 401" in str(caught.value) and "Bad credentials" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert api.hits() == 1


async def test_connection_refused_is_retried_then_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Fetcher(allow_loopback=True, attempts=2, min_wait=0.01, max_wait=0.05) as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.get_json(
                f"http://127.0.0.1:{port}/r?token={TOKEN}", headers=AUTH, allowed_hosts=[f"127.0.0.1:{port}"]
            )
    assert (caught.value.retryable, caught.value.status) == (True, None)
    assert "could not fetch" in str(caught.value) and TOKEN not in str(caught.value)


async def test_timeout_is_retried(api: Upstream) -> None:
    url = api.on("/r", slow(1.0, reply(json={})), reply(json={"late": False}))
    async with Fetcher(allow_loopback=True, timeout_seconds=0.2, min_wait=0.01) as fetcher:
        result = await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])
    assert result.data == {"late": False} and api.hits() == 2


# -- bodies -----------------------------------------------------------------------------------


async def test_invalid_json_is_a_final_error(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", reply(text="<html>oops</html>"))
    with pytest.raises(FetchError, match="is not valid JSON") as caught:
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert caught.value.retryable is False and api.hits() == 1


async def test_empty_body_is_an_error_but_204_is_none(api: Upstream, fetcher: Fetcher) -> None:
    empty = api.on("/empty", reply(text=""))
    with pytest.raises(FetchError, match="is empty, expected JSON"):
        await fetcher.get_json(empty, headers={}, allowed_hosts=[api.host])
    no_content = api.on("/nc", reply(204, text=""))
    assert (await fetcher.get_json(no_content, headers={}, allowed_hosts=[api.host])).data is None


async def test_oversized_bodies_are_refused(api: Upstream) -> None:
    declared = api.on("/declared", reply(json="x" * 5000))
    chunked = api.on("/chunked", streamed(*[b" " * 1000] * 10, b"[]"))
    async with Fetcher(allow_loopback=True, max_response_bytes=4000) as fetcher:
        for url in (declared, chunked):
            with pytest.raises(FetchError, match="larger than max_response_bytes") as caught:
                await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])
            assert caught.value.retryable is False
    assert api.hits() == 2


async def test_body_under_the_limit_streams_in_fine(api: Upstream) -> None:
    url = api.on("/chunked", streamed(b'{"items": [', b"1, 2", b"]}"))
    async with Fetcher(allow_loopback=True, max_response_bytes=4000) as fetcher:
        assert (await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])).data == {"items": [1, 2]}


# -- redirects --------------------------------------------------------------------------------


async def test_same_host_redirect_is_followed(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/old", redirect("/new?page=2", 301))
    api.on("/new", reply(json={"moved": True}))
    result = await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert result.data == {"moved": True}
    assert [path for path, _, _ in api.seen] == ["/old", "/new"]
    assert api.seen[1][1]["Authorization"] == f"Bearer {TOKEN}"


async def test_redirect_to_another_allowed_host_is_followed(api: Upstream, other: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", redirect(other.on("/there", reply(json=[42]))))
    result = await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host, other.host])
    assert result.data == [42] and other.hits() == 1


@pytest.mark.parametrize(
    "location",
    [
        "{other}/steal",
        "http://127.0.0.2:{port}/steal",
        "http://evil.example/steal",
        "//evil.example/steal",
        "http://user@127.0.0.1:{port}/steal",
        "http://127.0.0.1:{port}@evil.example/steal",
        "ftp://127.0.0.1:{port}/steal",
        "http://127.0.0.1:{port}\\@evil.example/",
    ],
)
async def test_redirect_to_an_unlisted_place_is_refused(
    api: Upstream, other: Upstream, fetcher: Fetcher, location: str
) -> None:
    other.on("/steal", reply(json="stolen"))
    url = api.on("/r", redirect(location.format(other=other.base, port=api.port)))
    with pytest.raises(FetchRefused, match="redirect from") as caught:
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert TOKEN not in str(caught.value)
    assert api.hits() == 1 and other.hits() == 0


async def test_redirect_loop_stops_after_three(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/loop", redirect("/loop"))
    with pytest.raises(FetchError, match="more than 3 redirects") as caught:
        await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])
    assert (caught.value.retryable, caught.value.status) == (False, 302)
    assert api.hits() == 4


async def test_redirect_without_location_is_an_error(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", reply(302, text=""))
    with pytest.raises(FetchError, match="without a Location header"):
        await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])


def test_https_to_http_redirect_is_refused() -> None:
    # No TLS server here: exercise the one redirect rule that needs https directly.
    from ocean_hook.fetch import _allowed, _Redirect

    fetcher = Fetcher()
    with pytest.raises(FetchRefused, match="downgrades https to http"):  # even with http on 80 allowed
        fetcher._redirect_target(
            check_url("https://api.github.com/a", ["api.github.com"]),
            _Redirect(301, "http://api.github.com/b"),
            _allowed(("api.github.com", "api.github.com:80")),
        )


# -- refusals: nothing is sent ----------------------------------------------------------------


async def test_disallowed_host_is_refused_without_a_request(api: Upstream, fetcher: Fetcher) -> None:
    url = api.on("/r", reply(json={}))
    with pytest.raises(FetchRefused, match=r"host '127\.0\.0\.1:\d+' is not in allowed_hosts"):
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=["api.github.com"])
    assert api.hits() == 0


@pytest.mark.parametrize(
    "template",
    ["http://user@{api}/r", "http://user:pw@{api}/r", "http://{api}@{other}/r", "http://{api}:@{other}/r"],
)
async def test_userinfo_is_refused(api: Upstream, other: Upstream, fetcher: Fetcher, template: str) -> None:
    url = template.format(api=api.host, other=other.host)
    with pytest.raises(FetchRefused, match="userinfo"):
        await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert api.hits() == 0 and other.hits() == 0


async def test_other_port_is_refused(api: Upstream, other: Upstream, fetcher: Fetcher) -> None:
    with pytest.raises(FetchRefused, match="not in allowed_hosts"):
        await fetcher.get_json(f"{other.base}/r", headers=AUTH, allowed_hosts=[api.host])
    with pytest.raises(FetchRefused, match="not in allowed_hosts"):  # no port listed: only port 80
        await fetcher.get_json(f"{api.base}/r", headers=AUTH, allowed_hosts=["127.0.0.1"])
    assert api.hits() == 0 and other.hits() == 0


async def test_loopback_needs_allow_loopback_even_when_listed(api: Upstream) -> None:
    url = api.on("/r", reply(json={}))
    async with Fetcher() as fetcher:
        with pytest.raises(FetchRefused, match="needs allow_loopback"):
            await fetcher.get_json(url, headers=AUTH, allowed_hosts=[api.host])
    assert api.hits() == 0


async def test_base_url_resolves_relative_urls_and_allows_its_host(api: Upstream, fetcher: Fetcher) -> None:
    api.on("/api/v4/projects/1", reply(json={"id": 1}))
    result = await fetcher.get_json("projects/1", headers={}, allowed_hosts=[], base_url=f"{api.base}/api/v4")
    assert result.data == {"id": 1}
    with pytest.raises(FetchRefused):
        await fetcher.get_json("/r", headers={}, allowed_hosts=[api.host])  # relative, no base_url


async def test_session_is_lazy_and_can_be_closed_and_reused(api: Upstream) -> None:
    url = api.on("/r", reply(json=1))
    fetcher = Fetcher(allow_loopback=True)
    await fetcher.close()  # nothing opened yet: a no-op
    assert (await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])).data == 1
    await fetcher.close()
    assert (await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])).data == 1
    await fetcher.close()


# -- the URL rules, without a network ----------------------------------------------------------

GITHUB = ["api.github.com"]


@pytest.mark.parametrize(
    "url",
    [
        "https://api.github.com/repos/o/r",
        "HTTPS://API.GitHub.COM/repos",
        "https://api.github.com./repos",
        "https://api.github.com:443/repos",
        "https://api.github.com/search?q=a%20b#frag",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert check_url(url, GITHUB).raw_host.rstrip(".") == "api.github.com"


def test_a_bare_entry_admits_https_only_and_an_explicit_port_admits_http() -> None:
    """A payload could pick http:// for an allowed host: its fetch headers (a token) then went
    unencrypted."""
    with pytest.raises(FetchRefused, match=r"plain http to 'api\.github\.com': its allowed_hosts entry admits "
                                           r"https only \(write api\.github\.com:80 to allow http"):
        check_url("http://api.github.com/repos/o/r", GITHUB)
    assert check_url("http://api.github.com/repos/o/r", ["api.github.com:80"]).scheme == "http"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://api.github.com@evil.com/", "userinfo"),
        ("https://api.github.com:x@evil.com/", "userinfo"),
        ("https://evil.com/", "not in allowed_hosts"),
        ("https://api.github.com.evil.com/", "not in allowed_hosts"),
        ("https://github.com/", "not in allowed_hosts"),
        ("https://api.github.com:8080/", r"'api\.github\.com:8080' is not in allowed_hosts"),
        ("http://api.github.com:443/", "not in allowed_hosts"),
        ("https://api.github.com\\@evil.com/", "backslash"),
        ("https://api.github.com\\evil.com/", "backslash"),
        ("https://api.github.com /x", "whitespace"),
        ("https://api.github.com/x\r\nX-Injected: 1", "whitespace"),
        ("https://api.github.com\t/", "whitespace"),
        ("https://api.github.com\x00/", "control"),
        ("https://api.github.com\u200b/", "control"),
        ("https://api%2egithub.com/", "percent-encoded"),
        ("https://%61pi.github.com/", "percent-encoded"),
        ("https://\u0430pi.github.com/", "xn--"),  # Cyrillic a
        ("ftp://api.github.com/", "only absolute http"),
        ("file:///etc/passwd", "only absolute http"),
        ("javascript:alert(1)", "only absolute http"),
        ("//api.github.com/x", "only absolute http"),
        ("https:api.github.com/x", "only absolute http"),
        ("https:///x", "only absolute http"),
        ("https://api.github.com:99999/", "not a valid URL"),
    ],
)
def test_refused_urls(url: str, why: str) -> None:
    with pytest.raises(FetchRefused, match=why):
        check_url(url, GITHUB)


def test_idna_entries_compare_in_encoded_form() -> None:
    assert check_url("https://b\u00fccher.example/x", ["xn--bcher-kva.example"]).raw_host == "xn--bcher-kva.example"
    assert check_url("https://xn--bcher-kva.example/x", ["B\u00dcCHER.example"])


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://localhost/", "localhost"),
        ("https://api.localhost/", "api.localhost"),
        ("https://10.1.2.3/", "10.1.2.3"),
        ("http://169.254.169.254:80/latest/meta-data", "169.254.169.254:80"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("https://127.1/", "127.1"),
        ("https://2130706433/", "2130706433"),
    ],
)
def test_local_addresses_need_allow_loopback(url: str, entry: str) -> None:
    with pytest.raises(FetchRefused, match="needs allow_loopback"):
        check_url(url, [entry])
    assert check_url(url, [entry], allow_loopback=True)


def test_public_ip_literal_may_be_listed() -> None:
    assert check_url("https://8.8.8.8/x", ["8.8.8.8"]).raw_host == "8.8.8.8"
    with pytest.raises(FetchRefused, match="needs allow_loopback"):  # TEST-NET: not global either
        check_url("https://203.0.113.9/x", ["203.0.113.9"])


@pytest.mark.parametrize("entry", ["", "https://api.github.com", "api.github.com/x", "a b", "h:1:2", "h:port", "u@h"])
def test_bad_allowed_host_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="is not a host or host:port"):
        parse_allowed_host(entry)
    with pytest.raises(FetchRefused, match="allowed_hosts entry"):
        check_url("https://api.github.com/", [entry])


@pytest.mark.parametrize(
    ("entry", "shown"),
    [("API.GitHub.com.", "api.github.com"), ("h:8443", "h:8443"), ("::1", "[::1]"), ("[::1]:81", "[::1]:81")],
)
def test_allowed_host_entries_are_normalised(entry: str, shown: str) -> None:
    assert str(parse_allowed_host(entry)) == shown


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1", 1.0),
        (" 0.25 ", 0.25),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: go now
        (None, None),
        ("-3", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=1445412480.0) == seconds


@pytest.mark.parametrize("relative", ["../../../echo/up", "projects/1/../../../../admin", "projects/%2e%2e/%2E%2E/x",
                                      "./projects"])
async def test_a_relative_url_cannot_climb_out_of_base_url(api: Upstream, fetcher: Fetcher, relative: str) -> None:
    """`../../admin` was fetched at the host's root, with the fetch headers."""
    with pytest.raises(FetchRefused, match=r"a relative URL may not hold '\.' or '\.\.' segments"):
        await fetcher.get_json(relative, headers=AUTH, allowed_hosts=[], base_url=f"{api.base}/api/v4")
    assert api.hits() == 0


@pytest.mark.parametrize(("body", "problem"), [
    ('{"v": NaN}', "NaN is not a JSON number"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
])
async def test_fetched_json_is_held_to_the_same_standard_as_payloads(api: Upstream, fetcher: Fetcher, body: str,
                                                                     problem: str) -> None:
    """Deep nesting was a RecursionError retried as a network failure; NaN was taken."""
    url = api.on("/r", reply(text=body, content_type="application/json"))
    with pytest.raises(FetchError, match=f"is not valid JSON: {problem}") as caught:
        await fetcher.get_json(url, headers={}, allowed_hosts=[api.host])
    assert caught.value.retryable is False and api.hits() == 1


async def test_errors_quote_no_query_string_and_no_header_value(api: Upstream, other: Upstream,
                                                               fetcher: Fetcher) -> None:
    """aiohttp's own errors quote the whole URL; a refused redirect quoted its Location."""
    url = URL("http://127.0.0.1/garbage?private_token=QSECRET123")
    error = aiohttp.ClientResponseError(aiohttp.RequestInfo(url, "GET", CIMultiDict(), url), (), status=400,
                                        message="Invalid character in chunk size")
    assert "QSECRET123" in str(error)
    assert _describe(error) == ("ClientResponseError: 400, message='Invalid character in chunk size', "
                                "url='http://127.0.0.1/garbage'")
    leaky = api.on("/leak", redirect(f"{other.base}/{TOKEN}/x"))
    with pytest.raises(FetchRefused) as refused:
        await fetcher.get_json(leaky, headers=AUTH, allowed_hosts=[api.host])
    assert TOKEN not in str(refused.value) and "***" in str(refused.value)
