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

    def where(self, path: KeyPath) -> str:
        """`file:line (key a.b[0].c)` for the nearest known ancestor of `path`."""
        probe = tuple(path)
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        loc = f"{self.file}:{line}" if line else self.file
        return f"{loc} (key {dotted(path)})" if path else loc

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(message, where=self.where(path))


def _construct(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], loader: Any) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key == "<<":  # YAML merge key: let PyYAML resolve it the normal way
                merged = loader.construct_object(value_node, deep=True)
                for item in merged if isinstance(merged, list) else [merged]:
                    out.update({k: v for k, v in item.items() if k not in out})
                continue
            child = (*path, str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, child, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(n, (*path, i), lines, loader) for i, n in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
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
    finally:
        loader.dispose()
    return YamlDocument(file=file, data=data, lines=lines)


def load_yaml(path: str | Path) -> YamlDocument:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", where=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", where=str(p)) from None
    return parse_yaml(text, str(p))
