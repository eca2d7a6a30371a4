"""YAML loading that remembers where each value came from, so errors can name file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ocean_hook.errors import ConfigError

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class YamlDocument:
    """Plain Python data plus the line of every key, list element and scalar."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest known ancestor."""
        probe = tuple(path)
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return self.lines.get(probe)

    def where(self, path: KeyPath) -> str:
        """`file:line (key a.b[0].c)` for the nearest known ancestor of `path`."""
        line = self.line(path)
        loc = f"{self.file}:{line}" if line else self.file
        return f"{loc} (key {dotted(path)})" if path else loc

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(message, where=self.where(path))


class _DuplicateKey(Exception):
    def __init__(self, path: KeyPath, line: int, first: int) -> None:
        self.path, self.line, self.first = path, line, first


_MERGE = "tag:yaml.org,2002:merge"


def _merge(node: yaml.Node, path: KeyPath, out: dict[Any, Any], lines: dict[KeyPath, int], loader: Any) -> None:
    """`<<: *anchor` (or a list of them): keys of the anchored mappings not already in `out`,
    with the lines they were written on; a key written after the merge replaces it."""
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "<< merges mappings only", source.start_mark)
        found: dict[KeyPath, int] = {}
        for key, value in _construct(source, path, found, loader).items():
            if key not in out:
                out[key] = value
                child = (*path, str(key))
                lines.update({p: n for p, n in found.items() if p[: len(child)] == child})


def _construct(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], loader: Any) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        written: set[str] = set()  # keys written out here (a key merged in with << may be overridden)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                _merge(value_node, path, out, lines, loader)
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:  # `? [a, b]`: a list as a key
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value (text or a number), not a list or a mapping",
                    key_node.start_mark)
            name = str(key)
            child = (*path, name)
            # PyYAML would keep the last silently: a line of config ignored; `1` and `"1"` name
            # the same field once read as text
            if name in written:
                raise _DuplicateKey(child, key_node.start_mark.line + 1, lines[child])
            written.add(name)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, child, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(n, (*path, i), lines, loader) for i, n in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> YamlDocument:
    try:
        loader = yaml.SafeLoader(text)  # it refuses a control character here, before any parsing
    except yaml.reader.ReaderError as exc:
        char = ord(exc.character) if isinstance(exc.character, str) else exc.character
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"invalid YAML: a control character (#x{char:02x}) is not allowed", where=f"{file}:{line}"
                          ) from None
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = None if node is None else _construct(node, (), lines, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"invalid YAML: {exc.problem or exc.context}", where=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", where=file) from None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise ConfigError("invalid YAML: nested too deeply", where=file) from None
    except _DuplicateKey as dup:
        raise ConfigError(f"duplicate key '{dup.path[-1]}' (first at line {dup.first}; YAML keys must be unique)",
                          where=f"{file}:{dup.line} (key {dotted(dup.path)})") from None
    finally:
        loader.dispose()
    return YamlDocument(file=file, data=data, lines=lines)


def load_yaml(path: str | Path) -> YamlDocument:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", where=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", where=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read file: not UTF-8 text", where=str(p)) from None
    return parse_yaml(text, str(p))
