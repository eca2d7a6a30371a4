"""Every problem in a mapping file at once, for `ocean-hook check`.

`Mapping.load` stops at the first bad resource or expression, which is right for commands that
need a working mapping. A user fixing a mapping wants the whole list: this module validates each
resource on its own and compiles each expression on its own, and reports them all in the
engine's words (file:line, resource kind, field path, jq's message).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocean_hook.errors import ConfigError
from ocean_hook.mapping.engine import compile_problems
from ocean_hook.mapping.models import (
    MappingProblems,
    port_app_config_from_document,
    read_resource,  # one resource's schema problems, all of them; the loader stops at the first resource
    unknown_key_warnings,
)
from ocean_hook.yamlfile import YamlDocument, load_yaml


def collect_problems(path: str | Path, *, allow_env: bool = False) -> list[str]:
    """One line per problem; empty when `Mapping.load(path)` would succeed."""
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        return [str(exc)]
    resources = _raw_resources(doc)
    if not resources:
        return _whole_document(doc)
    problems: list[str] = []
    for index, raw in enumerate(resources):
        # the schema problems, then the jq of what could be read: one run for a typo, a date and a jq error
        resource, found = read_resource(doc, index, raw)
        problems += found
        if resource is not None:
            problems += [str(p) for p in compile_problems(resource, doc, allow_env=allow_env)]
    # the loader's own verdict adds what lies outside the resources (root flags)
    return problems + [p for p in _whole_document(doc) if p not in problems]


def mapping_warnings(path: str | Path) -> list[str]:
    """Keys that nearly are Port's (`selectr:`, `deleteDependentEntites:`), each `file:line (key
    ...): unknown key; did you mean '...'?`; none for a file that is not YAML (a problem already)."""
    try:
        return unknown_key_warnings(load_yaml(path))
    except ConfigError:
        return []


def mapping_kinds(path: str | Path) -> list[str] | None:
    """The kinds of the resources that have one, even in a mapping with other problems; None
    when the file cannot be read as YAML at all (its kinds are unknown, not none)."""
    try:
        doc = load_yaml(path)
    except ConfigError:
        return None
    kinds = [r.get("kind") for r in _raw_resources(doc) if isinstance(r, dict)]
    return list(dict.fromkeys(k for k in kinds if isinstance(k, str) and k))


def _raw_resources(doc: YamlDocument) -> list[Any]:
    resources = doc.data.get("resources") if isinstance(doc.data, dict) else None
    return resources if isinstance(resources, list) else []


def _whole_document(doc: YamlDocument) -> list[str]:
    """Problems outside the resources (root flags, a missing list), as the loader sees them."""
    try:
        port_app_config_from_document(doc)
    except MappingProblems as exc:
        return exc.problems
    except ConfigError as exc:
        return [str(exc)]
    return []
