"""JSON as ocean-hook takes it, from a webhook body or a data file: what the standard allows and
jq can read, and nothing Python's parser adds.

`json.loads` also takes `NaN` and `Infinity` (not JSON: jq reads them as null and 1.8e308) and
`\\ud83d` escapes that are half of a surrogate pair (not Unicode text: jq cannot read the payload
at all, so every query about it fails as if the field were missing). Both are refused here, as
are numbers of more digits than Python converts and nesting deeper than its recursion allows,
each with a reason, so the door and the file readers word them the same way. A number past a
double's range (`1e400`, valid JSON) is read as jq reads it, the largest double.
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
