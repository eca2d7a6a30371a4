"""Plain jq paths (`.a.b`, `.a == "x"`) are answered in Python: the answers must be jq's own.

Every case is checked against the jq program itself (`compile_jq(...).input_value`), the way
`JqQuery` ran every expression before: same outputs, same error messages.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.mapping.jq import UNSUPPORTED, JqQuery, SimplePath, compile_jq, jq_can_read
from ocean_hook.pipeline import PayloadError, parse_payload

EXPRESSIONS = [
    ".", ".a", ".a.b", ".b.a.number", ".number", " .a.b ", ".a == null", ".a != null", '.a.b == "deleted"',
    ".a != 'x'", ".a == true", ".a.b != false", ". == null", '.a == "é"',
]


def by_jq(expr: str, value: Any) -> tuple[str, Any]:
    try:
        return "ok", list(compile_jq(expr).input_value(value))
    except ValueError as exc:
        return "error", str(exc)


def by_query(expr: str, value: Any) -> tuple[str, Any]:
    try:
        return "ok", JqQuery(expr).all(value)
    except ValueError as exc:
        return "error", str(exc)


def same(a: Any, b: Any) -> bool:
    """Equal with types (1 is not 1.0 nor True) and key order."""
    return repr(a) == repr(b)


keys = st.sampled_from(["a", "b", "number", "1"])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "deleted", "é", "😀", "\ud800", "a\x00b"]), st.text(max_size=4),
)
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(EXPRESSIONS), st.one_of(values, st.dictionaries(keys, values, max_size=4)))
def test_every_answer_is_jqs(expr: str, value: Any) -> None:
    assert same(by_query(expr, value), by_jq(expr, value))


@pytest.mark.parametrize(
    ("expr", "value", "expected"),
    [
        (".a.b", {"a": {"b": 7}}, [7]),
        (".a.b", {"a": None}, [None]),  # null.b is null
        (".a.b", {}, [None]),
        ('.action == "deleted"', {"action": "deleted"}, [True]),
        ('.action != "deleted"', {"action": "deleted"}, [False]),
        (".a == true", {"a": 1}, [False]),  # jq: 1 is not true
        (".a == null", {"a": False}, [False]),
    ],
)
def test_plain_paths_are_answered_in_python(expr: str, value: Any, expected: list[Any]) -> None:
    assert SimplePath.parse(expr) is not None
    assert JqQuery(expr).all(value) == expected == by_jq(expr, value)[1]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": 5.0}, "jq gives 5 for 5.0"),
        ({"a": 2**60}, "jq numbers are doubles"),
        ({"a": math.inf}, "jq gives the largest double"),
        ({"a": [1, 2.0]}, "inside a list too"),
        ({"a": "x", "b": "\ud800"}, "a lone surrogate anywhere: jq cannot parse the input"),
        ({"a": [1]}, "a plain list"),
    ],
)
def test_results_jq_would_change_are_left_to_jq(value: Any, why: str) -> None:
    assert same(by_query(".a", value), by_jq(".a", value)), why


@pytest.mark.parametrize("value", ["text", [1], 3, True, {"a": "text"}])
def test_indexing_anything_but_an_object_is_jqs_error(value: Any) -> None:
    with pytest.raises(ValueError) as raised:
        JqQuery(".a.b").first(value)
    assert by_jq(".a.b", value) == ("error", str(raised.value))


@pytest.mark.parametrize("expr", [".a[0]", ".a | .b", "..", '.a == "x\\"y"', ".a == 1", '."a"', ".a // 1"])
def test_anything_else_runs_in_jq(expr: str) -> None:
    assert SimplePath.parse(expr) is None


def test_a_parsed_payload_is_trusted_without_serializing_and_a_lone_surrogate_never_parses() -> None:
    headers = make_headers({"Content-Type": "application/json"})
    pair = parse_payload(WebhookEvent("POST", "/h", headers, b'{"a": "\\u00e9\\ud83d\\ude00"}'))
    assert jq_can_read.value is pair and jq_can_read.readable
    assert by_query(".a", pair) == by_jq(".a", pair) == ("ok", ["\u00e9\U0001f600"])
    with pytest.raises(PayloadError, match="half of a surrogate pair"):
        parse_payload(WebhookEvent("POST", "/h", headers, b'{"a": "\\ud800"}'))
    lone = json.loads('{"a": "\\ud800"}')  # a value from elsewhere is checked when a query asks
    assert by_query(".a", lone) == by_jq(".a", lone)
    assert by_query(".a", lone)[0] == "error"  # jq cannot parse a lone surrogate at all


def test_unsupported_marker_is_never_an_answer() -> None:
    assert all(v is not UNSUPPORTED for v in JqQuery(".").all(json.loads('{"a": [1, {"b": null}]}')))
