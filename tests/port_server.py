"""A fake Port REST API on 127.0.0.1, speaking the shapes of /work/shared/PORT_API.md.

    async with FakePort() as port:
        target = PortTarget(base_url=port.url, client_id=port.client_id, ...)
        port.fail_next("/v1/blueprints/service/entities/bulk", 429, headers={"Retry-After": "1"})
        ...
        assert port.calls("POST", "/v1/entities/search")

It records every request (`port.requests`), stores entities in memory with the User-Agent
that wrote them as `$datasource` (returned in entity answers, like Port's own record), and can
be scripted to fail (`fail_next`), even with an answer that is not HTTP (`raw`), or to validate
required properties (`blueprint_schema`). It also serves as a plain-HTTP forward proxy to
itself: a request for `http://any-host/v1/...` is answered as if it were for its own address.
It implements Port's merge semantics itself, independently of ocean_hook.diff, so tests
compare ocean-hook against an outside opinion.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from yarl import URL

Entity = dict[str, Any]
Key = tuple[str, str]

ENTITY_FIELDS = ("identifier", "title", "blueprint", "icon", "team", "properties", "relations")
MAX_BULK = 20
MAX_BODY = 1024 * 1024


@dataclass
class RecordedRequest:
    method: str
    path: str  # decoded segments joined by "/"
    raw_path: str  # as sent on the wire, without the query
    query: dict[str, str]
    json: Any
    headers: dict[str, str]


@dataclass
class _Failure:
    prefix: str
    status: int
    times: int
    headers: dict[str, str]
    body: Any
    method: str | None
    drop: bool
    chunked: bool = False
    raw: bytes | None = None


@dataclass
class _Stored:
    entity: Entity
    datasource: str
    created_at: float
    updated_at: float


class EntityError(Exception):
    """One entity refused, with Port's error fields."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _flag(query: dict[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    return default if value is None else value.lower() == "true"


def _merge(current: Entity, desired: Entity) -> Entity:
    out = dict(current)
    for name, value in desired.items():
        if name in ("properties", "relations") and isinstance(value, dict):
            out[name] = {**(current.get(name) or {}), **value}
        else:
            out[name] = value
    return out


def _points_at(entity: Entity, identifiers: set[str]) -> bool:
    for value in (entity.get("relations") or {}).values():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and v in identifiers for v in values):
            return True
    return False


@dataclass
class FakePort:
    client_id: str = "fake-client-id"
    client_secret: str = "fake-client-secret"
    #: seconds a token lives (the `expiresIn` answered)
    expires_in: float = 3600
    #: False → the bulk delete route answers 404, like an older API
    bulk_delete_supported: bool = True
    #: None → any blueprint exists; else unknown blueprints answer 404
    blueprints: set[str] | None = None
    #: blueprint → {"required": [property, ...]}: violations answer 422 per entity
    blueprint_schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: seconds every API answer takes (to observe concurrency)
    latency: float = 0.0
    #: False → entity answers leave `$datasource` out (only search rules can tell the writer)
    answers_datasource: bool = True
    #: the most requests ever handled at the same time
    max_concurrent: int = 0

    requests: list[RecordedRequest] = field(default_factory=list)
    store: dict[Key, _Stored] = field(default_factory=dict)
    tokens_issued: int = 0
    #: `GET /v1/organization` answered (an authenticated request that changes nothing)
    organization_reads: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._tokens: dict[str, float] = {}
        self._failures: list[_Failure] = []
        self._runner: web.AppRunner | None = None
        self._concurrent = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FakePort:
        app = web.Application(client_max_size=16 * MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- scripting and inspection -------------------------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        status: int = 503,
        times: int = 1,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        method: str | None = None,
        drop: bool = False,
        chunked: bool = False,
        raw: bytes | None = None,
    ) -> None:
        """The next `times` requests under `path_prefix` answer `status` (or lose the connection;
        `chunked`: with no Content-Length; `raw`: these bytes on the wire, HTTP or not, then the
        connection closes). A `body` of bytes is sent as it is (JSON text or not)."""
        if body is None:
            body = {"ok": False, "error": "scripted_failure", "message": f"scripted {status}"}
        self._failures.append(_Failure(path_prefix, status, times, headers or {}, body, method, drop, chunked, raw))

    def revoke_tokens(self) -> None:
        """Every token issued so far now answers 401."""
        self._tokens.clear()

    def put(self, entity: Entity, *, datasource: str = "port-ui") -> None:
        """Seed an entity as if another writer (by default the Port UI) had created it."""
        key = (entity["blueprint"], entity["identifier"])
        now = time.time()
        self.store[key] = _Stored(dict(entity), datasource, now, now)

    def entity(self, blueprint: str, identifier: str) -> Entity | None:
        stored = self.store.get((blueprint, identifier))
        return None if stored is None else stored.entity

    def calls(self, method: str | None = None, path_prefix: str = "/v1/") -> list[RecordedRequest]:
        """Recorded requests other than token exchanges."""
        return [
            r
            for r in self.requests
            if r.path.startswith(path_prefix)
            and r.path != "/v1/auth/access_token"
            and (method is None or r.method == method)
        ]

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self._concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self._concurrent)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._handle(request)
        finally:
            self._concurrent -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path.startswith(("http://", "https://")):  # a forward proxy's request: to itself
            raw_path = URL(raw_path, encoded=True).raw_path
        segments = [unquote(s) for s in raw_path.strip("/").split("/")]
        path = "/" + "/".join(segments)
        self.requests.append(
            RecordedRequest(request.method, path, raw_path, dict(request.query), body, dict(request.headers))
        )
        scripted = self._scripted(request.method, path)
        if scripted is not None:
            if scripted.drop or scripted.raw is not None:
                assert request.transport is not None
                if scripted.raw is not None:
                    request.transport.write(scripted.raw)
                request.transport.close()
                return web.Response()
            if isinstance(scripted.body, bytes):
                return web.Response(body=scripted.body, status=scripted.status, headers=scripted.headers,
                                    content_type="application/json")
            if scripted.chunked:
                streamed = web.StreamResponse(status=scripted.status, headers=scripted.headers)
                streamed.enable_chunked_encoding()
                await streamed.prepare(request)
                await streamed.write(json.dumps(scripted.body).encode())
                await streamed.write_eof()
                return streamed
            return web.json_response(scripted.body, status=scripted.status, headers=scripted.headers)
        if len(raw) > MAX_BODY:
            return _error(413, "payload_too_large", "request entity too large")
        if segments == ["v1", "auth", "access_token"] and request.method == "POST":
            return self._token(body)
        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "unauthorized", "the access token is missing, invalid or expired")
        try:
            return self._route(request, segments, body)
        except EntityError as exc:
            return _error(exc.status, exc.error, exc.message)

    def _scripted(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if path.startswith(failure.prefix) and failure.method in (None, method):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _route(self, request: web.Request, seg: list[str], body: Any) -> web.Response:
        method, query = request.method, dict(request.query)
        ua = request.headers.get("User-Agent", "")
        match seg:
            case ["v1", "organization"] if method == "GET":
                self.organization_reads += 1
                return web.json_response({"ok": True, "organization": {"id": "org_fake", "name": "fake",
                                                                       "featureFlags": []}})
            case ["v1", "entities", "search"] if method == "POST":
                found = [self._answer(k) for k in self.store if self._matches(k, body)]
                return web.json_response({"ok": True, "entities": found})
            case ["v1", "blueprints", bp, "entities", "bulk"] if method == "POST":
                return self._bulk_upsert(bp, query, body, ua)
            case ["v1", "blueprints", bp, "entities"] if method == "POST":
                key, created = self._write(bp, body, query, ua)
                status = 201 if created else 200
                return web.json_response({"ok": True, "entity": self._answer(key)}, status=status)
            case ["v1", "blueprints", bp, "entities", ident] if method == "GET":
                self._known(bp)
                if (bp, ident) not in self.store:
                    raise EntityError(404, "not_found", f'Entity "{ident}" was not found')
                return web.json_response({"ok": True, "entity": self._answer((bp, ident))})
            case ["v1", "blueprints", bp, "entities", ident] if method == "DELETE":
                self._known(bp)
                if (bp, ident) not in self.store:
                    raise EntityError(404, "not_found", f'Entity "{ident}" was not found')
                self._delete({(bp, ident)}, _flag(query, "delete_dependents", False))
                return web.json_response({"ok": True})
            case ["v1", "blueprints", bp, "bulk", "entities", "delete"] if method == "POST":
                if not self.bulk_delete_supported:
                    raise EntityError(404, "not_found", "route not found")
                self._known(bp)
                wanted = {(bp, i) for i in (body or {}).get("entities", [])}
                gone = self._delete(wanted & set(self.store), _flag(query, "delete_dependents", False))
                deleted = [i for b, i in gone if b == bp and (b, i) in wanted]
                return web.json_response({"ok": True, "deletedEntities": sorted(deleted)})
        raise EntityError(404, "not_found", f"no route for {method} /{'/'.join(seg)}")

    # -- auth ---------------------------------------------------------------------------------

    def _token(self, body: Any) -> web.Response:
        body = body or {}
        if body.get("clientId") != self.client_id or body.get("clientSecret") != self.client_secret:
            return _error(401, "unauthorized", "invalid client credentials")
        token = secrets.token_hex(8)
        self._tokens[token] = time.monotonic() + self.expires_in
        self.tokens_issued += 1
        return web.json_response(
            {"ok": True, "accessToken": token, "expiresIn": self.expires_in, "tokenType": "Bearer"}
        )

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        expiry = self._tokens.get(token)
        return scheme == "Bearer" and expiry is not None and time.monotonic() < expiry

    # -- entities -----------------------------------------------------------------------------

    def _known(self, bp: str) -> None:
        if self.blueprints is not None and bp not in self.blueprints:
            raise EntityError(404, "not_found", f'Blueprint with identifier "{bp}" was not found')

    def _answer(self, key: Key) -> Entity:
        """An entity as Port answers it: with its server-side fields and datasource."""
        stored = self.store[key]
        return {
            **stored.entity,
            "createdAt": _iso(stored.created_at),
            "createdBy": "fake-user",
            "updatedAt": _iso(stored.updated_at),
            "updatedBy": "fake-user",
            **({"$datasource": stored.datasource} if self.answers_datasource else {}),
        }

    def _bulk_upsert(self, bp: str, query: dict[str, str], body: Any, ua: str) -> web.Response:
        self._known(bp)
        entities = (body or {}).get("entities")
        if not isinstance(entities, list):
            raise EntityError(422, "invalid_request", "body must have required property 'entities'")
        if len(entities) > MAX_BULK:
            raise EntityError(422, "invalid_request", "body/entities must NOT have more than 20 items")
        done, errors = [], []
        for index, entity in enumerate(entities):
            try:
                key, created = self._write(bp, entity, query, ua)
            except EntityError as exc:
                ident = entity.get("identifier") if isinstance(entity, dict) else None
                errors.append(
                    {
                        "identifier": ident,
                        "index": index,
                        "statusCode": exc.status,
                        "error": exc.error,
                        "message": exc.message,
                    }
                )
            else:
                done.append({"identifier": key[1], "index": index, "created": created})
        return web.json_response({"ok": True, "entities": done, "errors": errors})

    def _write(self, bp: str, entity: Any, query: dict[str, str], ua: str) -> tuple[Key, bool]:
        self._known(bp)
        if not isinstance(entity, dict):
            raise EntityError(422, "invalid_request", "an entity must be an object")
        if entity.get("blueprint", bp) != bp:
            raise EntityError(422, "invalid_request", "entity blueprint does not match the path")
        ident = self._resolve_identifier(bp, entity.get("identifier"))
        desired = {k: v for k, v in entity.items() if k in ENTITY_FIELDS}
        desired.update(identifier=ident, blueprint=bp)
        key = (bp, ident)
        current = self.store.get(key)
        if current is not None and not _flag(query, "upsert", False):
            raise EntityError(409, "identifier_taken", f'Entity "{ident}" already exists')
        merge = _flag(query, "merge", False)
        after = _merge(current.entity, desired) if current and merge else desired
        self._validate(bp, ident, after)
        now = time.time()
        created_at = now if current is None else current.created_at
        self.store[key] = _Stored(after, ua, created_at, now)
        return key, current is None

    def _resolve_identifier(self, bp: str, ident: Any) -> str:
        if isinstance(ident, str) and ident:
            return ident
        if isinstance(ident, dict) and "rules" in ident:
            query = {"combinator": "and", "rules": [ident, {"property": "$blueprint", "operator": "=", "value": bp}]}
            found = [k for k in self.store if self._matches(k, query)]
            if len(found) == 1:
                return found[0][1]
            raise EntityError(422, "invalid_request", f"the identifier search query matched {len(found)} entities")
        raise EntityError(422, "invalid_request", "entity must have a string 'identifier'")

    def _validate(self, bp: str, ident: str, entity: Entity) -> None:
        required = self.blueprint_schema.get(bp, {}).get("required", [])
        properties = entity.get("properties") or {}
        missing = [name for name in required if properties.get(name) is None]
        if missing:
            raise EntityError(
                422,
                "invalid_entity_properties",
                f'Entity "{ident}" does not match the schema of blueprint "{bp}": '
                f"must have required property '{missing[0]}'",
            )

    def _delete(self, keys: set[Key], with_dependents: bool) -> set[Key]:
        doomed = set(keys)
        frontier = {ident for _, ident in doomed}
        while with_dependents and frontier:
            new = {k for k, s in self.store.items() if k not in doomed and _points_at(s.entity, frontier)}
            doomed |= new
            frontier = {ident for _, ident in new}
        for key in doomed:
            self.store.pop(key, None)
        return doomed

    # -- search -------------------------------------------------------------------------------

    def _matches(self, key: Key, query: Any) -> bool:
        if not isinstance(query, dict) or "rules" not in query:
            raise EntityError(422, "invalid_request", "a search query needs 'combinator' and 'rules'")
        results = [
            self._matches(key, rule) if "combinator" in rule else self._rule(key, rule) for rule in query["rules"]
        ]
        return any(results) if query.get("combinator") == "or" else all(results)

    def _rule(self, key: Key, rule: dict[str, Any]) -> bool:
        stored = self.store[key]
        prop, op, value = rule.get("property"), rule.get("operator"), rule.get("value")
        special = {
            "$identifier": key[1],
            "$blueprint": key[0],
            "$datasource": stored.datasource,
            "$title": stored.entity.get("title"),
        }
        actual = special[prop] if prop in special else (stored.entity.get("properties") or {}).get(prop)
        if op == "=":
            return actual == value
        if op == "!=":
            return actual != value
        if op == "in":
            return actual in (value or [])
        if op == "contains":
            return isinstance(actual, str) and isinstance(value, str) and value in actual
        raise EntityError(422, "invalid_request", f"unsupported search operator {op!r}")


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": error, "message": message}, status=status)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))
