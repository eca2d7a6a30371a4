"""The shared queue: Redis Streams with one consumer group, for several `serve` instances.

Where a delivery lives (P is the stream name, default ``ocean-hook``):

    P             main stream: runnable deliveries. Unread = pending; in the group's PEL = in progress.
    P:wait        deliveries waiting for an earlier delivery with the same order key
    P:retry       failed deliveries waiting for their next attempt; P:retry:due is a ZSET of
                  their entry ids scored by due time (the persisted schedule)
    P:dead        dead letters
    P:done        finished deliveries, the last `maxlen` of them (history for `deliveries show`)
    P:loc         HASH seq -> "<m|w|r|d|D> <entry id>": which stream holds a delivery now
    P:seq         counter behind the queue id
    P:dedup:<path> <id>  (path, delivery id) -> seq, expiring after the dedup window: one
                  sender's id says nothing about another's, on another path
    P:id:<id>     delivery id -> seq of its latest delivery, as long (for `deliveries show`)
    P:active      HASH order key -> seq of the one delivery of that key in P or P:retry
    P:q:<key>     ZSET of waiting seqs of that key, scored by seq (= arrival order)
    P:deadkeys    HASH order key -> how many of its deliveries are dead letters
    P:applied     HASH order key -> seq of its latest delivery applied while it had dead letters
                  (what `superseded` compares a dead letter's seq with)

Every entry carries the whole delivery (raw body bytes, headers JSON, processors JSON, order key,
received_at) plus its record (seq, attempts, last_error, next_attempt_at, updated_at). Entries are
immutable, so a state change is a move: one Lua script reads the entry, XADDs it with the new
record to the next stream and XDELs the original, all atomically. Because a delivery changes entry
ids as it moves, its queue id (`Delivery.id`) is `seq`, a counter value given at `put` that never
changes; `P:loc` maps it to the current entry.

Retries: `retry_later` moves the entry to P:retry and schedules it in P:retry:due; every `claim`
first runs a script that moves due retries back to P. The move is one script, so two instances
never both move the same retry.

Stream length: finished work is XACKed and XDELed from P in the same script, so P holds exactly
the unfinished runnable work, never acknowledged history, and is never trimmed: no pending entry
can be dropped. The acknowledged history is P:done, trimmed to `maxlen` (oldest first) each time
a delivery finishes. P:dead shrinks only through `purge` or `requeue`.

Ordering per order key, across instances. What holds:
1. At most one delivery per key is *active* (in P or in P:retry); the others wait in P:wait. The
   active one is always the key's oldest unfinished delivery: `put` appends in seq order, and when
   the active one is acked or dead-lettered the same script promotes the smallest waiting seq.
   A requeued dead letter goes back into the key's queue at its old seq (before later ones).
2. An entry in P is owned by at most one consumer (the group's PEL). ack/retry/dead-letter act only
   if this queue object claimed that very entry and the PEL still names its consumer; a takeover
   re-adds the entry under a new id, so a worker whose claim was taken over cannot end it.
3. Claims are kept alive: a background heartbeat resets the PEL idle time of this object's claims
   every claim_idle_seconds/3 (XCLAIM ... JUSTID, only while still ours). XAUTOCLAIM
   (`recover`, and from `claim` every claim_idle_seconds/2) therefore takes over only claims of
   consumers silent for claim_idle_seconds: crashed ones, or ones whose event loop stalled.
Consequently a later delivery never starts before an earlier one with the same key has finished,
unless a worker stalls for longer than claim_idle_seconds: then its claim is re-run elsewhere,
and the stalled worker's own late writes for that delivery may still land after the re-run and
the deliveries after it (at-least-once). Choose claim_idle_seconds well above the longest stall.

Durability: the delivery is in Redis when `put` returns; whether it survives a Redis restart is
Redis' persistence setting (`appendonly yes`, `appendfsync everysec` or `always`), not ours.

`recover()` at start-up re-queues this consumer's own PEL entries (a restart under the same
consumer name) and idle entries of other consumers. Consumer names must be unique among running
instances. Needs Redis >= 6.2 (XAUTOCLAIM), one node: the scripts touch keys derived from data.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, cast
from urllib.parse import SplitResult, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from ocean_hook.queue.base import (
    Delivery,
    DeliveryState,
    PutResult,
    Queue,
    QueueMissing,
    QueueUnavailable,
    Requeued,
)
from ocean_hook.queue.codec import (
    clip_error,
    decode_headers,
    decode_processors,
    empty_depth,
    encode_headers,
    encode_processors,
)

log = logging.getLogger(__name__)

# Shared by every script. ARGV[1] is the stream name P; ARGV[2] the group.
LUA_PRELUDE = r"""
local P = ARGV[1]
local G = ARGV[2]
local function k(suffix) return P .. ':' .. suffix end

local function entry(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  if #found == 0 then return nil end
  return found[1][2]
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local function with(fields, changes)
  local out, seen = {}, {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    local value = changes[name]
    if value == nil then value = fields[i + 1] else seen[name] = true end
    out[#out + 1] = name
    out[#out + 1] = value
  end
  for name, value in pairs(changes) do
    if not seen[name] then
      out[#out + 1] = name
      out[#out + 1] = value
    end
  end
  return out
end

local function locate(seq)
  local loc = redis.call('HGET', k('loc'), seq)
  if not loc then return nil, nil end
  return string.sub(loc, 1, 1), string.sub(loc, 3)
end

local function add(code, stream, seq, fields)
  local id = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('HSET', k('loc'), seq, code .. ' ' .. id)
  return id
end

-- A delivery becomes pending: runnable if its key is free (or already its own), else it waits.
local function place(seq, fields)
  local key = field(fields, 'order_key') or ''
  local active = key ~= '' and redis.call('HGET', k('active'), key)
  if key == '' or not active or active == seq then
    if key ~= '' then redis.call('HSET', k('active'), key, seq) end
    return add('m', P, seq, fields)
  end
  redis.call('ZADD', k('q:' .. key), seq, seq)
  return add('w', k('wait'), seq, fields)
end

-- The active delivery of a key is finished: the oldest waiting one of that key becomes runnable.
local function release(seq, key)
  if key == '' or redis.call('HGET', k('active'), key) ~= seq then return end
  redis.call('HDEL', k('active'), key)
  while true do
    local head = redis.call('ZRANGE', k('q:' .. key), 0, 0)[1]
    if not head then return end
    redis.call('ZREM', k('q:' .. key), head)
    local code, id = locate(head)
    local fields = code == 'w' and entry(k('wait'), id)
    if fields then
      redis.call('XDEL', k('wait'), id)
      redis.call('HSET', k('active'), key, head)
      add('m', P, head, fields)
      return
    end
  end
end

-- Re-add an abandoned claim as a new pending entry. The attempt it was (if it ever started) is
-- not counted: only attempts that ended are (see Queue.claim).
local function readd(id, fields)
  redis.call('XACK', P, G, id)
  redis.call('XDEL', P, id)
  add('m', P, field(fields, 'seq'), fields)
end

-- P:deadkeys counts the dead letters of each key; while a key has some, P:applied holds the seq
-- of its latest delivery applied since (what `superseded` compares). A dead letter is counted
-- until it is applied or purged: one requeued is marked `revived` and stays counted, so that if it
-- dies again the newer delivery applied meanwhile still supersedes it. The last one to go takes
-- the key's record along.
local function undead(key)
  if key == '' then return end
  if redis.call('HINCRBY', k('deadkeys'), key, -1) <= 0 then
    redis.call('HDEL', k('deadkeys'), key)
    redis.call('HDEL', k('applied'), key)
  end
end

local function owned(id, consumer)
  local pel = redis.call('XPENDING', P, G, id, id, 1)
  return #pel == 1 and pel[1][2] == consumer
end
"""

# ARGV: P, G, window_ms, now, delivery_id, path, field pairs...
LUA_PUT = r"""
local window_ms, now, delivery_id, path = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local dedup = k('dedup:' .. path .. ' ' .. delivery_id)
if delivery_id ~= '' then
  local existing = redis.call('GET', dedup)
  if existing then return {0, existing} end
end
local seq = tostring(redis.call('INCR', k('seq')))
if delivery_id ~= '' then
  redis.call('SET', dedup, seq, 'NX', 'PX', window_ms)
  redis.call('SET', k('id:' .. delivery_id), seq, 'PX', window_ms)
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
fields = with(fields, {seq = seq, attempts = '0', last_error = '', next_attempt_at = '',
                       updated_at = now})
place(seq, fields)
return {1, seq}
"""

# ARGV: P, G, now, limit
LUA_PROMOTE = r"""
local due = redis.call('ZRANGEBYSCORE', k('retry:due'), '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(due) do
  redis.call('ZREM', k('retry:due'), id)
  local fields = entry(k('retry'), id)
  if fields then
    redis.call('XDEL', k('retry'), id)
    add('m', P, field(fields, 'seq'), fields)
  end
end
return #due
"""

# ARGV: P, G, consumer, entry id, seq, outcome (done|retry|dead), now, attempts, error, due, maxlen
LUA_FINISH = r"""
local consumer, id, seq, outcome = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, attempts, err, due, maxlen = ARGV[7], ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local code, current = locate(seq)
if code ~= 'm' or current ~= id or not owned(id, consumer) then return 0 end
local fields = entry(P, id)
redis.call('XACK', P, G, id)
redis.call('XDEL', P, id)
if not fields then return 0 end
local changes = {attempts = attempts, updated_at = now}
changes.last_error = err  -- '' when done: an earlier attempt's error is not this outcome's
changes.next_attempt_at = due  -- '' when done or dead: there is no next attempt
if outcome == 'retry' then
  local rid = add('r', k('retry'), seq, with(fields, changes))
  redis.call('ZADD', k('retry:due'), due, rid)
  return 1
end
local key = field(fields, 'order_key') or ''
local revived = field(fields, 'revived') == '1'  -- a dead letter requeued: still counted
if outcome == 'dead' then
  add('d', k('dead'), seq, with(fields, changes))
  if key ~= '' and not revived then redis.call('HINCRBY', k('deadkeys'), key, 1) end
else
  add('D', k('done'), seq, with(fields, changes))
  if key ~= '' and redis.call('HEXISTS', k('deadkeys'), key) == 1
      and tonumber(seq) > tonumber(redis.call('HGET', k('applied'), key) or '0') then
    redis.call('HSET', k('applied'), key, seq)
  end
  if revived then undead(key) end
  local excess = redis.call('XLEN', k('done')) - maxlen
  if excess > 0 then
    for _, old in ipairs(redis.call('XRANGE', k('done'), '-', '+', 'COUNT', excess)) do
      local old_seq = field(old[2], 'seq')
      if redis.call('HGET', k('loc'), old_seq) == 'D ' .. old[1] then
        redis.call('HDEL', k('loc'), old_seq)
      end
      redis.call('XDEL', k('done'), old[1])
    end
  end
end
release(seq, key)
return 1
"""

# ARGV: P, G, consumer, mode (own|idle), min_idle_ms, count, forget_ms, ids this object works on...
LUA_RECOVER = r"""
local consumer, mode, min_idle, count, forget_ms = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local busy = {}
for i = 8, #ARGV do busy[ARGV[i]] = true end
local n = 0
if mode == 'own' then
  for _, p in ipairs(redis.call('XPENDING', P, G, '-', '+', count, consumer)) do
    local id = p[1]
    if not busy[id] then
      local fields = entry(P, id)
      if fields then readd(id, fields) n = n + 1 else redis.call('XACK', P, G, id) end
    end
  end
  return n
end
local claimed = redis.call('XAUTOCLAIM', P, G, consumer, min_idle, '0-0', 'COUNT', count)
for _, e in ipairs(claimed[2]) do
  if e and not busy[e[1]] then readd(e[1], e[2]) n = n + 1 end
end
-- Every restart under a fresh name leaves a consumer behind; forget long-silent empty ones.
-- Checked and deleted in one script, so a consumer that just read an entry is never dropped.
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', P, G)) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info.name ~= consumer and info.pending == 0 and info.idle > forget_ms then
    redis.call('XGROUP', 'DELCONSUMER', P, G, info.name)
  end
end
return n
"""

# ARGV: P, G, consumer, entry ids...
LUA_HEARTBEAT = r"""
local consumer = ARGV[3]
local n = 0
for i = 4, #ARGV do
  if owned(ARGV[i], consumer) then
    redis.call('XCLAIM', P, G, consumer, 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# ARGV: P, G, now, only_code (r|d|any), spare (1: leave superseded dead letters dead), seqs...
# Returns {requeued count, then pairs of spared seq and the newer (applied or active) seq}.
LUA_REQUEUE = r"""
local now, only, spare = ARGV[3], ARGV[4], ARGV[5] == '1'
local n, spared = 0, {}
for i = 6, #ARGV do
  local seq = ARGV[i]
  local code, id = locate(seq)
  if (code == 'd' or code == 'r') and (only == 'any' or only == code) then
    local stream = code == 'd' and k('dead') or k('retry')
    local fields = entry(stream, id)
    local key = fields and field(fields, 'order_key') or ''
    -- superseded: a newer delivery of its key applied, or active (the requeued one would wait behind it)
    local later = spare and code == 'd' and key ~= '' and math.max(
      tonumber(redis.call('HGET', k('applied'), key) or '0'), tonumber(redis.call('HGET', k('active'), key) or '0'))
    if later and later > tonumber(seq) then
      table.insert(spared, seq)
      table.insert(spared, tostring(later))
    else
      redis.call('XDEL', stream, id)
      if code == 'r' then redis.call('ZREM', k('retry:due'), id) end
      if fields then
        local changes = {attempts = '0', next_attempt_at = '', updated_at = now}
        if code == 'd' and key ~= '' then changes.revived = '1' end  -- counted until applied or purged
        place(seq, with(fields, changes))
        n = n + 1
      end
    end
  end
end
return {n, unpack(spared)}
"""

# ARGV: P, G, code (d|D), then pairs of entry id, seq
LUA_PURGE = r"""
local code = ARGV[3]
local stream = code == 'd' and k('dead') or k('done')
local n = 0
for i = 4, #ARGV, 2 do
  local id, seq = ARGV[i], ARGV[i + 1]
  local fields = code == 'd' and entry(stream, id)
  if redis.call('XDEL', stream, id) == 1 then
    n = n + 1
    if fields then undead(field(fields, 'order_key') or '') end
    if redis.call('HGET', k('loc'), seq) == code .. ' ' .. id then
      redis.call('HDEL', k('loc'), seq)
    end
  end
end
return n
"""

#: the keys beside the stream that the scripts write, with the type each must have
KEY_TYPES = {"loc": "hash", "seq": "string", "active": "hash", "wait": "stream", "retry": "stream",
             "retry:due": "zset", "dead": "stream", "done": "stream", "deadkeys": "hash", "applied": "hash"}

CODE_STATE = {
    "w": DeliveryState.PENDING,
    "r": DeliveryState.FAILED,
    "d": DeliveryState.DEAD,
    "D": DeliveryState.DONE,
}
CODE_SUFFIX = {"m": "", "w": ":wait", "r": ":retry", "d": ":dead", "D": ":done"}
STATE_STREAMS = {
    DeliveryState.PENDING: ("", ":wait"),
    DeliveryState.IN_PROGRESS: ("",),
    DeliveryState.FAILED: (":retry",),
    DeliveryState.DEAD: (":dead",),
    DeliveryState.DONE: (":done",),
}
PEL_SCAN = 10_000
PAGE = 500

Fields = dict[bytes, bytes]
#: a stream entry as this client reads it: (entry id, fields)
Entry = tuple[bytes, Fields]

# redis-py annotates replies as `bytes | str` (and stream entries as possibly None) to cover every
# client setting. This client is created with decode_responses=False, so reply strings are bytes.


def _text(value: bytes | str) -> str:
    """A reply string as text."""
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: object) -> list[Entry]:
    """An XRANGE/XREVRANGE reply: a list of (id, fields), all bytes; empty when nothing matched."""
    return cast(list[Entry], reply or [])


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


_PASSWORD_PARAMETER = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def redact_url(url: str) -> str:
    """The URL for messages (/readyz answers anyone): a password is a secret, in the user info
    or as `?password=`; a URL that does not parse may hold one anywhere, and is not shown."""
    parts = _parsed(url)
    if isinstance(parts, str) or parts.fragment or url.endswith("#"):  # a '#' in a password starts a fragment
        return f"{url.partition(':')[0]}://(a URL that does not parse)"
    query = _PASSWORD_PARAMETER.sub(r"\1***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    shown = urlunsplit(parts._replace(netloc=netloc, query=query))
    return shown if netloc else shown.replace(":", "://", 1)  # unix:///path keeps its slashes


def _parsed(url: str) -> SplitResult | str:
    """The URL's parts, or why it has none."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed on access: a ValueError for a port that is not a number
    except ValueError as exc:
        if "out of range" in str(exc):
            return "has a port out of range (1-65535)"
        return "is not a valid URL (percent-encode ':', '@', '/', '?' and '#' in a password)"
    return parts


def url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that quote none of it (it may hold a password)."""
    parts = _parsed(url)
    if isinstance(parts, str):
        return parts
    if parts.fragment or url.endswith("#"):
        return "has a '#': percent-encode it in a password (%23)"
    if parts.port == 0:  # redis-py would take it for "no port", and connect to 6379
        return "has port 0: give Redis' port (6379 by default)"
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        return "must end in a database number (/0), or nothing"
    return None


class RedisQueue(Queue):
    """Use `await RedisQueue.open(url)`; see the module docstring for the data layout."""

    #: Consumers with no pending entries, silent this long, are removed from the group.
    forget_consumers_after_seconds: float = 3600

    def __init__(
        self,
        url: str,
        *,
        stream: str = "ocean-hook",
        group: str = "ocean-hook",
        consumer: str | None = None,
        dedup_window_seconds: float = 7 * 86400,
        claim_idle_seconds: float = 30,
        maxlen: int = 100_000,
        max_connections: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer or default_consumer()
        self.dedup_window_seconds = dedup_window_seconds
        self.claim_idle_seconds = claim_idle_seconds
        self.maxlen = maxlen
        self.clock = clock
        # A blocking pool: a burst of webhooks waits for a connection instead of failing with 503.
        try:
            pool = self._pool(url, max_connections)
        except ValueError as exc:
            raise QueueUnavailable(f"redis {redact_url(url)}: {exc}") from None
        self._redis = aioredis.Redis.from_pool(pool)
        self._scripts = {
            name: self._redis.register_script(LUA_PRELUDE + body)
            for name, body in {
                "put": LUA_PUT,
                "promote": LUA_PROMOTE,
                "finish": LUA_FINISH,
                "recover": LUA_RECOVER,
                "heartbeat": LUA_HEARTBEAT,
                "requeue": LUA_REQUEUE,
                "purge": LUA_PURGE,
            }.items()
        }
        self._claims: set[str] = set()  # main-stream entry ids of the claims this object holds
        self._last_autoclaim = float("-inf")
        self._heartbeat: asyncio.Task[None] | None = None

    @staticmethod
    def _pool(url: str, max_connections: int) -> aioredis.BlockingConnectionPool:
        return aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=10,
            decode_responses=False,
            protocol=2,  # the reply shapes parsed below
            socket_connect_timeout=5,
            socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )

    @classmethod
    async def open(cls, url: str, *, create: bool = True, **options: Any) -> RedisQueue:
        """`create=False` for commands that only look: a missing stream is QueueMissing, and
        nothing is written (creating the group needs memory a full Redis refuses)."""
        queue = cls(url, **options)
        try:
            await (queue._create_group() if create else queue._require_stream())
            await queue._check_key_types()
        except (QueueUnavailable, QueueMissing):
            await queue._redis.aclose()
            raise
        except TypeError as exc:  # redis-py hands unknown ?options of the URL to each connection
            await queue._redis.aclose()
            problem = f"the URL has an option Redis does not know ({exc})"
            raise QueueUnavailable(f"redis {redact_url(url)}: {problem}") from None
        queue._heartbeat = asyncio.create_task(queue._keep_claims_alive())
        return queue

    async def __aenter__(self) -> RedisQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _available(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"redis {redact_url(self.url)}: {exc}") from exc

    async def _run(self, script: str, *args: Any) -> Any:
        async with self._available():
            return await self._scripts[script](args=[self.stream, self.group, *args])

    async def _require_stream(self) -> None:
        async with self._available():
            if not await self._redis.exists(self.stream):
                raise QueueMissing(f"no queue stream '{self.stream}' at {redact_url(self.url)} yet: serve creates it "
                                   "when it starts (check --queue and queue.stream)")
            groups = await self._redis.xinfo_groups(self.stream)
        if not any(_text(g.get("name") or b"") == self.group for g in groups):  # else Redis' own NOGROUP text
            raise QueueMissing(f"no consumer group '{self.group}' on the queue stream '{self.stream}' at "
                               f"{redact_url(self.url)}: serve creates it when it starts (check queue.group)")

    async def _check_key_types(self) -> None:
        """A key of another type under the stream's name (another program's) fails a script half
        way, after some of its writes: a delivery answered 503 yet stored. Refused at start."""
        async with self._available(), self._redis.pipeline(transaction=False) as pipe:
            for suffix in KEY_TYPES:
                pipe.type(f"{self.stream}:{suffix}")
            found = [_text(kind) for kind in await pipe.execute()]
        for (suffix, expected), kind in zip(KEY_TYPES.items(), found, strict=True):
            if kind not in ("none", expected):
                raise QueueUnavailable(
                    f"redis {redact_url(self.url)}: key '{self.stream}:{suffix}' is a {kind}, not the {expected} "
                    f"ocean-hook keeps there: is another program using the name '{self.stream}'? (queue.stream)")

    async def _create_group(self) -> None:
        async with self._available():
            try:
                await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # ------------------------------------------------------------------ put

    async def put(self, delivery: Delivery) -> PutResult:
        fields = [
            b"delivery_id", delivery.delivery_id,
            b"method", delivery.method,
            b"path", delivery.path,
            b"headers", encode_headers(delivery.headers),
            b"body", bytes(delivery.body),
            b"processors", encode_processors(delivery.processors),
            b"order_key", delivery.order_key,
            b"received_at", repr(float(delivery.received_at)),
        ]  # fmt: skip
        window_ms = max(1, int(self.dedup_window_seconds * 1000))
        accepted, seq = await self._run(
            "put", window_ms, repr(self.clock()), delivery.delivery_id, delivery.path, *fields
        )
        return PutResult(accepted=bool(accepted), id=seq.decode())

    # ------------------------------------------------------------------ workers

    async def claim(self, limit: int) -> list[Delivery]:
        if limit <= 0:
            return []
        await self._run("promote", repr(self.clock()), max(limit, 100))
        if time.monotonic() - self._last_autoclaim >= self.claim_idle_seconds / 2:
            await self._autoclaim()
        async with self._available():
            try:
                answer = await self._read_new(limit)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._create_group()
                answer = await self._read_new(limit)
        claimed = []
        for _, entries in answer or []:
            for entry_id, fields in entries:
                try:
                    delivery = to_delivery(fields, DeliveryState.IN_PROGRESS, in_progress=True)
                except (KeyError, ValueError, TypeError) as exc:
                    await self._drop_foreign(entry_id, exc)
                    continue
                delivery.claim = entry_id.decode()
                self._claims.add(delivery.claim)
                claimed.append(delivery)
        return claimed

    async def _drop_foreign(self, entry_id: bytes, exc: Exception) -> None:
        """An entry ocean-hook did not write (it always writes every field): never a delivery."""
        log.error("dropping stream entry %s of %s: not an ocean-hook delivery (%r)", entry_id, self.stream, exc)
        async with self._available():
            await self._redis.xack(self.stream, self.group, entry_id)
            await self._redis.xdel(self.stream, entry_id)

    async def _read_new(self, limit: int) -> Any:
        return await self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=limit
        )

    async def ack(self, delivery: Delivery) -> None:
        await self._finish(delivery, "done", None, None)

    async def retry_later(self, delivery: Delivery, error: str, delay_seconds: float) -> None:
        await self._finish(delivery, "retry", error, max(0.0, delay_seconds))

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        await self._finish(delivery, "dead", error, None)

    async def _finish(
        self, delivery: Delivery, outcome: str, error: str | None, delay: float | None
    ) -> None:
        entry_id = delivery.claim
        if entry_id is None or entry_id not in self._claims:
            log.warning("delivery %s was not claimed by this queue; ignoring %s", delivery.id, outcome)
            return
        now = self.clock()
        due = "" if delay is None else repr(now + delay)
        error = clip_error(error) if error is not None else ""
        done = await self._run(
            "finish", self.consumer, entry_id, delivery.id, outcome, repr(now),
            delivery.attempts, error, due, self.maxlen,
        )  # fmt: skip
        self._claims.discard(entry_id)  # a retry claimed again meanwhile is another entry, another claim
        if not done:
            log.warning("claim of delivery %s was taken over; its %s is ignored", delivery.id, outcome)
            return
        delivery.state = {"done": DeliveryState.DONE, "retry": DeliveryState.FAILED}.get(
            outcome, DeliveryState.DEAD
        )
        delivery.updated_at = now
        delivery.last_error = error or None
        if delay is not None:
            delivery.next_attempt_at = now + delay

    async def recover(self) -> int:
        """Re-queue our own stale claims (restart under the same name), then crashed consumers'."""
        own = await self._run("recover", self.consumer, "own", 0, PEL_SCAN, 0, *self._claims)
        return int(own) + await self._autoclaim()

    async def hand_back(self) -> int:
        """Another instance would take them over only once they had been idle claim_idle_seconds
        (a restart comes back under a new consumer name), their order keys blocked meanwhile."""
        if not self._claims:
            return 0
        handed = int(await self._run("recover", self.consumer, "own", 0, PEL_SCAN, 0))
        self._claims.clear()
        return handed

    async def _autoclaim(self) -> int:
        self._last_autoclaim = time.monotonic()
        min_idle = max(1, int(self.claim_idle_seconds * 1000))
        forget = int(self.forget_consumers_after_seconds * 1000)
        total = 0
        while True:
            busy = self._claims
            moved = int(await self._run("recover", self.consumer, "idle", min_idle, PAGE, forget, *busy))
            total += moved
            if moved < PAGE:
                return total

    async def _keep_claims_alive(self) -> None:
        interval = max(0.01, self.claim_idle_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            if not self._claims:
                continue
            try:
                await self._run("heartbeat", self.consumer, *self._claims)
            except Exception as exc:  # the heartbeat must outlive a Redis outage
                log.warning("cannot refresh claims: %s", exc)

    # ------------------------------------------------------------------ inspection and repair

    async def _matches(self, id_or_delivery_id: str) -> builtins.list[str]:
        """The seqs it may name, as the SQLite journal takes them: the queue id, then the newest
        delivery with that delivery id (a sender's id may be digits too). A delivery id is kept
        under `id:<id>` for the dedup window (`dedup:<id>` before de-duplication was per path);
        past it, dead and failed deliveries are still found by theirs, for `show` and `retry`."""
        key = str(id_or_delivery_id)
        found = []
        async with self._available():
            if key.isdigit() and await self._redis.hexists(f"{self.stream}:loc", key):
                found.append(key)
            seq = await self._redis.get(f"{self.stream}:id:{key}") or await self._redis.get(
                f"{self.stream}:dedup:{key}")
        if seq:
            return [*found, _text(seq)]
        kept = [side.seq for suffix in (":dead", ":retry") for side in await self._scan(suffix)
                if side.delivery_id == key]
        return [*found, max(kept, key=int)] if kept else found

    async def get(self, id_or_delivery_id: str) -> Delivery | None:
        found = await self._matches(id_or_delivery_id)
        return await self._get(found[0]) if found else None

    async def _get(self, seq: str) -> Delivery | None:
        async with self._available():
            loc = await self._redis.hget(f"{self.stream}:loc", seq)
            if not loc:
                return None
            code, entry_id = _text(loc).split(" ", 1)
            stream = self.stream + CODE_SUFFIX[code]
            found = _entries(await self._redis.xrange(stream, entry_id, entry_id))
            if not found:
                return None
            if code != "m":
                return to_delivery(found[0][1], CODE_STATE[code])
            pel = await self._redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        busy = bool(pel)
        state = DeliveryState.IN_PROGRESS if busy else DeliveryState.PENDING
        return to_delivery(found[0][1], state, in_progress=busy)

    async def list(self, state: DeliveryState | None = None, limit: int = 100) -> list[Delivery]:
        """Newest first by queue id. `P:loc` names every delivery's seq and stream, so the seqs
        are sorted first and only the entries listed are read (a stream's own order is when its
        entries arrived there: finishing order, not arrival)."""
        suffixes = set(STATE_STREAMS[state]) if state is not None else set(CODE_SUFFIX.values())
        loc_key = f"{self.stream}:loc"
        found: builtins.list[Delivery] = []
        async with self._available():
            pel = await self._pel_ids() if "" in suffixes else set()
            seqs = sorted((int(seq) for seq in await self._redis.hkeys(loc_key)), reverse=True)
            for start in range(0, len(seqs), PAGE):
                page = [str(seq) for seq in seqs[start:start + PAGE]]
                places = [_text(loc).split(" ", 1) for loc in await self._redis.hmget(loc_key, page) if loc]
                wanted = [(code, entry_id) for code, entry_id in places if CODE_SUFFIX[code] in suffixes]
                reads = self._redis.pipeline(transaction=False)
                for code, entry_id in wanted:
                    reads.xrange(self.stream + CODE_SUFFIX[code], entry_id, entry_id)
                for (code, _), entries in zip(wanted, await reads.execute(), strict=True):
                    for raw_id, fields in _entries(entries):
                        found.extend(self._classify(CODE_SUFFIX[code], raw_id, fields, pel,
                                                    CODE_STATE.get(code, DeliveryState.PENDING), state))
                if len(found) >= limit:
                    break
        return found[:limit]

    def _classify(
        self,
        suffix: str,
        entry_id: bytes,
        fields: Fields,
        pel: set[bytes],
        wanted: DeliveryState,
        only: DeliveryState | None,
    ) -> builtins.list[Delivery]:
        """Main-stream entries are pending or in progress depending on the PEL."""
        if suffix != "":
            return [to_delivery(fields, wanted)]
        busy = entry_id in pel
        actual = DeliveryState.IN_PROGRESS if busy else DeliveryState.PENDING
        if only is not None and actual is not only:
            return []
        return [to_delivery(fields, actual, in_progress=busy)]

    async def _pel_ids(self) -> set[bytes]:
        pending = await self._redis.xpending_range(self.stream, self.group, "-", "+", PEL_SCAN)
        return {cast(bytes, p["message_id"]) for p in pending}  # bytes: decode_responses=False

    async def requeue(self, id_or_delivery_id: str, *, spare_superseded: bool = False) -> Requeued:
        """The first match (see `_matches`) that is dead or failed."""
        for seq in await self._matches(id_or_delivery_id):
            found = await self._get(seq)
            if found is not None and found.state in (DeliveryState.DEAD, DeliveryState.FAILED):
                return await self._requeue("any", [seq], spare_superseded)
        return Requeued(0)

    async def requeue_dead(self, *, spare_superseded: bool = False) -> Requeued:
        """In arrival order (seq), not in the order they died: the oldest of a key must lead it
        again, as it would have, or an older update is applied over a newer one."""
        seqs = sorted((side.seq for side in await self._scan(":dead")), key=int)
        return await self._requeue("d", seqs, spare_superseded)

    async def _requeue(self, only: str, seqs: builtins.list[str], spare_superseded: bool) -> Requeued:
        """A page of seqs per script call; each decides (and spares) atomically for its page."""
        count = 0
        spared: dict[str, str] = {}
        for start in range(0, len(seqs), PAGE):
            batch = seqs[start : start + PAGE]
            reply = await self._run("requeue", repr(self.clock()), only, "1" if spare_superseded else "0", *batch)
            count += int(reply[0])
            pairs = [_text(part) for part in reply[1:]]
            spared.update(zip(pairs[::2], pairs[1::2], strict=True))
        return Requeued(count, spared)

    async def purge(self, older_than_seconds: float) -> int:
        cutoff = self.clock() - older_than_seconds
        total = 0
        for suffix, code in ((":dead", "d"), (":done", "D")):
            old = [(side.entry_id, side.seq) for side in await self._scan(suffix) if side.updated_at < cutoff]
            for start in range(0, len(old), PAGE):
                pairs = [part for pair in old[start : start + PAGE] for part in pair]
                total += int(await self._run("purge", code, *pairs))
        return total

    async def superseded(self) -> dict[str, str]:
        dead = [(side.seq, side.order_key) for side in await self._scan(":dead") if side.order_key]
        if not dead:
            return {}
        keys = sorted({key for _, key in dead})
        async with self._available():
            applied = await self._redis.hmget(f"{self.stream}:applied", keys)
            active = await self._redis.hmget(f"{self.stream}:active", keys)
        # as LUA_REQUEUE decides: a newer delivery applied, or active (one requeued would wait behind it)
        newest = {key: max(int(_text(a or b"0")), int(_text(b or b"0")))
                  for key, a, b in zip(keys, applied, active, strict=True)}
        return {seq: str(newest[key]) for seq, key in dead if newest[key] > int(seq)}

    async def _scan(self, suffix: str) -> builtins.list[_Side]:
        """Every entry of a side stream, oldest first."""
        out: builtins.list[_Side] = []
        start = "-"
        async with self._available():
            while True:
                page = _entries(await self._redis.xrange(self.stream + suffix, start, "+", count=PAGE))
                for entry_id, fields in page:
                    out.append(_Side(entry_id.decode(), fields[b"seq"].decode(),
                                     float(fields.get(b"updated_at") or 0),
                                     (fields.get(b"order_key") or b"").decode(),
                                     (fields.get(b"delivery_id") or b"").decode()))
                if len(page) < PAGE:
                    return out
                start = "(" + page[-1][0].decode()

    async def depth(self) -> dict[str, int]:
        counts = empty_depth()
        # no MULTI: a Redis at its maxmemory refuses every command queued in one, reads too, and
        # the depth is what an operator deciding what to purge needs then
        async with self._available(), self._redis.pipeline(transaction=False) as pipe:
            for suffix in ("", ":wait", ":retry", ":dead", ":done"):
                pipe.xlen(self.stream + suffix)
            pipe.xpending(self.stream, self.group)
            main, wait, retry, dead, done, pel = await pipe.execute()
        in_progress = int(pel["pending"])
        counts[DeliveryState.PENDING] = main - in_progress + wait
        counts[DeliveryState.IN_PROGRESS] = in_progress
        counts[DeliveryState.FAILED] = retry
        counts[DeliveryState.DEAD] = dead
        counts[DeliveryState.DONE] = done
        return counts

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self._redis.aclose()


class _Side(NamedTuple):
    """What `_scan` reads of an entry of a side stream (dead, done, retry)."""

    entry_id: str
    seq: str
    updated_at: float
    order_key: str
    delivery_id: str


def to_delivery(fields: Fields, state: DeliveryState, *, in_progress: bool = False) -> Delivery:
    """An entry's fields as a Delivery; a claimed entry counts the attempt now running."""

    def text(name: str) -> str:
        return fields.get(name.encode(), b"").decode()

    next_attempt = text("next_attempt_at")
    return Delivery(
        id=text("seq"),
        delivery_id=text("delivery_id"),
        method=text("method"),
        path=text("path"),
        headers=decode_headers(fields[b"headers"]),
        body=fields.get(b"body", b""),
        received_at=float(text("received_at")),
        processors=decode_processors(fields[b"processors"]),
        order_key=text("order_key"),
        state=state,
        attempts=int(text("attempts") or 0) + (1 if in_progress else 0),
        last_error=text("last_error") or None,
        next_attempt_at=float(next_attempt) if next_attempt else None,
        updated_at=float(text("updated_at")) if text("updated_at") else None,
    )
