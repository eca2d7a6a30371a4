"""The fetch stage: get the complete, latest resource from a third-party API.

The URL comes out of a webhook payload, so whoever can POST to us chooses it. This module makes
sure such a URL can only ever reach a host the config author listed in ``allowed_hosts``:

- Only absolute ``http``/``https`` URLs. No userinfo (``user@host``, ``https://good@evil/``), no
  backslashes, whitespace, control or invisible format characters, no ``%`` in the authority.
- Hosts are compared exactly (case-insensitive, one trailing dot ignored) in IDNA-encoded form, the
  form that is actually resolved, so a homograph (a Cyrillic letter) never equals its Latin look-alike.
- An entry ``host`` admits only https on port 443 (a payload must not pick plain http and send the
  fetch headers unencrypted); ``host:port`` admits that port, either scheme. ``base_url``'s host
  is admitted with its own scheme. IPv6 entries are written ``::1`` or ``[::1]:8080``.
- A relative URL extends ``base_url``'s path and may not climb out of it (no ``.``/``..`` segments).
- ``allowed_hosts`` is authoritative, with one extra guard: a loopback, private, link-local or other
  non-global IP literal, and ``localhost``, is refused even when listed unless the Fetcher was made
  with ``allow_loopback=True`` (tests, local mocks). So ``169.254.169.254`` in a copied config cannot
  silently expose a cloud metadata endpoint. Host *names* are not resolved before the check:
  listing a name means trusting whatever it resolves to.
- The URL object that was checked is the one requested; redirects are never followed by aiohttp.
  At most three are followed here, each ``Location`` checked like the first URL, and an https to
  http downgrade is refused. Headers are sent on redirects only to hosts that are also allowed.

Error messages never contain request header values (tokens) nor the URL's query string, and
answers are JSON as payloads are (`jsontext`: no NaN, no nesting past Python's limit).
"""

from __future__ import annotations

import copy
import email.utils
import functools
import ipaddress
import math
import re
import socket
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from multidict import CIMultiDict
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random
from yarl import URL

from ocean_hook import __version__, jsontext
from ocean_hook.bodies import read_at_most

MiB = 1024 * 1024
MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_GONE_STATUSES = frozenset({404, 410})
#: worth another attempt, as for the Port target (`targets/port.py` RETRYABLE_STATUSES), and every 5xx
_RETRYABLE_STATUSES = frozenset({408, 429})
#: rate limits: GitHub answers 403 (primary and secondary limits), others 429
_RATE_LIMIT_STATUSES = frozenset({403, 429})
_EMPTY_STATUSES = frozenset({204, 205})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SNIPPET_BYTES = 300


class FetchRefused(Exception):
    """The URL may not be fetched (host not allowed, unsafe form); nothing was sent."""


class FetchError(Exception):
    """The fetch was attempted and failed.

    ``retryable`` tells the worker whether the delivery is worth retrying later (408, 429, a rate
    limit's 403, 5xx, network); ``retry_after`` is the wait the server asked for in seconds, when it
    gave one (``Retry-After``, or a spent rate limit's ``X-RateLimit-Reset``): the worker schedules
    the delivery's next attempt no sooner.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass
class FetchResult:
    """A fetched resource; ``gone`` (404/410) means it was deleted and ``data`` is None."""

    status: int
    data: Any
    gone: bool = False
    #: the answer's bytes, to give another asker of one delivery its own `data` (`for_one_delivery`)
    body: bytes | None = field(default=None, repr=False, compare=False)

    def again(self) -> FetchResult:
        """The same answer with `data` of its own, read again from the bytes: whoever had the
        first may have changed it (Ocean's processors do), and a deep copy of a deep answer
        fails where reading it does not."""
        data = jsontext.loads(self.body) if self.body is not None else self.data
        return FetchResult(self.status, data, self.gone, self.body)


# -- URL safety -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowedHost:
    """One ``allowed_hosts`` entry. ``port=None`` admits only ``scheme``'s default port, and an
    entry's scheme is https: a payload must not pick plain http for a host whose fetch headers
    carry a token. ``host:80`` (any explicit port) admits either scheme; ``base_url`` gives its own."""

    host: str
    port: int | None = None
    scheme: str = "https"

    def admits(self, host: str, port: int, scheme: str) -> bool:
        if self.port is not None:
            return self.host == host and port == self.port
        return self.host == host and scheme == self.scheme and port == _DEFAULT_PORTS[scheme]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def is_http_url(text: Any) -> bool:
    """An absolute http(s) URL with a host and, if any, a valid port: what a fetch or Port
    `base_url` and `replay --to` must be, checked when read rather than at first use."""
    if not isinstance(text, str):
        return False
    try:
        parts = urlsplit(text)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # an unclosed bracket, or a port that is not one
        return False


def parse_allowed_host(entry: str) -> AllowedHost:
    """Parse ``host``, ``host:port``, ``::1`` or ``[::1]:port``; ValueError names a bad entry.

    Config loaders call this to reject a bad entry at load time rather than at the first event.
    """
    problem = ValueError(f"allowed_hosts entry {entry!r} is not a host or host:port")
    if not entry or _unsafe_char(entry) or any(c in entry for c in "/@?#%"):
        raise problem
    try:
        return AllowedHost(str(ipaddress.ip_address(entry)))
    except ValueError:
        pass
    try:
        parsed = URL(f"http://{entry}")
    except ValueError:
        raise problem from None
    if not parsed.raw_host:
        raise problem
    return AllowedHost(_canonical_host(parsed.raw_host), parsed.explicit_port)


def check_url(url: str, allowed_hosts: Sequence[str], *, allow_loopback: bool = False) -> URL:
    """The parsed URL to request, or FetchRefused saying which rule it broke."""
    return _check(url, _allowed(tuple(allowed_hosts)), allow_loopback)


@functools.lru_cache(maxsize=256)
def _allowed(entries: tuple[str, ...]) -> frozenset[AllowedHost]:
    try:
        return frozenset(parse_allowed_host(entry) for entry in entries)
    except ValueError as error:
        raise FetchRefused(str(error)) from None


def _check(url: str, allowed: frozenset[AllowedHost], allow_loopback: bool) -> URL:
    def refuse(why: str) -> FetchRefused:
        return FetchRefused(f"refusing to fetch {_shown(url)}: {why}")

    if _unsafe_char(url):
        raise refuse("it contains whitespace, a backslash or a control character")
    authority = _authority(url)
    if "@" in authority:
        raise refuse("URLs with userinfo (user@host) are not allowed")
    if "%" in authority:
        raise refuse("percent-encoded hosts are not allowed")
    try:
        parsed = URL(url)
    except ValueError as error:
        raise refuse(f"it is not a valid URL ({error})") from None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.raw_host:
        raise refuse("only absolute http:// and https:// URLs can be fetched")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise refuse("URLs with userinfo (user@host) are not allowed")
    host = _canonical_host(parsed.raw_host)
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[parsed.scheme]
    if not any(entry.admits(host, port, parsed.scheme) for entry in allowed):
        if parsed.scheme == "http" and port == 80 and any(entry.admits(host, 443, "https") for entry in allowed):
            raise refuse(f"plain http to {host!r}: its allowed_hosts entry admits https only (write "
                         f"{host}:{port} to allow http; fetch headers would travel unencrypted)")
        listed = ", ".join(sorted(map(str, allowed))) or "nothing"
        shown = AllowedHost(host, parsed.explicit_port if port != _DEFAULT_PORTS[parsed.scheme] else None)
        raise refuse(f"host {str(shown)!r} is not in allowed_hosts ({listed})")
    if not allow_loopback and is_local_host(host):
        raise refuse(f"host {host!r} is a loopback, private or other non-public address (needs allow_loopback: "
                     "`fetch: {allow_loopback: true}` at the top of the config)")
    return parsed


def _unsafe_char(text: str) -> bool:
    return any(c == "\\" or c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _authority(url: str) -> str:
    """The raw authority text, before any parser normalises it (for '@' and '%' checks)."""
    rest = _SCHEME.sub("", url, count=1)
    if not rest.startswith("//"):
        return ""
    return re.split(r"[/?#]", rest[2:], maxsplit=1)[0]


def _canonical_host(raw_host: str) -> str:
    host = raw_host.lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return URL.build(scheme="http", host=host).raw_host or host


def is_local_host(host: str) -> bool:
    """localhost, or an address that is not global (loopback, private, link-local...)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _ip_literal(host)
    return address is not None and not address.is_global


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Also the legacy forms a resolver accepts: ``127.1``, ``0x7f000001``, ``2130706433``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _shown(url: str | URL) -> str:
    """The URL as error messages show it: no query string (tokens live there), bounded length."""
    text = str(url).split("?", 1)[0].split("#", 1)[0]
    return repr(text if len(text) <= 200 else text[:200] + "...")


# -- Retry-After ------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta seconds, fractions accepted, or an HTTP date).

    None when absent or unreadable, so the caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, time.time() if now is None else now)
    else:
        if seconds < 0:
            return None
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Redirect:
    status: int
    location: str | None


class Fetcher:
    """One aiohttp session per run, shared by every fetch; use ``async with`` or ``await close()``."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        attempts: int = 4,
        min_wait: float = 0.5,
        max_wait: float = 30.0,
        max_response_bytes: int = 20 * MiB,
        allow_loopback: bool = False,
    ) -> None:
        if attempts < 1 or timeout_seconds <= 0 or max_response_bytes < 1 or not 0 <= min_wait <= max_wait:
            raise ValueError("Fetcher needs attempts >= 1, timeout > 0, 0 <= min_wait <= max_wait")
        self.timeout_seconds = timeout_seconds
        self.attempts = attempts
        self.min_wait = min_wait
        self.max_wait = max_wait
        self.max_response_bytes = max_response_bytes
        self.allow_loopback = allow_loopback
        self._backoff = wait_exponential(multiplier=min_wait, max=max_wait) + wait_random(0, min_wait)
        self._session: aiohttp.ClientSession | None = None
        self._answers: dict[Any, FetchResult] | None = None  # see for_one_delivery

    def for_one_delivery(self) -> Fetcher:
        """This fetcher (its session, its settings) for one delivery's processing: a URL asked
        for again, by the next resource of the mapping, say, is answered with the first answer.
        One request where there were as many as resources (each spending the API's rate limit),
        and every resource mapped from the same version of the resource. Never closed: the
        session is this fetcher's."""
        self._client()
        view = copy.copy(self)
        view._answers = {}
        return view

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop. No cookies: hosts must not share state."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def get_json(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        allowed_hosts: Sequence[str],
        base_url: str | None = None,
    ) -> FetchResult:
        """GET ``url`` (relative ones are appended to ``base_url``, whose host is also allowed).

        Raises FetchRefused before sending anything, or FetchError after retries.
        """
        key = (url, tuple(headers.items()), tuple(allowed_hosts), base_url)
        if self._answers is not None and key in self._answers:
            return self._answers[key].again()
        answer = await self._get_json(url, headers=headers, allowed_hosts=allowed_hosts, base_url=base_url)
        if self._answers is not None:
            self._answers[key] = answer
        return answer

    async def _get_json(
        self, url: str, *, headers: Mapping[str, str], allowed_hosts: Sequence[str], base_url: str | None
    ) -> FetchResult:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retry_here),
            reraise=True,
        )
        try:
            allowed = _allowed(tuple(allowed_hosts)) | self._base_host(base_url)
            target = _check(_absolute(url, base_url), allowed, self.allow_loopback)
            return await retrying(self._follow, target, _request_headers(headers), allowed)
        except FetchError as error:
            raise self._final(error, headers) from error.__cause__
        except FetchRefused as refused:  # a redirect's Location may quote a token, too
            raise FetchRefused(_scrub(str(refused), headers.values())) from None

    def _base_host(self, base_url: str | None) -> frozenset[AllowedHost]:
        if base_url is None:
            return frozenset()
        try:
            parsed = URL(base_url)
        except ValueError:
            parsed = URL()
        host = parsed.raw_host
        if (
            parsed.scheme not in _DEFAULT_PORTS
            or not host
            or parsed.raw_user is not None
            or _unsafe_char(base_url)
            or "%" in _authority(base_url)
        ):
            raise FetchRefused(f"base_url {_shown(base_url)} is not a plain http(s) URL")
        return frozenset({AllowedHost(_canonical_host(host), parsed.explicit_port, parsed.scheme)})

    def _retry_here(self, error: BaseException) -> bool:
        """Retryable, and not asked to wait longer than max_wait: such a wait is not slept in the
        worker, which holds the delivery's order key meanwhile; the FetchError's ``retry_after``
        goes up to the worker, which schedules the delivery's next attempt no sooner."""
        return isinstance(error, FetchError) and error.retryable and not self._waits_too_long(error)

    def _waits_too_long(self, error: FetchError) -> bool:
        return error.retry_after is not None and error.retry_after > self.max_wait

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when given (at most max_wait: see `_retry_here`), else jittered backoff."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, FetchError) and error.retry_after is not None:
            return min(error.retry_after, self.max_wait)
        return min(self._backoff(state), self.max_wait)

    def _final(self, error: FetchError, headers: Mapping[str, str]) -> FetchError:
        message = str(error)
        if error.retryable and error.retry_after is not None and self._waits_too_long(error):
            message += (f" (the server asked to wait {math.ceil(error.retry_after)} s, longer than the "
                        f"{self.max_wait:g} s a fetch waits: the delivery's next attempt waits instead, as long "
                        "as the processor's max_retry_delay_seconds allows)")
        elif error.retryable:
            message += f" (gave up after {self.attempts} attempt{'s' if self.attempts != 1 else ''})"
        return FetchError(
            _scrub(message, headers.values()),
            retryable=error.retryable,
            status=error.status,
            retry_after=error.retry_after,
        )

    async def _follow(self, url: URL, headers: CIMultiDict[str], allowed: frozenset[AllowedHost]) -> FetchResult:
        """One attempt: the request and up to MAX_REDIRECTS redirects, each checked like the first."""
        for _ in range(MAX_REDIRECTS + 1):
            outcome = await self._request(url, headers)
            if isinstance(outcome, FetchResult):
                return outcome
            url = self._redirect_target(url, outcome, allowed)
        raise FetchError(
            f"more than {MAX_REDIRECTS} redirects, the last to {_shown(url)}",
            retryable=False,
            status=outcome.status,
        )

    def _redirect_target(self, current: URL, redirect: _Redirect, allowed: frozenset[AllowedHost]) -> URL:
        if not redirect.location:
            raise FetchError(
                f"HTTP {redirect.status} from {_shown(current)} without a Location header",
                retryable=False,
                status=redirect.status,
            )
        try:
            target = _check(_resolve(current, redirect.location), allowed, self.allow_loopback)
        except FetchRefused as error:
            raise FetchRefused(f"redirect from {_shown(current)}: {error}") from None
        if current.scheme == "https" and target.scheme == "http":
            raise FetchRefused(f"redirect from {_shown(current)} downgrades https to http")
        return target

    async def _request(self, url: URL, headers: CIMultiDict[str]) -> FetchResult | _Redirect:
        try:
            async with self._client().get(url, headers=headers, allow_redirects=False) as response:
                if response.status in _REDIRECT_STATUSES:
                    return _Redirect(response.status, response.headers.get("Location"))
                if 200 <= response.status < 300:
                    body = await self._body(response, url)
                    return FetchResult(response.status, self._json(body, url, response.status), body=body)
                return await _failure(response, url)
        except TimeoutError:
            raise FetchError(
                f"fetching {_shown(url)} timed out after {self.timeout_seconds:g} s", retryable=True
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise FetchError(f"could not fetch {_shown(url)}: {_describe(error)}", retryable=True) from error
        except (aiohttp.ClientError, ValueError) as error:
            raise FetchError(f"could not fetch {_shown(url)}: {_describe(error)}", retryable=False) from error

    async def _body(self, response: aiohttp.ClientResponse, url: URL) -> bytes | None:
        """The answer's bytes; None for an answer that is empty by its status (204, 205)."""
        if response.status in _EMPTY_STATUSES:
            return None
        return await self._read_capped(response, url)

    @staticmethod
    def _json(body: bytes | None, url: URL, status: int) -> Any:
        if body is None:
            return None
        if not body.strip():
            raise FetchError(f"response from {_shown(url)} is empty, expected JSON", retryable=False, status=status)
        try:
            return jsontext.loads(body)
        except ValueError as error:  # JsonProblem too: NaN, nested too deeply, a lone surrogate
            raise FetchError(
                f"response from {_shown(url)} is not valid JSON: {error}", retryable=False, status=status
            ) from None

    async def _read_capped(self, response: aiohttp.ClientResponse, url: URL) -> bytes:
        """Refuse early on Content-Length, then count what actually arrives (it may be compressed)."""
        body = await read_at_most(response.content, self.max_response_bytes, response.content_length)
        if body is None:
            raise FetchError(
                f"response from {_shown(url)} is larger than max_response_bytes ({self.max_response_bytes})",
                retryable=False,
                status=response.status,
            )
        return body


async def _failure(response: aiohttp.ClientResponse, url: URL) -> FetchResult:
    """404/410 mean deleted; 408, 429, 5xx and a rate limit's 403 are worth retrying; every other
    status is final."""
    status = response.status
    if status in _GONE_STATUSES:
        return FetchResult(status, None, gone=True)
    snippet = " ".join((await response.content.read(_SNIPPET_BYTES)).decode("utf-8", "replace").split())
    message = f"HTTP {status} from {_shown(url)}" + (f": {snippet}" if snippet else "")
    if status in _RETRYABLE_STATUSES or status >= 500 or _rate_limited(status, response.headers):
        raise FetchError(message, retryable=True, status=status, retry_after=_asked_to_wait(status, response.headers))
    raise FetchError(message, retryable=False, status=status)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait the server asked for: `Retry-After`, else
    `x-ratelimit-reset` (seconds to wait, or an epoch timestamp when it is that large). None for
    what says nothing usable (`-1`, `nan`): the backoff decides then, not an instant retry."""
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    asked = parse_retry_after(lower.get("retry-after"), now=now)
    if asked is not None:
        return asked
    try:
        number = float(lower.get("x-ratelimit-reset", "").strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return max(0.0, number - now) if number > 1e9 else number


def _rate_limited(status: int, headers: Mapping[str, str]) -> bool:
    """A 403 or 429 saying the quota is spent (``X-RateLimit-Remaining: 0``, GitHub's primary
    limit) or when to come back (``Retry-After``, its secondary limits); any other 403 is final."""
    return status in _RATE_LIMIT_STATUSES and (_quota_left(headers) == 0 or "Retry-After" in headers)


def _quota_left(headers: Mapping[str, str]) -> float | None:
    """``X-RateLimit-Remaining``, None when absent or not a number."""
    try:
        left = float(headers.get("X-RateLimit-Remaining", "").strip())
    except ValueError:
        return None
    return left if math.isfinite(left) else None


def _asked_to_wait(status: int, headers: Mapping[str, str]) -> float | None:
    """``Retry-After``; for a rate limit without one, when its quota is spent or not reported,
    ``X-RateLimit-Reset`` too (GitHub's epoch seconds: reset - now), read as the Port target reads
    it. Not otherwise: GitHub sends the reset of its hourly quota on every answer, a 5xx's too."""
    if status in _RATE_LIMIT_STATUSES and _quota_left(headers) in (None, 0):
        return retry_after_seconds(headers)
    return parse_retry_after(headers.get("Retry-After"))


def _resolve(current: URL, location: str) -> str:
    """Location relative to the current URL; unsafe text is passed on unjoined so _check refuses it."""
    if _unsafe_char(location):
        return location
    try:
        return str(current.join(URL(location)))
    except ValueError:
        return location


def _absolute(url: str, base_url: str | None) -> str:
    """Relative URLs extend base_url's path (``/api/v4`` + ``projects/1``), like API clients do,
    and stay under it: a ``..`` segment (``%2e%2e`` too) would climb out with the same headers."""
    if base_url is None or _SCHEME.match(url):
        return url
    path = url.split("?", 1)[0].split("#", 1)[0]
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        raise FetchRefused(f"refusing to fetch {_shown(url)}: a relative URL may not hold '.' or '..' segments")
    return f"{base_url.rstrip('/')}/{url.lstrip('/')}"


def _request_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    send: CIMultiDict[str] = CIMultiDict({"Accept": "application/json", "User-Agent": f"ocean-hook/{__version__}"})
    for name, value in headers.items():
        send[name] = value
    return send


_QUERY = re.compile(r"(https?://[^\s'\"?#]*)[?#][^\s'\"]*")


def _describe(error: BaseException) -> str:
    """An error for a message, without the query string of any URL it quotes (aiohttp quotes them)."""
    return without_queries(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)


def without_queries(text: str) -> str:
    """`text` with the query string and fragment of every URL it quotes left out: API keys ride
    there (`?api_key=...`), and error messages go to logs and dead letters."""
    return _QUERY.sub(r"\1", text)


def _scrub(message: str, values: Iterable[str]) -> str:
    """Belt and braces: no header value, nor a long word of one (the token after ``Bearer``)."""
    secrets: set[str] = set()
    for value in values:
        secrets.update(word for word in value.split() if len(word) >= 8)
        if len(value) >= 4:
            secrets.add(value)
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message
