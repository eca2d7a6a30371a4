"""jq as Ocean users write it: single-quoted strings accepted, the environment walled off.

Ocean turns single-quote string delimiters into double quotes before compiling, with a regex.
This module does the same with a small tokenizer, so quotes inside double-quoted strings,
escapes and `\\(...)` interpolations are left alone (cases the regex gets wrong).

Most door and item expressions are plain paths (`.pull_request.number`, `.action == "deleted"`).
Every jq call parses its whole input (the binding serializes it to JSON text first), which costs
more than the expression, so `JqQuery` evaluates such paths on the Python value itself, and
only where the answer is certainly jq's own (see `SimplePath`); anything else runs in jq.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import jq as _jq

from ocean_hook.jsontext import has_lone_surrogate, has_surrogate_escape

#: Shadows `env` and `$ENV` so a mapping cannot copy secrets from the environment into the catalog.
_NO_ENV_PRELUDE = "def env: {}; {} as $ENV | "


class JqCompileError(ValueError):
    """A jq expression that does not compile; the message is jq's."""


def normalize_quotes(expr: str) -> str:
    """Rewrite `'text'` string literals as `"text"`, leaving everything else as written."""
    out: list[str] = []
    i, n = 0, len(expr)
    # stack of contexts: "code" (inside \( ... ) of a string, with its paren depth) or top level
    depth_stack: list[int] = []
    depth = 0
    while i < n:
        c = expr[i]
        if c == '"':
            j = _scan_double(expr, i, out)
            if j < 0:  # an interpolation opened: continue in code until its paren closes
                depth_stack.append(depth)
                depth = 0
                i = -j
                continue
            i = j
            continue
        if c == "'":
            i = _scan_single(expr, i, out)
            continue
        if c == "#":  # comment to end of line
            end = expr.find("\n", i)
            end = n if end < 0 else end
            out.append(expr[i:end])
            i = end
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0 and depth_stack:
                # end of an interpolation: resume the enclosing double-quoted string
                out.append(")")
                depth = depth_stack.pop()
                j = _scan_double(expr, i, out, resume=True)
                if j < 0:
                    depth_stack.append(depth)
                    depth = 0
                    i = -j
                else:
                    i = j
                continue
            depth -= 1
        out.append(c)
        i += 1
    return "".join(out)


def _scan_double(expr: str, i: int, out: list[str], *, resume: bool = False) -> int:
    """Copy a double-quoted string from `expr[i]`; return the index after it, or -(index) of
    the code after `\\(` when an interpolation starts."""
    start = i + 1
    if not resume:
        out.append('"')
    j = start
    n = len(expr)
    while j < n:
        c = expr[j]
        if c == "\\" and j + 1 < n:
            if expr[j + 1] == "(":
                out.append(expr[start:j + 2])
                return -(j + 2)
            j += 2
            continue
        if c == '"':
            out.append(expr[start:j + 1])
            return j + 1
        j += 1
    out.append(expr[start:])  # unterminated: let jq report it
    return n


def _scan_single(expr: str, i: int, out: list[str]) -> int:
    """Copy a single-quoted string from `expr[i]` as a double-quoted one."""
    j = i + 1
    n = len(expr)
    buf: list[str] = ['"']
    while j < n:
        c = expr[j]
        if c == "\\" and j + 1 < n:
            nxt = expr[j + 1]
            buf.append("'" if nxt == "'" else c + nxt)
            j += 2
            continue
        if c == "'":
            buf.append('"')
            out.append("".join(buf))
            return j + 1
        buf.append('\\"' if c == '"' else c)
        j += 1
    out.append(expr[i:])  # unterminated: leave as written, jq reports it
    return n


@functools.lru_cache(maxsize=4096)
def compile_jq(expr: str, *, allow_env: bool = False) -> Any:
    """Compile once, to be reused for every item. Raises `JqCompileError` with jq's message.

    Cached: a compiled program is immutable and reusable, and compiling with the environment
    guard costs milliseconds, so a mapping loaded again (each replay, each test) costs nothing.
    """
    program = normalize_quotes(expr)
    try:
        return _jq.compile(program if allow_env else _NO_ENV_PRELUDE + program)
    except ValueError:
        pass
    try:  # compile as written, so the error's line and column are the user's
        _jq.compile(program)
    except ValueError as exc:
        raise JqCompileError(_first_line(str(exc))) from None
    raise JqCompileError("does not compile together with the environment guard")


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0].removeprefix("jq: error: ").rstrip(":") if lines else "does not compile"


# ----------------------------------------------------------------------------- plain paths

#: "not answered here: ask jq"
UNSUPPORTED: Any = object()

_FIELD = r"[A-Za-z_][A-Za-z0-9_]*"
_SPACE = r"[ \t\r\n]*"
_SIMPLE = re.compile(
    rf"{_SPACE}\.(?P<path>{_FIELD}(?:\.{_FIELD})*)?{_SPACE}"
    rf'(?:(?P<op>==|!=){_SPACE}(?P<literal>null|true|false|"[^"\\\x00-\x1f]*"))?{_SPACE}'
)
_LITERALS: dict[str, Any] = {"null": None, "true": True, "false": False}
#: integers jq (numbers are doubles) hands back unchanged
_EXACT_INT = 2**53


class SimplePath:
    """`.a.b` (or `.`), optionally `== / !=` a null, boolean or plain string literal, in Python.

    jq's answer is only reproduced where it is certain: objects are walked (`null.a` is null),
    anything else (indexing a list or a string, which jq reports as an error) is left to jq, and
    so are results jq would change on the way through: integers beyond 2^53 and integral or
    non-finite floats (jq numbers are doubles), and inputs jq cannot parse at all (lone UTF-16
    surrogates, see `jq_can_read`).
    """

    def __init__(self, keys: tuple[str, ...], compare: Callable[[Any], bool] | None) -> None:
        self.keys = keys
        self.compare = compare

    @classmethod
    def parse(cls, expr: str) -> SimplePath | None:
        """For an expression jq compiled (so `.name` is a field, whatever the name)."""
        found = _SIMPLE.fullmatch(expr)
        if found is None:
            return None
        keys = tuple(found["path"].split(".")) if found["path"] else ()
        if found["op"] is None:
            return cls(keys, None)
        literal = found["literal"]
        expected = _LITERALS[literal] if literal in _LITERALS else literal[1:-1]
        equal = _equals(expected)
        return cls(keys, equal if found["op"] == "==" else lambda value: not equal(value))

    def pick(self, value: Any) -> Any:
        """The value at the path, as it is in `value` (no comparison), or UNSUPPORTED where only
        jq can say (a path through a list or a string)."""
        if self.compare is not None:
            return UNSUPPORTED
        for key in self.keys:
            if value is None:
                return None
            if type(value) is not dict:
                return UNSUPPORTED
            value = value.get(key)
        return value

    def __call__(self, value: Any) -> Any:
        """The one output, or UNSUPPORTED."""
        for key in self.keys:
            if value is None:
                break
            if type(value) is not dict:
                return UNSUPPORTED
            value = value.get(key)
        if self.compare is not None:
            if type(value) is float and not math.isfinite(value):  # jq reads NaN as null
                return UNSUPPORTED
            return self.compare(value)
        return value if _unchanged_by_jq(value) else UNSUPPORTED


def _equals(expected: Any) -> Callable[[Any], bool]:
    """jq's `==` against a literal: same type and value (1 == true is false in jq)."""
    if isinstance(expected, str):
        return lambda value: type(value) is str and value == expected
    return lambda value: value is expected


def _unchanged_by_jq(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            if not all(type(key) is str for key in item):
                return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is int:
            if not -_EXACT_INT <= item <= _EXACT_INT:
                return False
        elif kind is float:
            if item.is_integer() or not math.isfinite(item):  # jq gives 5 for 5.0
                return False
        elif not (kind is str or kind is bool or item is None):
            return False
    return True


def _readable(value: Any) -> bool:
    """jq parses what the binding sends it (`json.dumps(value)`), except lone surrogates."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return not (has_surrogate_escape(text) and has_lone_surrogate(value))


class _LastInput:
    """`jq_can_read` of the last input seen, by identity: the door asks several queries about
    one payload in a row, and so does a worker. Holds one reference, never grows."""

    def __init__(self) -> None:
        self.value: Any = UNSUPPORTED
        self.readable = False

    def __call__(self, value: Any) -> bool:
        if value is not self.value:
            self.value, self.readable = value, _readable(value)
        return self.readable

    def vouch(self, value: Any) -> None:
        """`value` came from `jsontext.loads`, which refuses what jq cannot read (lone surrogates,
        NaN): no need to serialize it again to find out."""
        self.value, self.readable = value, True


#: Whether jq can read a value at all; payloads are not mutated between the queries about them.
jq_can_read = _LastInput()


NESTED_TOO_DEEPLY = "the input is nested too deeply to pass to jq"


class JqQuery:
    """One compiled expression with Ocean's semantics: first output, or None."""

    def __init__(self, expr: str, *, allow_env: bool = False) -> None:
        self.expr = expr
        self._program = compile_jq(expr, allow_env=allow_env)
        self._simple = SimplePath.parse(normalize_quotes(expr))

    def _direct(self, value: Any) -> Any:
        """The one output of a plain path computed in Python, or UNSUPPORTED."""
        if self._simple is None:
            return UNSUPPORTED
        result = self._simple(value)
        if result is UNSUPPORTED or not jq_can_read(value):
            return UNSUPPORTED
        return result

    def first(self, value: Any) -> Any:
        """The first output; None when it yields nothing. Raises ValueError when jq errors."""
        result = self._direct(value)
        if result is not UNSUPPORTED:
            return result
        for result in self._input(value):
            return result
        return None

    def outputs(self, value: Any) -> Iterator[Any]:
        """The outputs, lazily: taking one never runs the expression further (Ocean's `first`)."""
        result = self._direct(value)
        if result is not UNSUPPORTED:
            return iter((result,))
        return iter(self._input(value))

    def all(self, value: Any) -> list[Any]:
        result = self._direct(value)
        if result is not UNSUPPORTED:
            return [result]
        return list(self._input(value))

    def select(self, value: Any) -> list[Any]:
        """`all`, except that a plain path picks its part of `value` as Python code would: the
        part is handed on, not printed, so no number goes through jq's doubles on the way
        (1234567890123456789 came out ...768, and 1.0 as 1, before the mapping saw them)."""
        picked = UNSUPPORTED if self._simple is None else self._simple.pick(value)
        return self.all(value) if picked is UNSUPPORTED else [picked]

    def _input(self, value: Any) -> Any:
        """jq's outputs for `value`; the binding serializes it first, which a value nested deeper
        than Python's recursion limit cannot survive: an error of the input, like jq's own."""
        try:
            return self._program.input_value(value)
        except RecursionError:
            raise ValueError(NESTED_TOO_DEEPLY) from None

    def truthy(self, value: Any) -> bool:
        """For conditions: the first output is jq-truthy (not false or null)."""
        result = self.first(value)
        return result is not None and result is not False
