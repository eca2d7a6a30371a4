"""The receive stage: a webhook delivery as received, and capture files of it.

A `WebhookEvent` keeps the exact raw body bytes: signatures are verified on them, never on
re-serialized JSON. The parsed payload is attached later by the pipeline (see `with_payload`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from ocean_hook.errors import InputError, quoted

#: Headers whose values are secrets: redacted in capture files and logs.
SECRET_HEADERS = frozenset(
    {"authorization", "cookie", "set-cookie", "x-gitlab-token", "proxy-authorization", "x-api-key"}
)
REDACTED = "[redacted]"

Headers = CIMultiDictProxy[str]


def make_headers(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> Headers:
    """Case-insensitive headers that keep duplicates (a duplicated signature header matters)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return CIMultiDictProxy(CIMultiDict(items))


@dataclass(frozen=True)
class WebhookEvent:
    """One HTTP delivery: what the sender sent, byte for byte."""

    method: str
    path: str
    headers: Headers
    body: bytes
    received_at: float = field(default_factory=time.time)
    delivery_id: str | None = None
    payload: Any = None
    parsed: bool = False

    # built directly rather than with `dataclasses.replace`, which costs ten times as much on
    # every delivery the door admits
    def with_payload(self, payload: Any) -> WebhookEvent:
        return WebhookEvent(self.method, self.path, self.headers, self.body, self.received_at,
                            self.delivery_id, payload, True)

    def with_delivery_id(self, delivery_id: str) -> WebhookEvent:
        return WebhookEvent(self.method, self.path, self.headers, self.body, self.received_at,
                            delivery_id, self.payload, self.parsed)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def redacted_headers(self) -> list[tuple[str, str]]:
        return [
            (k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in self.headers.items()
        ]


def new_delivery_id() -> str:
    """Fallback id for senders that give none: unique, so such deliveries are never de-duplicated."""
    return f"oh-{uuid.uuid4()}"


# ----------------------------------------------------------------------------- capture files


def event_to_capture(event: WebhookEvent, *, redact: bool = True) -> dict[str, Any]:
    """The capture document `replay` reads back. Secret-bearing headers are redacted."""
    headers = event.redacted_headers() if redact else list(event.headers.items())
    doc: dict[str, Any] = {
        "method": event.method,
        "path": event.path,
        "headers": [[_latin1_if_not_text(k), _latin1_if_not_text(v)] for k, v in headers],
        "delivery_id": event.delivery_id,
        "received_at": event.received_at,
    }
    try:
        doc["body"] = event.body.decode("utf-8")
    except UnicodeDecodeError:
        doc["body_base64"] = base64.b64encode(event.body).decode("ascii")
    return doc


def _latin1_if_not_text(value: str) -> str:
    """A header's bytes that are not UTF-8 reach us as lone surrogates (aiohttp's
    surrogateescape), which JSON cannot hold as text: the capture keeps them as Latin-1, HTTP's
    old charset for header bytes, so that the file replays (it was refused as invalid JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


def event_from_capture(doc: Any, *, where: str) -> WebhookEvent:
    """Rebuild an event from a capture document; `where` names the file in errors."""
    if not isinstance(doc, dict) or "path" not in doc or ("body" not in doc and "body_base64" not in doc):
        raise InputError("not a capture (needs 'path' and 'body' or 'body_base64')", where=where)
    headers = make_headers(_header_pairs(doc.get("headers") or [], where))
    if "body_base64" in doc:
        try:
            body = base64.b64decode(doc["body_base64"], validate=True)
        except (ValueError, TypeError):
            raise InputError("'body_base64' is not valid base64", where=where) from None
    else:
        body = _text(doc, "body", where).encode("utf-8")
    received_at = doc.get("received_at")
    if received_at is not None and (isinstance(received_at, bool) or not isinstance(received_at, int | float)):
        raise InputError(f"'received_at' must be a Unix time in seconds, got {quoted(received_at, 40)}", where=where)
    delivery_id = doc.get("delivery_id")
    return WebhookEvent(
        method=_text(doc, "method", where, "POST").upper(),
        path=_text(doc, "path", where),
        headers=headers,
        body=body,
        received_at=float(received_at or time.time()),
        delivery_id=None if delivery_id is None else _text(doc, "delivery_id", where),
    )


def _header_pairs(raw: Any, where: str) -> list[tuple[str, str]]:
    """`[[name, value], ...]` (or a mapping), names and values text: a hand-edited `null` or
    list was sent as the text "None" or "['application/json']" before."""
    pairs = list(raw.items()) if isinstance(raw, dict) else raw
    if not isinstance(pairs, list):
        raise InputError(f"'headers' must be a list of [name, value] pairs, got {quoted(raw, 40)}", where=where)
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise InputError(f"'headers' entry {index} must be a [name, value] pair of text, got {quoted(pair, 60)}",
                             where=where)
    return [(name, value) for name, value in pairs]


def _text(doc: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    """A capture field that must be a string (a hand-edited capture may hold anything)."""
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a string, got {quoted(value, 40)}", where=where)
    return value


def write_capture(directory: Path, event: WebhookEvent) -> Path:
    """Write one capture file atomically (temp file + rename), named after the delivery.

    The name sorts by arrival and ends in a random part: ids that clean up to the same text
    (`a?` and `a!`) in the same millisecond overwrote each other, and shared a temp file."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in (event.delivery_id or "x"))
    path = directory / f"{int(event.received_at * 1000)}-{safe[:80]}-{uuid.uuid4().hex[:8]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(event_to_capture(event), indent=2))
    tmp.replace(path)
    return path


def is_capture(doc: Any) -> bool:
    return isinstance(doc, dict) and "path" in doc and ("body" in doc or "body_base64" in doc)
