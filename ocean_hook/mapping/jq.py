"""jq as Ocean users write it: single-quoted strings accepted, the environment walled off.

Ocean turns single-quote string delimiters into double quotes before compiling, with a regex.
This module does the same with a small tokenizer, so quotes inside double-quoted strings,
escapes and `\\(...)` interpolations are left alone (cases the regex gets wrong).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jq as _jq

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


class JqQuery:
    """One compiled expression with Ocean's semantics: first output, or None."""

    def __init__(self, expr: str, *, allow_env: bool = False) -> None:
        self.expr = expr
        self._program = compile_jq(expr, allow_env=allow_env)

    def first(self, value: Any) -> Any:
        """The first output; None when it yields nothing. Raises ValueError when jq errors."""
        for result in self._program.input_value(value):
            return result
        return None

    def outputs(self, value: Any) -> Iterator[Any]:
        """The outputs, lazily: taking one never runs the expression further (Ocean's `first`)."""
        return iter(self._program.input_value(value))

    def all(self, value: Any) -> list[Any]:
        return list(self._program.input_value(value))

    def truthy(self, value: Any) -> bool:
        """For conditions: the first output is jq-truthy (not false or null)."""
        result = self.first(value)
        return result is not None and result is not False
