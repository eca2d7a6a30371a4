"""JSON as ocean-hook takes it, from a webhook body or a data file: what the standard allows and
jq can read, and nothing Python's parser adds.

`json.loads` also takes `NaN` and `Infinity` (not JSON: jq reads them as null and 1.8e308) and
`\\ud83d` escapes that are half of a surrogate pair (not Unicode text: jq cannot read the payload
at all, so every query about it fails as if the field were missing). Both are refused here, as
are numbers of more digits than Python converts and nesting deeper than its recursion allows,
each with a reason, so the door and the file readers word them the same way. A number past a
double's range (`1e400`, valid JSON) is read as jq reads it, the largest double.

The depth is checked here, not left to a RecursionError: up to 3.11 Python's parser recursed
under `sys.getrecursionlimit()` (1000), but from 3.12 it counts against the C stack's limit
instead (1500 levels on 3.12, 10,000 on 3.13), so a 3,000-deep document was taken on 3.13 alone.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any


class JsonProblem(ValueError):
    """Valid JSON syntax aside, why a document cannot be taken (no position: the parser has none)."""


LONE_SURROGATE = "a \\u escape is half of a surrogate pair, which is not Unicode text"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


#: nesting this deep or deeper is refused on every Python: about where 3.11's parser stopped, and
#: where the streaming reader stops (`datafiles._TOO_DEEP`, a thousand arrays in a row)
TOO_DEEP = 1000


def nested_too_deeply(value: Any) -> bool:
    """Whether `value` nests lists and dicts `TOO_DEEP` levels or more: walked a level at a time,
    without recursing (a 15 MB document of 600,000 containers: 0.35 s, against 1.2 s to parse)."""
    if type(value) is not dict and type(value) is not list:
        return False
    level = [value]
    for _ in range(TOO_DEEP - 1):
        level = [child for item in level for child in (item.values() if type(item) is dict else item)
                 if type(child) is dict or type(child) is list]
        if not level:
            return False
    return True


def _may_be_too_deep(document: str | bytes) -> bool:
    """Cheap (two memchr-speed counts): a document with fewer brackets cannot nest that deep."""
    if isinstance(document, str):
        return document.count("[") + document.count("{") >= TOO_DEEP
    return document.count(b"[") + document.count(b"{") >= TOO_DEEP


def reason(exc: json.JSONDecodeError) -> str:
    """Python's message for a JSON error, finished: 'Invalid control character at' (its place
    is said apart, as line and column) left a sentence hanging."""
    if exc.msg == "Invalid control character at":
        return "a control character in a string (write it escaped: \\n, \\t, \\u0001)"
    return exc.msg


def too_many_digits() -> str:
    """Why json raised a plain ValueError, not a JSONDecodeError: Python refuses to convert an
    integer of more than `sys.get_int_max_str_digits()` digits (a guard against quadratic-time
    conversion), and says nothing of where the number was."""
    return f"a number has more than {sys.get_int_max_str_digits()} digits"


def _not_a_number(name: str) -> Any:
    raise JsonProblem(f"{name} is not a JSON number")


def _number(text: str) -> float:
    """A number past a double's range (1e400) is the largest double, as jq reads it: Python's
    `inf` came out as `Infinity`, which is not JSON, in every document written back."""
    value = float(text)
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value


def loads(document: str | bytes) -> Any:
    """`json.loads` that refuses what JSON does not allow. Raises `json.JSONDecodeError` (with its
    line and column) for bad syntax, `UnicodeDecodeError` for bytes that are not text, and
    `JsonProblem` for the rest."""
    try:
        value = json.loads(document, parse_constant=_not_a_number, parse_float=_number)
    except (json.JSONDecodeError, UnicodeDecodeError, JsonProblem):
        raise
    except ValueError:
        raise JsonProblem(too_many_digits()) from None
    except RecursionError:
        raise JsonProblem("nested too deeply") from None
    if _may_be_too_deep(document) and nested_too_deeply(value):
        raise JsonProblem("nested too deeply")
    if has_surrogate_escape(document) and has_lone_surrogate(value):
        raise JsonProblem(LONE_SURROGATE)
    return value


def has_surrogate_escape(document: str | bytes) -> bool:
    """Cheap: most documents hold no `\\uD8xx`-`\\uDFxx` escape at all (checked first, a memchr)."""
    if isinstance(document, str):
        return "\\" in document and _SURROGATE_ESCAPE.search(document) is not None
    return b"\\" in document and _SURROGATE_ESCAPE_BYTES.search(document) is not None


def has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values: Python's `True == 1` and `False == 0` would hide a property whose
    type changed (`true` → `1`) from the diff, the catalog and `--expect`. `1` and `1.0` are one
    JSON number."""
    return a == b and _same_types(a, b)


def _same_types(a: Any, b: Any) -> bool:
    """For values already `==`: dicts with the same keys, lists of the same length."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    if isinstance(a, dict):
        return all(_same_types(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True
