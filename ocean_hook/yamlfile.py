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


@dataclass(frozen=True)
class Written:
    """Where the parts of one value were written: for each key (or list index), the line it is on
    and where its own parts are. A value and every alias of it (`*name`) share one."""

    parts: dict[str | int, tuple[int, Written | None]] = field(default_factory=dict)


@dataclass
class YamlDocument:
    """Plain Python data plus the line of every key, list element and scalar."""

    file: str
    data: Any
    top: int | None = None  # the line the document's value starts on
    written: Written | None = None

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest known ancestor."""
        line, written = self.top, self.written
        for part in path:
            entry = written.parts.get(part) if written else None
            if entry is None:
                break
            line, written = entry
        return line

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


# An alias stands for the whole value it names, so a few lines of aliases of aliases ("billion
# laughs") stand for billions of values: built once and shared they cost nothing here, but every
# walk over the data (checks, ${VAR} expansion) would visit each copy. A config shares a handful of
# settings; more than this many values repeated through aliases is refused.
MAX_ALIASED = 100_000


class _TooManyAliased(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


_MERGE = "tag:yaml.org,2002:merge"
_Built = tuple[Any, Written | None, int]  # the value, where its parts were written, how many values it holds


class _Builder:
    """Plain data from PyYAML's node graph, each node built once (as PyYAML's own constructor does):
    an alias shares the value (and the lines) of its anchor, however many times it is used."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.built: dict[yaml.Node, _Built] = {}
        self.building: set[yaml.Node] = set()
        self.aliased = 0  # values repeated through aliases, counted as if each were written out

    def build(self, node: yaml.Node, path: KeyPath, line: int) -> _Built:
        """`node`, found at `path` on `line` (where the alias is, when it is one)."""
        done = self.built.get(node)
        if done is not None:
            self.aliased += done[2]
            if self.aliased > MAX_ALIASED:
                raise _TooManyAliased(line)
            return done
        if node in self.building:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias is used inside the value it names (a loop)", node.start_mark)
        self.building.add(node)
        if isinstance(node, yaml.MappingNode):
            done = self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            done = self._sequence(node, path)
        else:
            done = (self.loader.construct_object(node, deep=True), None, 1)
        self.building.discard(node)
        self.built[node] = done
        return done

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> _Built:
        out: list[Any] = []
        parts: dict[str | int, tuple[int, Written | None]] = {}
        size = 1
        for i, item in enumerate(node.value):
            line = item.start_mark.line + 1  # of the anchor, for an alias: PyYAML keeps no line for `*name`
            value, where, count = self.build(item, (*path, i), node.start_mark.line + 1 if item in self.built else line)
            out.append(value)
            parts[i] = (line, where)
            size += count
        return out, Written(parts), size

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> _Built:
        out: dict[Any, Any] = {}
        parts: dict[str | int, tuple[int, Written | None]] = {}
        size = 1
        written: set[str] = set()  # keys written out here (a key merged in with << may be overridden)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                size += self._merge(value_node, path, out, parts, key_node.start_mark.line + 1)
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:  # `? [a, b]`: a list as a key
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value (text or a number), not a list or a mapping",
                    key_node.start_mark)
            name = str(key)
            line = key_node.start_mark.line + 1
            # PyYAML would keep the last silently: a line of config ignored; `1` and `"1"` name
            # the same field once read as text
            if name in written:
                raise _DuplicateKey((*path, name), line, parts[name][0])
            written.add(name)
            value, where, count = self.build(value_node, (*path, name), line)
            out[key] = value
            # all of a key written here is where it is written: none of the lines of a value it
            # overrides (one merged in with <<) are kept
            parts[name] = (line, where)
            size += count
        return out, Written(parts), size

    def _merge(self, node: yaml.Node, path: KeyPath, out: dict[Any, Any],
               parts: dict[str | int, tuple[int, Written | None]], line: int) -> int:
        """`<<: *anchor` (or a list of them): keys of the anchored mappings not already in `out`,
        with the lines they were written on; a key written after the merge replaces it."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        size = 0
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(None, None, "<< merges mappings only", source.start_mark)
            value, where, count = self.build(source, path, line)
            size += count
            for key, item in value.items():
                if key not in out:
                    out[key] = item
                    entry = where.parts.get(str(key)) if where else None
                    if entry is not None:
                        parts[str(key)] = entry
        return size


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
        if node is None:
            return YamlDocument(file=file, data=None)
        data, written, _ = _Builder(loader).build(node, (), node.start_mark.line + 1)
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
    except _TooManyAliased as many:
        raise ConfigError(f"invalid YAML: the aliases (*name) up to here stand for more than {MAX_ALIASED:,} values "
                          "when written out: use fewer", where=f"{file}:{many.line}") from None
    finally:
        loader.dispose()
    return YamlDocument(file=file, data=data, top=node.start_mark.line + 1, written=written)


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
