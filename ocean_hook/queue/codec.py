"""How both queue backends store the parts of a delivery that are not plain strings.

Headers are a JSON list of [name, value] pairs, not an object: senders repeat headers, and a
repeated signature header must reach the verifier as it was received.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _quoted  # type: ignore[attr-defined]

from ocean_hook.queue.base import DeliveryState

#: Every state, so `depth()` reports zeros instead of leaving states out.
ALL_STATES = tuple(str(state) for state in DeliveryState)

#: A stack trace as last error would bloat the journal row and every `deliveries list`.
MAX_ERROR_CHARS = 4000


def encode_headers(headers: list[tuple[str, str]]) -> str:
    """`json.dumps` of the pairs, byte for byte, in half its time (every put stores headers)."""
    return "[" + ", ".join(f"[{_quoted(name)}, {_quoted(value)}]" for name, value in headers) + "]"


def decode_headers(text: str | bytes) -> list[tuple[str, str]]:
    return [(str(name), str(value)) for name, value in json.loads(text)]


def encode_processors(processors: list[str]) -> str:
    return json.dumps(list(processors))


def decode_processors(text: str | bytes) -> list[str]:
    return [str(name) for name in json.loads(text)]


def clip_error(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 3] + "..."


def empty_depth() -> dict[str, int]:
    return dict.fromkeys(ALL_STATES, 0)
