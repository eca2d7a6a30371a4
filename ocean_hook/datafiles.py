"""Reading user data files: raw items (JSON, JSON array, JSON Lines) and entity state lists.

Items are streamed, so `test-mapping --data` over 100,000 items never holds the whole file.
Errors name the file and line.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson

from ocean_hook import jsontext
from ocean_hook.entity import Entity, EntityKey, mapped_fields, required_key
from ocean_hook.errors import InputError
from ocean_hook.jsontext import JsonProblem

#: `-d -`: the items come from standard input (named so in errors)
STDIN = Path("-")


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError("file not found", where=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", where=str(path)) from None


def _first_char(handle: Any) -> bytes:
    """The first byte that is not white space, left unread: a pipe cannot be read twice."""
    while True:
        c = handle.peek(1)[:1]
        if not c or not c.isspace():
            return c
        handle.read(1)


def _refuse_utf16_or_32(start: bytes, path: Path) -> None:
    """A UTF-16 or UTF-32 byte order mark, or the NUL bytes their ASCII characters carry, in the
    first bytes: said plainly (it read as "invalid JSON: Extra data", or json.loads took it)."""
    if start.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in start:
        raise InputError("not UTF-8 text (it looks like UTF-16 or UTF-32): save it as UTF-8", where=str(path))


def _rereadable(path: Path) -> bool:
    """A regular file can be read again (to locate an error, or to parse it whole); a pipe cannot."""
    return path.is_file()


def iter_items(path: Path) -> Iterator[Any]:
    """Each raw item of a JSON object (one item), a JSON array (many) or JSON Lines; read once,
    front to back, so `-` (standard input), a pipe or `/dev/stdin` work as well as a file."""
    if path == STDIN:
        stream = sys.stdin.buffer
        yield from _iter_stream(stream if hasattr(stream, "peek") else io.BufferedReader(stream), Path("<stdin>"))
        return
    with _open(path) as handle:
        yield from _iter_stream(handle, path)


def _iter_stream(handle: Any, path: Path) -> Iterator[Any]:
    _refuse_utf16_or_32(handle.peek(4)[:4], path)
    first = _first_char(handle)
    if first == b"[":
        yield from _iter_array(handle, path)
    elif first == b"":
        raise InputError("file is empty (expected a JSON object, array or JSON Lines)", where=str(path))
    else:
        yield from _iter_lines_or_object(handle, path)


#: how yajl, ijson's fast parser, refuses a number past 64 bits: valid JSON all the same
_NUMBER_OVERFLOW = ("integer overflow", "numeric (floating point) overflow")


#: a \uD800-\uDFFF escape that is not half of a pair (an escaped backslash before it is no escape)
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(?:(?P<high>\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


#: a thousand arrays opened in a row: deeper than Python's parser reads (the other layouts refuse
#: it), and ijson's cost grows with the square of the depth (`[` * 100,000 took 24 GB)
_TOO_DEEP = re.compile(rb"\[(?:\s*\[){999}")


class _Watch:
    """The file as ijson reads it, refusing on the way what Python's parser (objects, JSON Lines,
    the door) refuses and yajl would not: a lone surrogate escape (yajl reads it as "?" without a
    word) and arrays nested past Python's depth."""

    def __init__(self, handle: Any, path: Path) -> None:
        self.handle, self.path = handle, path
        self.tail = b""
        #: lines before the last chunk read, and up to its end: where a fault yajl found must be
        self.lines = (1, 1)

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.lines = (self.lines[1], self.lines[1] + data.count(b"\n"))
        window = self.tail + data
        if b"\\u" in window:
            for found in _LONE_SURROGATE.finditer(window):
                # judged with the chunk before, where it had what comes before it (the look-back
                # can start inside a first half, whose second half then looks alone)
                if found.end() <= len(self.tail) - 6:
                    continue
                # a first half at the very end may have its pair in the next chunk: judged with it
                if not found["high"] or not data or found.end() + 6 <= len(window):
                    raise InputError(f"invalid JSON: {jsontext.LONE_SURROGATE}", where=str(self.path))
        if _TOO_DEEP.search(window):
            raise InputError("invalid JSON: nested too deeply", where=str(self.path))
        self.tail = window[-24:]  # room for the pair and the backslashes before it
        return data


def _iter_array(handle: Any, path: Path) -> Iterator[Any]:
    done = 0
    watch = _Watch(handle, path)
    try:
        for item in ijson.items(watch, "item", use_float=True):
            yield item
            done += 1
        return
    except UnicodeDecodeError:  # yajl's bytes for a string that is not UTF-8
        raise _located(path, NOT_UTF8, watch.lines) from None
    except ijson.JSONError as exc:
        if not any(text in str(exc) for text in _NUMBER_OVERFLOW):
            raise _located(path, _yajl_text(exc), watch.lines) from None
        if not _rereadable(path):
            raise InputError(f"a number past 64 bits in item {done}: the streaming parser cannot read it from a "
                             "pipe; give a file, or JSON Lines", where=str(path)) from None
    # a number past 64 bits (a 128-bit id, say): Python's own parser takes it, reading the file whole
    yield from load_json(path)[done:]


NOT_UTF8 = "not UTF-8 text"


def _yajl_text(exc: Exception) -> str:
    """What yajl says, as our message: its message is bytes, with a copy of the data around the
    fault; only its first line is kept (quoting the data could put a secret, or a terminal
    escape, in a CI log)."""
    said = exc.args[0] if exc.args else str(exc)
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    if "invalid bytes in UTF8 string" in text:
        return NOT_UTF8
    return f"invalid JSON: {text.strip().splitlines()[0] if text.strip() else 'not valid JSON'}"


#: a file up to this size is read again whole to say the line and column of a fault (Python's
#: parser takes about nine times the file's size); a larger one gets the lines of the chunk
#: where the streaming parser stopped (a truncated 1 GB file took 9 GB to say where it ended)
LOCATE_WHOLE_BYTES = 16 * 1024 * 1024


def _located(path: Path, said: str, lines: tuple[int, int]) -> InputError:
    """The streaming parser (which `said` what is wrong, between `lines`) does not say where
    exactly: Python's parser says it, reading the file again whole, when it can be read again
    and is not too large (error path only)."""
    if not _rereadable(path):
        return InputError(said, where=str(path))
    try:
        if path.stat().st_size > LOCATE_WHOLE_BYTES:
            first, last = lines
            return InputError(said, where=f"{path}:{first}" if first == last else f"{path}, lines {first}-{last}")
        load_json(path)
    except InputError as exc:
        return exc
    except OSError:
        pass
    return InputError(said, where=str(path))


def _iter_lines_or_object(handle: Any, path: Path) -> Iterator[Any]:
    read = [handle.readline()]  # kept, to parse again as one document if that is what it is
    try:
        first = jsontext.loads(read[0])
    except ValueError:  # not one JSON document on the first line: the whole file is one
        first = None
    rest, line_no = handle.readline(), 2
    while rest and not rest.strip():
        read.append(rest)
        rest, line_no = handle.readline(), line_no + 1
    if first is None or not rest:  # a single (possibly pretty-printed) JSON document
        yield from _whole_document(b"".join(read) + rest + handle.read(), path)
        return
    yield first
    while rest:
        if rest.strip():
            yield _record(rest, path, line_no)
        rest, line_no = handle.readline(), line_no + 1


def _record(line: bytes, path: Path, line_no: int) -> Any:
    try:
        return jsontext.loads(line)
    except json.JSONDecodeError as exc:
        column = min(exc.pos, len(line.rstrip(b"\r\n"))) + 1
        raise InputError(f"invalid JSON Lines record: {jsontext.reason(exc)}",
                         where=f"{path}:{line_no}:{column}") from None
    except UnicodeDecodeError:
        raise InputError("invalid JSON Lines record: not UTF-8 text", where=f"{path}:{line_no}") from None
    except JsonProblem as exc:
        raise InputError(f"invalid JSON Lines record: {exc}", where=f"{path}:{line_no}") from None


def _whole_document(raw: bytes, path: Path) -> Iterator[Any]:
    doc = load_json(path, raw)
    if isinstance(doc, list):
        yield from doc
    else:
        yield doc


def load_json(path: Path, raw: bytes | None = None) -> Any:
    """A whole JSON document; errors name file:line:column."""
    if raw is None:
        with _open(path) as handle:
            raw = handle.read()
    _refuse_utf16_or_32(raw[:4], path)
    try:
        return jsontext.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {jsontext.reason(exc)}", where=f"{path}:{exc.lineno}:{exc.colno}") from None
    except UnicodeDecodeError:
        raise InputError(NOT_UTF8, where=str(path)) from None
    except JsonProblem as exc:
        raise InputError(f"invalid JSON: {exc}", where=str(path)) from None


def load_state(path: Path) -> dict[EntityKey, Entity]:
    """A JSON list of Port entities (as `catalog export` writes, or Port's API returns them),
    keyed by (blueprint, identifier)."""
    state: dict[EntityKey, Entity] = {}
    for n, entity in enumerate(iter_items(path)):
        state[required_key(entity, n, where=str(path))] = mapped_fields(entity)  # Port's export as it is
    return state
