"""Port's REST API as a target (shapes in /work/shared/PORT_API.md).

Ownership rule. Every request carries ``User-Agent: ocean-hook/<version>/<integration_name>``,
and Port records the writer of each entity as its ``$datasource``. An entity is *ours* when
its datasource is ``ocean-hook/<any version>/<integration_name>``: the version may differ (an
upgrade must not orphan entities) but the integration name must match as a whole path segment.
Before deleting, the target searches the entities twice: once by identifier (to tell "already
gone", which is fine, from "exists"), once adding the rules ``$datasource contains
"ocean-hook/"`` and ``$datasource contains "/<integration_name>"`` so Port itself confirms
ownership. When Port also returns the datasource string, it is checked segment by segment too
(so integration ``hook`` does not claim the entities of ``hook-2``). For entities whose
datasource Port does not return, ``contains`` cannot tell ``hook`` from ``hook-2``: their second
search asks for ``$datasource = "ocean-hook/<this version>/<integration_name>"`` exactly instead,
and the rest (``hook-2``'s, an older version's, anyone else's) is left alone.
Entities that exist but are not ours are never deleted: their outcome says so and is not
retryable. Upserts are not guarded: mapping an entity is an explicit request to write it.

Failures. 408, 429, 502, 503, 504 and connection errors are retried with exponential backoff
and jitter, or exactly as long as ``Retry-After`` / ``x-ratelimit-reset`` ask (capped at
``retry_max_wait``); so is an answer that is not HTTP at all (a broken proxy's). Other statuses
are not retried here: Port's message lands in the entity's outcome, which is ``retryable`` only
for server errors (a 4xx is the caller's fault). When retries run out, outcomes are
``retryable=True`` so the worker retries the delivery later. A 401 renews the token once.
Failures of the call as a whole (no token, search down) raise `TargetError`.

Every method answers one outcome per input, in input order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDict
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)
from yarl import URL

from ocean_hook import __version__
from ocean_hook.bodies import read_at_most
from ocean_hook.entity import Entity, EntityKey, entity_key, mapped_fields
from ocean_hook.fetch import retry_after_seconds
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.targets.base import Target, TargetError, WriteOutcome
from ocean_hook.targets.outcomes import outcome_key

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.getport.io"
US_BASE_URL = "https://api.us.getport.io"
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    # raised for an answer that is not HTTP (a garbage status line, a header over 8190 bytes, bad
    # chunked encoding) and for a proxy refusing the tunnel: `raise_for_status` is never used
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,
)
BULK_MAX_ENTITIES = 20
BULK_MAX_BYTES = 1024 * 1024
DELETE_BATCH = 100
SEARCH_CHUNK = 100
TOKEN_RENEW_MARGIN = 60.0
#: a bigger answer is not Port's (its pages of entities are small)
MAX_ANSWER_BYTES = 64 * 2**20
#: /readyz waits this long for Port at most: a probe that hangs is an answer too
PROBE_TIMEOUT_SECONDS = 5.0
#: how long any exchange with Port speaks for /readyz before a probe asks again
READY_WINDOW_SECONDS = 10.0


def _q(segment: str) -> str:
    """One path segment, escaped whole. `.` and `..` are escaped too (`%2E`): sent as they are, a
    server or proxy resolving dot segments reads `DELETE .../entities/..` as a delete of the
    blueprint itself."""
    quoted = quote(segment, safe="")
    return quoted.replace(".", "%2E") if set(segment) <= {"."} else quoted


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def user_agent(integration_name: str) -> str:
    return f"ocean-hook/{__version__}/{integration_name}"


def integration_name_problem(name: str) -> str | None:
    """Why `name` cannot be an integration name, or None. It goes into the User-Agent, whose
    surrounding whitespace HTTP drops: Port would record `ocean-hook/<v>/hook` for `hook `, and
    every delete would be refused as someone else's; a control character is no header at all."""
    if not name:
        return "must be a non-empty name"
    if "/" in name:
        return "must be a name without '/' (it is one segment of the datasource ocean-hook/<version>/<name>)"
    if name != name.strip() or not name.isprintable():
        return ("must be a name without leading or trailing spaces or control characters (Port would record "
                "another name than the one ocean-hook looks for before deleting)")
    return None


def owns(datasource: str, integration_name: str) -> bool:
    """The ownership rule of the module docstring, on a datasource string Port returned."""
    parts = datasource.split("/")
    return parts[0] == "ocean-hook" and integration_name in parts[1:]


def _no_such_blueprint(body: Any) -> bool:
    """Port's 404 for a search on a blueprint it does not have, not any 404: a wrong `base_url`
    path or a proxy's page read as "nothing there" would lose every delete without a word."""
    return isinstance(body, dict) and "blueprint" in str(body.get("message", "")).lower()


def port_message(body: Any, status: int) -> str:
    """Port's own words for an error: its `message`, else its `error`, else the raw text."""
    if isinstance(body, dict):
        for name in ("message", "error"):
            if isinstance(body.get(name), str) and body[name]:
                return body[name]
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return f"HTTP {status}"


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return port_message(self.body, self.status)

    def describe(self) -> str:
        if 300 <= self.status < 400:  # not followed (see `_send`)
            where = self.headers.get("Location", "nowhere said")
            return f"Port answered {self.status}, a redirect to {where} (not followed: check base_url)"
        return f"Port answered {self.status}: {self.message}"


class _RetryableReply(Exception):
    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.describe())
        self.reply = reply


class _Unreachable(TargetError):
    """Connection errors outlasted the retries."""


@dataclass(frozen=True)
class _Contact:
    """How the last exchange with Port went, for readiness: `problem` is None when it answered."""

    at: float  # time.monotonic()
    problem: str | None = None
    retryable: bool = True


def _worth_retrying(status: int | None) -> bool:
    """Whether a later attempt may succeed: rate limits, timeouts and server errors."""
    return isinstance(status, int) and (status in RETRYABLE_STATUSES or status >= 500)


def _failed(key: EntityKey, error: str, *, retryable: bool, retry_after: float | None = None) -> WriteOutcome:
    return WriteOutcome(key, ok=False, error=error, retryable=retryable, retry_after=retry_after)


def _reply_failure(key: EntityKey, reply: _Reply) -> WriteOutcome:
    return _failed(key, reply.describe(), retryable=_worth_retrying(reply.status), retry_after=_asked_to_wait(reply))


def _asked_to_wait(reply: _Reply) -> float | None:
    """What Port asked of a throttled caller (a 429's Retry-After), for the delivery's next
    attempt: the retries inside one request wait at most `retry_max_wait`."""
    return retry_after_seconds(reply.headers) if reply.status in RETRYABLE_STATUSES else None


def _datasource(entity: Entity) -> str | None:
    for name in ("$datasource", "datasource"):
        if isinstance(entity.get(name), str):
            return entity[name]
    return None


class PortTarget(Target):
    name = "port"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        client_id: str,
        client_secret: str,
        integration_name: str = "ocean-hook",
        max_in_flight: int = 8,
        retry_attempts: int = 5,
        retry_max_wait: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        retry_min_wait: float = 1.0,
        request_timeout: float = 30.0,
        ready_window: float = READY_WINDOW_SECONDS,
    ) -> None:
        if (problem := integration_name_problem(integration_name)) is not None:
            raise ValueError(f"integration_name {problem}, got {integration_name!r}")
        self.base_url = base_url.rstrip("/")
        # a space or a non-ASCII letter of a path prefix percent-encoded (sent raw, the request
        # line was not HTTP), a non-ASCII host in IDNA
        self._base = str(URL(self.base_url)).rstrip("/")
        self.integration_name = integration_name
        self.user_agent = user_agent(integration_name)
        self.retry_attempts = max(1, retry_attempts)
        self.retry_min_wait = retry_min_wait
        self.retry_max_wait = retry_max_wait
        #: the retry waits taken lately (seconds), for logs and tests
        self.retry_waits: deque[float] = deque(maxlen=100)
        self._credentials = _dumps({"clientId": client_id, "clientSecret": client_secret})
        self._client_secret = client_secret
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._token_lock = asyncio.Lock()
        self._token_value: str | None = None
        self._token_renew_at = 0.0
        #: seconds the last exchange with Port speaks for its readiness before a probe asks again
        self.ready_window = ready_window
        self._contact: _Contact | None = None
        self._probe_lock = asyncio.Lock()
        #: the proxy the environment names for base_url (none: (None, None)), read at the first request
        self._proxy: tuple[URL | None, dict[str, str] | None] | None = None

    # -- HTTP ---------------------------------------------------------------------------------

    def _url(self, path: str) -> URL:
        return URL(self._base + path, encoded=True)

    async def _send(
        self,
        method: str,
        url: URL,
        params: Mapping[str, str] | None,
        body: bytes | None,
        token: str | None,
    ) -> _Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        if self._proxy is None:
            self._proxy = _env_proxy(url)
        proxy, proxy_headers = self._proxy
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if proxy_headers and url.scheme == "http":  # no tunnel: aiohttp sends proxy_headers with a CONNECT only
            headers.update(proxy_headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = token
        async with (
            self._slots,
            # never redirected: a redirect could carry the client secret or a token to another host
            self._session.request(
                method, url, params=params, data=body, headers=headers, timeout=self._timeout,
                allow_redirects=False, proxy=proxy, proxy_headers=proxy_headers,
            ) as response,
        ):
            # Port's answers are small (a page of entities): whatever answers in its place must
            # not take the worker's memory
            raw = await read_at_most(response.content, MAX_ANSWER_BYTES, response.content_length)
            if raw is None:
                raise TargetError(f"Port's answer ({response.status}) is over {MAX_ANSWER_BYTES:,} bytes")
            secrets = self._secret_forms(token)
            raw = _redacted_bytes(raw, secrets)
            try:
                decoded: Any = json.loads(raw) if raw else None
                # only an escape (`\u0073`, `\/`), or UTF-16/32 text (NUL bytes in every ASCII
                # character), can spell a secret the UTF-8 bytes did not show
                if b"\\" in raw or b"\x00" in raw:
                    decoded = _redacted_json(decoded, secrets)
            except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to be Port's
                decoded = raw.decode("utf-8", "replace")
            return _Reply(response.status, decoded, CIMultiDict(response.headers))

    def _secret_forms(self, token: str | None) -> list[str]:
        """An answer may echo the request (a proxy's error page): what it shows of the client
        secret, or of the access token sent, is gone before anything reads it, so no log line,
        error, dead letter or /readyz can repeat it. Echoed inside JSON text the secret is
        escaped (`\\"`, `\\\\`, `\\u00e9`): those forms are redacted too, and the strings of the
        decoded answer (an escape this list misses, `\\/` say, is undone by decoding)."""
        forms: set[str] = set()
        for secret in (self._client_secret, token.partition(" ")[2] if token else None):
            if secret:
                forms |= {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
        return sorted(forms, key=len, reverse=True)

    def _redacted_text(self, text: str) -> str:
        return _redacted_str(text, self._secret_forms(self._token_value))

    def _wait(self, state: RetryCallState) -> float:
        """Exactly what the server asked for when it said so, else backoff with jitter."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _RetryableReply):
            hinted = retry_after_seconds(error.reply.headers)
            if hinted is not None:
                return min(hinted, self.retry_max_wait)
        backoff = self.retry_min_wait * 2 ** (state.attempt_number - 1)
        return min(backoff + random.uniform(0, self.retry_min_wait), self.retry_max_wait)

    def _before_sleep(self, state: RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        error = state.outcome.exception() if state.outcome else None
        self.retry_waits.append(wait)
        said = self._failure(error) if isinstance(error, aiohttp.ClientResponseError) else str(error)
        log.warning("Port request failed (%s); retrying in %.2fs", said or type(error).__name__, wait)

    def _failure(self, exc: BaseException) -> str:
        """What a connection error says for logs, outcomes and /readyz."""
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            return f"the proxy refused to connect to Port at {self.base_url}: {exc.status} {exc.message}"
        if isinstance(exc, aiohttp.ClientResponseError):  # aiohttp's parser quotes the answer on several lines
            said = self._redacted_text(" ".join(str(exc.message).split())[:300])
            return f"Port at {self.base_url} answered something that is not HTTP: {said}"
        if isinstance(exc, TimeoutError) and not str(exc):  # it may have done it all the same
            return f"Port at {self.base_url} did not answer within {self._timeout.total:g} s"
        return f"Port at {self.base_url} is unreachable: {str(exc) or type(exc).__name__}"

    def _saw(self, problem: str | None, *, retryable: bool = True) -> None:
        self._contact = _Contact(time.monotonic(), problem, retryable)

    async def _retrying(self, send: Callable[[], Awaitable[_Reply]], *, attempts: int | None = None) -> _Reply:
        """The last reply (possibly a retryable status, after the last attempt)."""
        reply = await self._attempts(send, attempts or self.retry_attempts)
        self._saw(reply.describe() if reply.status >= 500 else None)
        return reply

    async def _attempts(self, send: Callable[[], Awaitable[_Reply]], attempts: int) -> _Reply:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            before_sleep=self._before_sleep,
            retry=retry_if_exception_type((_RetryableReply, *CONNECTION_ERRORS)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    reply = await send()
                    if reply.status in RETRYABLE_STATUSES:
                        raise _RetryableReply(reply)
                    return reply
        except _RetryableReply as exc:
            return exc.reply
        except CONNECTION_ERRORS as exc:
            problem = self._failure(exc)
            self._saw(problem)
            raise _Unreachable(problem) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        attempts: int | None = None,
    ) -> _Reply:
        url = self._url(path)
        token = await self._token(attempts=attempts)
        reply = await self._retrying(partial(self._send, method, url, params, body, token), attempts=attempts)
        if reply.status == 401:
            token = await self._token(stale=token, attempts=attempts)
            reply = await self._retrying(partial(self._send, method, url, params, body, token), attempts=attempts)
            if reply.status == 401:
                problem = f"Port rejected a fresh access token: {reply.message}"
                self._saw(problem)  # for /readyz: Port answers, but nothing it is asked succeeds
                raise TargetError(problem)
        return reply

    # -- token --------------------------------------------------------------------------------

    async def _token(self, stale: str | None = None, *, attempts: int | None = None) -> str:
        """A cached token, renewed a little before it expires or when `stale` was refused."""
        async with self._token_lock:
            fresh = time.monotonic() < self._token_renew_at
            if self._token_value is not None and self._token_value != stale and fresh:
                return self._token_value
            try:
                return self._keep_token(await self._retrying(partial(
                    self._send, "POST", self._url("/v1/auth/access_token"), None, self._credentials, None,
                ), attempts=attempts))
            except TargetError as exc:  # an answer echoing the secret had it redacted (`_redacted`)
                problem = f"cannot obtain a Port access token: {exc}"
                self._saw(problem, retryable=exc.retryable)
                raise TargetError(problem, retryable=exc.retryable, retry_after=exc.retry_after) from None

    def _keep_token(self, reply: _Reply) -> str:
        if not reply.ok:
            raise TargetError(reply.describe(), retryable=_worth_retrying(reply.status),
                              retry_after=_asked_to_wait(reply))
        body = reply.body if isinstance(reply.body, dict) else {}
        token, expires = body.get("accessToken"), body.get("expiresIn", 3600)
        if not isinstance(reply.body, dict):  # never the token itself: it may be in there
            raise TargetError(f"malformed token answer: {reply.status} without a JSON object")
        if not isinstance(token, str) or not token:
            raise TargetError("malformed token answer: no 'accessToken' string")
        if not token.isprintable():  # it goes into a header: aiohttp would refuse it with a traceback
            raise TargetError("malformed token answer: the 'accessToken' holds control characters")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise TargetError("malformed token answer: 'expiresIn' is not a number of seconds")
        scheme = body.get("tokenType") or "Bearer"
        if not isinstance(scheme, str) or not scheme.isprintable() or scheme != "".join(scheme.split()):
            # the header's first word: a newline in it was aiohttp's traceback, a space another header
            raise TargetError("malformed token answer: the 'tokenType' is not one word like Bearer")
        self._token_value = f"{scheme} {token}"
        margin = min(TOKEN_RENEW_MARGIN, expires / 2)
        self._token_renew_at = time.monotonic() + expires - margin
        return self._token_value

    async def check_ready(self) -> None:
        """Port as the last exchange with it found it, whoever made it. With none in the last
        `ready_window` seconds, one request (a single attempt, so a probe answers fast) asks
        afresh: a token cached for an hour says nothing about Port now. With a valid token that
        request is `GET /v1/organization` with it, as the writes would send it (a token request
        per probe was a token minted every 10 s, and a 429 of the token endpoint alone made a
        target not ready whose writes went through); without one, a token request."""
        async with self._probe_lock:  # concurrent probes share one request
            contact = self._contact
            if contact is None or time.monotonic() - contact.at > self.ready_window:
                cached = self._token_value is not None and time.monotonic() < self._token_renew_at
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                        if cached:  # any answer but a 5xx or a refused fresh token is Port answering
                            await self._call("GET", "/v1/organization", attempts=1)
                        else:
                            await self._token(stale=self._token_value, attempts=1)
                except TargetError:  # recorded by _token, _call or _attempts
                    pass
                except TimeoutError:
                    asked = "a request" if cached else "a token request"
                    self._saw(f"Port did not answer {asked} within {PROBE_TIMEOUT_SECONDS:g} s")
                contact = self._contact
        if contact is not None and contact.problem is not None:
            raise TargetError(contact.problem, retryable=contact.retryable)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- read ---------------------------------------------------------------------------------

    async def _search(self, rules: list[dict[str, Any]]) -> list[Entity]:
        reply = await self._call(
            "POST",
            "/v1/entities/search",
            {"exclude_calculated_properties": "true"},
            _dumps({"combinator": "and", "rules": rules}),
        )
        if reply.status == 404 and _no_such_blueprint(reply.body):  # nothing of it exists
            return []
        if not reply.ok:
            raise TargetError(
                f"Port search failed: {reply.describe()}",
                retryable=_worth_retrying(reply.status),
                retry_after=_asked_to_wait(reply),
            )
        entities = reply.body.get("entities") if isinstance(reply.body, dict) else None
        if not isinstance(entities, list):  # a proxy's page, say: "nothing found" would lose deletes
            raise TargetError(f"Port search gave no 'entities' list ({reply.describe()})")
        return [e for e in entities if isinstance(e, dict)]

    async def _lookup(self, blueprint: str, identifiers: list[str], *, ours: bool = False,
                      exactly_ours: bool = False) -> dict[str, str | None]:
        """identifier → datasource (None when Port does not say) of those that exist (and, with
        `ours`, that Port's `contains` rules say are ours; `exactly_ours`: this very writer's)."""
        rules: list[dict[str, Any]] = [
            {"property": "$identifier", "operator": "in", "value": identifiers},
            {"property": "$blueprint", "operator": "=", "value": blueprint},
        ]
        if ours:
            rules += [
                {"property": "$datasource", "operator": "contains", "value": "ocean-hook/"},
                {"property": "$datasource", "operator": "contains", "value": f"/{self.integration_name}"},
            ]
        if exactly_ours:
            rules.append({"property": "$datasource", "operator": "=", "value": user_agent(self.integration_name)})
        found = await self._search(rules)
        wanted = set(identifiers)
        return {
            e["identifier"]: _datasource(e)
            for e in found
            if isinstance(e.get("identifier"), str) and e["identifier"] in wanted
            and e.get("blueprint", blueprint) == blueprint
        }

    async def get_entities(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity]:
        by_blueprint = _group(keys)

        async def one(blueprint: str, chunk: list[str]) -> list[Entity]:
            rules: list[dict[str, Any]] = [
                {"property": "$identifier", "operator": "in", "value": chunk},
                {"property": "$blueprint", "operator": "=", "value": blueprint},
            ]
            return [{**e, "blueprint": e.get("blueprint", blueprint)} for e in await self._search(rules)]

        answers = await asyncio.gather(
            *(one(bp, chunk) for bp, ids in by_blueprint.items() for chunk in _chunks(ids, SEARCH_CHUNK))
        )
        wanted = set(map(tuple, keys))
        found: dict[EntityKey, Entity] = {}
        for entity in (e for answer in answers for e in answer):
            key = entity_key(entity)  # only string keys were asked for
            if key is not None and key in wanted:
                found[key] = mapped_fields(entity)
        return found

    # -- upsert -------------------------------------------------------------------------------

    async def upsert(self, entities: Sequence[Entity], flags: MappingFlags) -> list[WriteOutcome]:
        params = {
            "upsert": "true",
            "merge": _bool(flags.enable_merge_entity),
            "create_missing_related_entities": _bool(flags.create_missing_related_entities),
            "validation_only": "false",
        }
        outcomes: list[WriteOutcome | None] = [None] * len(entities)
        encoded = [_dumps(e) for e in entities]
        for i, entity in enumerate(entities):
            if not isinstance(entity.get("blueprint"), str) or not entity["blueprint"]:
                outcomes[i] = _failed(outcome_key(entity), "entity has no 'blueprint'", retryable=False)

        async def run(blueprint: str, indices: list[int]) -> None:
            batch = [(entities[i], encoded[i]) for i in indices]
            for i, outcome in zip(indices, await self._upsert_batch(blueprint, batch, params), strict=True):
                outcomes[i] = outcome

        pending = [i for i, o in enumerate(outcomes) if o is None]
        batches = sorted(_batches(entities, encoded, pending), key=lambda batch: batch[1][0])
        if flags.create_missing_related_entities:  # Port makes what a relation names: any order will do
            await asyncio.gather(*(run(bp, idx) for bp, idx in batches))
        else:  # a relation to an entity of a later batch still in flight would be refused
            for bp, idx in batches:
                await run(bp, idx)
        return [o for o in outcomes if o is not None]

    async def _upsert_batch(
        self, blueprint: str, batch: list[tuple[Entity, bytes]], params: dict[str, str]
    ) -> list[WriteOutcome]:
        keys = [outcome_key(entity) for entity, _ in batch]
        body = b'{"entities":[' + b",".join(data for _, data in batch) + b"]}"
        path = f"/v1/blueprints/{_q(blueprint)}/entities/bulk"
        try:
            reply = await self._call("POST", path, params, body)
        except _Unreachable as exc:
            return [_failed(key, str(exc), retryable=True) for key in keys]
        if reply.status == 413:
            single = partial(self._upsert_one, blueprint, params=params)
            return list(await asyncio.gather(*(single(key, data) for key, (_, data) in zip(keys, batch, strict=True))))
        if not reply.ok:
            return [_reply_failure(key, reply) for key in keys]
        return _bulk_outcomes(keys, reply.body)

    async def _upsert_one(self, blueprint: str, key: EntityKey, data: bytes, *, params: dict[str, str]) -> WriteOutcome:
        try:
            reply = await self._call("POST", f"/v1/blueprints/{_q(blueprint)}/entities", params, data)
        except _Unreachable as exc:
            return _failed(key, str(exc), retryable=True)
        return WriteOutcome(key, ok=True) if reply.ok else _reply_failure(key, reply)

    # -- delete -------------------------------------------------------------------------------

    async def delete(self, keys: Sequence[EntityKey], flags: MappingFlags) -> list[WriteOutcome]:
        chunks = [(bp, chunk) for bp, ids in _group(keys).items() for chunk in _chunks(ids, DELETE_BATCH)]
        answers = await asyncio.gather(
            *(self._delete_chunk(bp, chunk, flags.delete_dependent_entities) for bp, chunk in chunks)
        )
        results = {o.key: o for answer in answers for o in answer}
        return [results[(bp, ident)] for bp, ident in keys]

    async def _delete_chunk(self, blueprint: str, identifiers: list[str], dependents: bool) -> list[WriteOutcome]:
        existing = await self._lookup(blueprint, identifiers)
        said = [i for i in identifiers if existing.get(i) is not None]
        unsaid = [i for i in identifiers if i in existing and existing[i] is None]  # `contains` would match hook-2's
        ours = await self._lookup(blueprint, said, ours=True) if said else {}
        exact = await self._lookup(blueprint, unsaid, exactly_ours=True) if unsaid else {}
        outcomes, doomed = [], []
        for ident in identifiers:
            datasource = existing.get(ident)
            if ident not in existing:
                outcomes.append(WriteOutcome((blueprint, ident), ok=True))
            elif ident in exact or (ident in ours and owns(datasource or "", self.integration_name)):
                doomed.append(ident)
            elif ident in unsaid:
                error = (f"Port did not say who wrote it, and not this version of ocean-hook/{self.integration_name}"
                         " (another integration, or an older version): left alone")
                outcomes.append(_failed((blueprint, ident), error, retryable=False))
            else:
                error = f"not created by ocean-hook (datasource {datasource}): left alone"
                outcomes.append(_failed((blueprint, ident), error, retryable=False))
        if doomed:
            outcomes += await self._bulk_delete(blueprint, doomed, dependents)
        return outcomes

    async def _bulk_delete(self, blueprint: str, identifiers: list[str], dependents: bool) -> list[WriteOutcome]:
        keys = [(blueprint, ident) for ident in identifiers]
        params = {"delete_dependents": _bool(dependents)}
        body = _dumps({"entities": identifiers})
        try:
            reply = await self._call("POST", f"/v1/blueprints/{_q(blueprint)}/bulk/entities/delete", params, body)
        except _Unreachable as exc:
            return [_failed(key, str(exc), retryable=True) for key in keys]
        if reply.status in (404, 405):  # an API without bulk delete
            return list(await asyncio.gather(*(self._delete_one(key, params) for key in keys)))
        if not reply.ok:
            return [_reply_failure(key, reply) for key in keys]
        reported = reply.body.get("deletedEntities") if isinstance(reply.body, dict) else None
        reported = reported if isinstance(reported, list) else []
        named = (d.get("identifier") if isinstance(d, dict) else d for d in reported)
        deleted = {name for name in named if isinstance(name, str)}  # else looked up again below
        leftover = [i for i in identifiers if i not in deleted]
        still_there = await self._lookup(blueprint, leftover) if leftover else {}
        return [
            _failed(key, "Port did not delete the entity", retryable=True)
            if key[1] in still_there
            else WriteOutcome(key, ok=True)
            for key in keys
        ]

    async def _delete_one(self, key: EntityKey, params: dict[str, str]) -> WriteOutcome:
        path = f"/v1/blueprints/{_q(key[0])}/entities/{_q(key[1])}"
        try:
            reply = await self._call("DELETE", path, params)
        except _Unreachable as exc:
            return _failed(key, str(exc), retryable=True)
        if reply.ok or reply.status == 404:  # 404: already gone
            return WriteOutcome(key, ok=True)
        return _reply_failure(key, reply)


def _env_proxy(url: URL) -> tuple[URL | None, dict[str, str] | None]:
    """The proxy HTTPS_PROXY / HTTP_PROXY name for `url` unless NO_PROXY exempts it, as Ocean
    honours them. Not aiohttp's `trust_env`: it also sends the login ~/.netrc has for Port's host
    (a `default` entry: for any host) as Basic auth with the token request, and refuses every
    request that carries a token beside it with a ValueError. The proxy's own login (in its URL,
    or ~/.netrc's for the proxy host) goes to the proxy."""
    try:
        proxy, login = get_env_proxy_for_url(url)
    except LookupError:
        return None, None
    return proxy, None if login is None else {"Proxy-Authorization": login.encode()}


def _redacted_str(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _redacted_bytes(raw: bytes, secrets: Sequence[str]) -> bytes:
    for secret in secrets:
        raw = raw.replace(secret.encode(), b"[redacted]")
    return raw


def _redacted_json(value: Any, secrets: Sequence[str]) -> Any:
    """A decoded answer with the secrets gone from its strings (keys too): JSON can spell a
    character many ways (`\\u0073`, `\\/`), decoding spells it one."""
    if not secrets:
        return value
    if isinstance(value, str):
        return _redacted_str(value, secrets)
    if isinstance(value, list):
        return [_redacted_json(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_redacted_str(k, secrets): _redacted_json(v, secrets) for k, v in value.items()}
    return value


def _group(keys: Sequence[EntityKey]) -> dict[str, list[str]]:
    by_blueprint: dict[str, list[str]] = {}
    for blueprint, identifier in dict.fromkeys(map(tuple, keys)):
        by_blueprint.setdefault(blueprint, []).append(identifier)
    return by_blueprint


def _batches(entities: Sequence[Entity], encoded: list[bytes], indices: list[int]) -> list[tuple[str, list[int]]]:
    """Per blueprint, runs of ≤ 20 entities whose bulk body stays ≤ 1 MiB (order kept)."""
    overhead = len(b'{"entities":[]}')
    open_batches: dict[str, tuple[list[int], int]] = {}
    done: list[tuple[str, list[int]]] = []
    for i in indices:
        blueprint, size = entities[i]["blueprint"], len(encoded[i]) + 1
        members, total = open_batches.get(blueprint, ([], overhead))
        if members and (len(members) >= BULK_MAX_ENTITIES or total + size > BULK_MAX_BYTES):
            done.append((blueprint, members))
            members, total = [], overhead
        members.append(i)
        open_batches[blueprint] = (members, total + size)
    done += [(bp, members) for bp, (members, _) in open_batches.items()]
    return done


def _listed(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The objects of a list in Port's answer (anything else in it is not Port's shape: skipped)."""
    value = body.get(name)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _bulk_outcomes(keys: list[EntityKey], body: Any) -> list[WriteOutcome]:
    """One outcome per entity from Port's partial-success answer, matched by index."""
    body = body if isinstance(body, dict) else {}
    # an index that is not a number (a list, say) matches nothing: "did not mention it", retried
    succeeded = {e.get("index") for e in _listed(body, "entities") if isinstance(e.get("index"), int)}
    errors = {e.get("index"): e for e in _listed(body, "errors") if isinstance(e.get("index"), int)}
    outcomes = []
    for index, key in enumerate(keys):
        if index in errors:
            error = errors[index]
            status = error.get("statusCode")
            outcomes.append(_failed(key, port_message(error, status or 0), retryable=_worth_retrying(status)))
        elif index in succeeded:
            outcomes.append(WriteOutcome(key, ok=True))
        else:
            outcomes.append(_failed(key, "Port's bulk answer did not mention it", retryable=True))
    return outcomes
