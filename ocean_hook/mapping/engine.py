"""The map stage: raw third-party items to Port entities, with Ocean's JQ entity processor semantics.

Ocean runs one jq call per field per item. Here every resource compiles its selector and all
its fields into one jq program, run once per chunk of items; each field keeps its own
`try`, so a failing field still becomes null on its own, exactly as in Ocean:

- only the first output of an expression counts; an error, no output or null is `None`, and a
  `None` field is reported as a misconfiguration under its dotted path, with its jq text;
- the selector must yield a boolean, anything else is an error naming the resource and value;
- the entity has exactly the keys the mapping names; one whose identifier or blueprint comes out
  empty is skipped and counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from operator import itemgetter
from pathlib import Path
from typing import Any

from ocean_hook.entity import Entity, is_search_query, shape_problem
from ocean_hook.errors import ConfigError, quoted
from ocean_hook.mapping.jq import JqCompileError, JqQuery, compile_jq, normalize_quotes
from ocean_hook.mapping.models import PortAppConfig, ResourceConfig, load_port_app_config
from ocean_hook.yamlfile import KeyPath, YamlDocument, dotted

#: the entity's key: null or empty, the entity is skipped (as Ocean skips it)
KEY_FIELDS = ("identifier", "blueprint")
CHUNK = 500  # items per jq call: large enough to amortize the call, small enough for memory


@dataclass
class MappedEntity:
    kind: str
    entity: Entity
    passed_selector: bool
    misconfigurations: dict[str, str] = field(default_factory=dict)
    item_index: int = 0  # which input item it came from

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "entity": self.entity, "misconfigurations": self.misconfigurations}


@dataclass
class MapResult:
    entities: list[MappedEntity] = field(default_factory=list)
    filtered: int = 0  # items whose selector was false
    skipped: int = 0  # entities without identifier or blueprint
    errors: list[str] = field(default_factory=list)
    #: the skipped ones whose identifier or blueprint is null, kept for their misconfigurations:
    #: a jq typo there skips every item, which `--strict` must not pass in silence
    unnamed: list[MappedEntity] = field(default_factory=list)

    @property
    def passed(self) -> list[MappedEntity]:
        return [m for m in self.entities if m.passed_selector]

    @property
    def failed(self) -> list[MappedEntity]:
        return [m for m in self.entities if not m.passed_selector]

    def extend(self, other: MapResult) -> None:
        self.entities += other.entities
        self.filtered += other.filtered
        self.skipped += other.skipped
        self.errors += other.errors
        self.unnamed += other.unnamed


def _leaves(tree: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _leaves(value, (*path, i))
    else:
        yield path, tree


def _assembler(tree: Any, counter: Iterator[int]) -> Callable[[Sequence[Any]], Any]:
    """A function that rebuilds the mapping's shape from the leaf values, in `_leaves` order.

    Built once per resource, so assembling an entity costs no walk of the mapping tree.
    """
    if isinstance(tree, dict):
        parts = [(key, _assembler(value, counter)) for key, value in tree.items()]
        return lambda values: {key: part(values) for key, part in parts}
    if isinstance(tree, list):
        items = [_assembler(value, counter) for value in tree]
        return lambda values: [part(values) for part in items]
    return itemgetter(next(counter))


#: Builtins that may generate without end (or a great many outputs): Ocean stops at the first.
_GENERATORS = re.compile(
    r"\b(?:repeat|range|recurse|recurse_down|while|until|def|limit|combinations|paths|leaf_paths"
    r"|tostream|splits|inputs?)\b|\.\."
)
#: Builtins that stop the whole jq program: such an expression never shares one with others.
_HALTS = re.compile(r"\bhalt(?:_error)?\b")

#: Not jq: values that Ocean's git integrations resolve themselves (a file's contents, a code
#: search). As an entity field, such a mapping loads as it is; the field maps to null, reported as
#: misconfigured. Where jq must give the items or say which pass (`selector.query`,
#: `port.itemsToParse`), nothing could stand in for it: a problem of the mapping, found at load.
INTEGRATION_REFERENCES = ("file://", "search://")

COLLECT, FIRST, ALONE, REFERENCE = "collect", "first", "alone", "reference"


def _mode(expr: str) -> str:
    """How an expression joins the combined program (false positives only cost speed).

    `collect` (`[EXPR]`, all outputs) is the cheapest form; its first element is Ocean's unless the
    expression errors after yielding, so its errors are re-checked alone. `first` stops at the
    first output, for generators that may never end. `alone` runs outside the combined program.
    """
    if expr.startswith(INTEGRATION_REFERENCES):
        return REFERENCE
    if _HALTS.search(expr):
        return ALONE
    return FIRST if _GENERATORS.search(expr) else COLLECT


def _slot(expr: str, mode: str) -> str:
    # own lines, so a trailing `# comment` in the user's expression cannot swallow the rest
    body = normalize_quotes(expr)
    if mode in (ALONE, REFERENCE):
        return "null"
    if mode == FIRST:
        return f'(try [first(\n{body}\n)] catch {{"error": .}})'
    return f'(try [\n{body}\n] catch {{"error": .}})'


def _first_slot(query: JqQuery, item: Any) -> Any:
    """One expression run alone, as Ocean runs it: `[first output]`, `[]` or `{"error": ...}`."""
    try:
        for value in query.outputs(item):
            return [value]
        return []
    except ValueError as exc:
        return {"error": str(exc)}


_MAPPINGS: KeyPath = ("port", "entity", "mappings")


def resource_expressions(resource: ResourceConfig) -> Iterator[tuple[KeyPath, str]]:
    """Every jq expression of a resource with its key path in the mapping document."""
    base: KeyPath = ("resources", resource.index)
    yield (*base, "selector", "query"), resource.selector_query
    if resource.items_to_parse is not None:
        yield (*base, "port", "itemsToParse"), resource.items_to_parse
    yield from _leaves(resource.mappings, (*base, *_MAPPINGS))


def compile_problems(
    resource: ResourceConfig, doc: YamlDocument | None, *, allow_env: bool = False
) -> list[MappingCompileError]:
    """Every expression of the resource that does not compile, each with file:line, kind and field.

    The engine raises the first; `ocean-hook check` lists them all.
    """
    problems = []
    for path, expr in resource_expressions(resource):
        inner = path[2:]
        is_field = inner[: len(_MAPPINGS)] == _MAPPINGS
        field_path = dotted(inner[len(_MAPPINGS):] if is_field else inner)
        where = doc.where(path) if doc is not None else resource.where
        if expr.startswith(INTEGRATION_REFERENCES):
            if not is_field:  # the selector, itemsToParse: no null can stand in for these
                problems.append(MappingCompileError(
                    f"resource kind '{resource.kind}', field {field_path}: '{expr}' is a reference that only "
                    "Ocean's git integrations resolve (file://, search://), not jq: ocean-hook cannot read it, "
                    "and this field needs a jq expression", where=where,
                ))
            continue
        try:
            compile_jq(expr, allow_env=allow_env)
        except JqCompileError as exc:
            problems.append(MappingCompileError(
                f"resource kind '{resource.kind}', field {field_path}: jq does not compile: {exc} "
                f"(expression: {expr})",
                where=where,
            ))
    return problems


class ResourceMapper:
    """One resource of the mapping, compiled once at load time."""

    def __init__(
        self, resource: ResourceConfig, *, allow_env: bool = False, doc: YamlDocument | None = None
    ) -> None:
        self.resource = resource
        self._doc = doc
        self.kind = resource.kind
        self._leaves = list(_leaves(resource.mappings))
        self._misconfigured = [(dotted(path), expr) for path, expr in self._leaves]
        self._assemble = _assembler(resource.mappings, count())
        self._check_compiles(allow_env)
        exprs = [resource.selector_query, *(e for _, e in self._leaves)]
        modes = [_mode(expr) for expr in exprs]
        self._queries = [  # selector first
            JqQuery("null" if mode == REFERENCE else expr, allow_env=allow_env)
            for expr, mode in zip(exprs, modes, strict=True)
        ]
        #: slots whose combined result is re-checked alone when it is not a plain output
        self._recheck = [mode in (COLLECT, ALONE) for mode in modes]
        slots = ",\n".join(_slot(e, mode) for e, mode in zip(exprs, modes, strict=True))
        try:
            self._program: Any = compile_jq(f".[] | [\n{slots}\n]", allow_env=allow_env)
        except JqCompileError:  # each expression compiles alone (checked above): run them alone
            self._program = None
        itp = resource.items_to_parse
        self._items = None if itp is None else JqQuery(itp, allow_env=allow_env)
        # own line, as in `_slot`: a trailing `# comment` would swallow the closing parenthesis
        self._strip = None if itp is None else compile_jq(f"del(\n{normalize_quotes(itp)}\n)")

    def _check_compiles(self, allow_env: bool) -> None:
        """Report the first bad expression with its file, line, kind and field path."""
        problems = compile_problems(self.resource, self._doc, allow_env=allow_env)
        if problems:
            raise problems[0]

    # -------------------------------------------------------------------------------- mapping
    def map_items(self, items: Iterable[Any], *, parse_all: bool = False, start: int = 0) -> MapResult:
        """Map raw items. `parse_all` also maps items that fail the selector (for deletions)."""
        result = MapResult()
        for _ in self.map_steps(items, result, parse_all=parse_all, start=start):
            pass
        return result

    def map_steps(self, items: Iterable[Any], result: MapResult, *, parse_all: bool = False,
                  start: int = 0) -> Iterator[None]:
        """`map_items` into `result`, pausing after each full chunk: the listener's workers give
        the event loop back there, so a delivery of many items does not stop the answers."""
        chunk: list[tuple[int, Any]] = []
        for index, raw in enumerate(items, start):
            for item in self._expand(raw, index, result):  # one raw item can be 100,000 (itemsToParse)
                chunk.append((index, item))
                if len(chunk) == CHUNK:
                    self._map_chunk(chunk, parse_all, result)
                    chunk = []
                    yield
        if chunk:
            self._map_chunk(chunk, parse_all, result)

    def _expand(self, raw: Any, index: int, result: MapResult) -> list[Any]:
        """`port.itemsToParse`: one item per element, the element under `itemsToParseName`."""
        if self._items is None:
            return [raw]
        where = f"kind '{self.kind}', item {index}: itemsToParse '{self.resource.items_to_parse}'"
        try:
            elements = self._items.first(raw)
        except ValueError as exc:
            result.errors.append(f"{where} failed: {exc}")
            return []
        if elements is None:  # an optional array the item lacks: Ocean skips the item, saying so
            result.skipped += 1
            missing = {"itemsToParse": self.resource.items_to_parse or ""}
            result.unnamed.append(MappedEntity(self.kind, {}, True, missing, index))
            return []
        if not isinstance(elements, list):
            result.errors.append(f"{where} must give a list, got {quoted(elements)}")
            return []
        if not isinstance(raw, dict):  # each element goes under `itemsToParseName` in a copy of it
            result.errors.append(f"{where}: the item must be a JSON object, got {quoted(raw)}")
            return []
        base = raw
        if self.resource.items_to_parse_top_level_transform and self._strip is not None:
            try:
                base = next(iter(self._strip.input_value(raw)), raw)
            except (ValueError, RecursionError):
                base = raw
        name = self.resource.items_to_parse_name
        return [{**base, name: element} for element in elements]

    def _rows(self, items: Sequence[Any]) -> list[list[Any]]:
        """Per item, one slot per expression: `[first output]`, `[]` or `{"error": ...}`."""
        rows = self._combined_rows(items)
        if rows is None:
            return [[_first_slot(query, item) for query in self._queries] for item in items]
        for item, row in zip(items, rows, strict=True):
            for i, slot in enumerate(row):
                if type(slot) is not list and self._recheck[i]:
                    row[i] = _first_slot(self._queries[i], item)
        return rows

    def _combined_rows(self, items: Sequence[Any]) -> list[list[Any]] | None:
        if self._program is None:
            return None
        try:
            rows = self._program.input_text(json.dumps(items)).all()
        except (ValueError, RecursionError):  # each slot catches its own errors; an item too deep
            return None  # to serialize is left to the items alone, which report it
        return rows if len(rows) == len(items) else None

    def _map_chunk(self, chunk: list[tuple[int, Any]], parse_all: bool, result: MapResult) -> None:
        rows = self._rows([item for _, item in chunk])
        for (index, _item), row in zip(chunk, rows, strict=True):
            passed = self._selector_value(row[0], index, result)
            if passed is None:
                continue
            if not passed:
                result.filtered += 1
                if not parse_all:
                    continue
            self._build(index, row[1:], passed, result)

    def _selector_value(self, slot: Any, index: int, result: MapResult) -> bool | None:
        value = slot[0] if isinstance(slot, list) and slot else None
        if isinstance(value, bool):
            return value
        where = f"kind '{self.kind}', item {index}: selector '{self.resource.selector_query}'"
        if isinstance(slot, dict):
            error = slot["error"]
            result.errors.append(f"{where} failed: {error if isinstance(error, str) else quoted(error)}")
        else:
            result.errors.append(f"{where} must give a boolean, got {quoted(value)}")
        return None

    def _build(self, index: int, slots: list[Any], passed: bool, result: MapResult) -> None:
        values = [slot[0] if type(slot) is list and slot else None for slot in slots]
        misconfigurations = {
            path: expr for (path, expr), value in zip(self._misconfigured, values, strict=True) if value is None
        }
        entity = self._assemble(values)
        if entity.get("identifier") in (None, "") or entity.get("blueprint") in (None, ""):  # as Ocean
            if passed:  # one the selector refused is counted as filtered already
                result.skipped += 1
                # an empty key skips it as null does: said the same way, or `--strict` fails unexplained
                misconfigurations.update((path, expr) for (path, expr), value in zip(self._misconfigured, values,
                                                                                    strict=True)
                                         if path in KEY_FIELDS and value == "")
                if misconfigurations:
                    result.unnamed.append(MappedEntity(self.kind, entity, passed, misconfigurations, index))
            return
        # a delete needs only the key: the title of an item that left the selector is no matter
        problem = _key_problem(entity) or (shape_problem(entity) if passed else None)
        if problem:
            if passed:  # one the selector refused names nothing to write or delete: filtered, no more
                result.errors.append(f"kind '{self.kind}', item {index}: {problem}")
            return
        result.entities.append(MappedEntity(self.kind, entity, passed, misconfigurations, index))


def _key_problem(entity: Entity) -> str | None:
    """Port takes a string identifier (or a search query it resolves) and a string blueprint, and
    refuses anything else: Ocean sends such an entity and the write fails; here it is an error of
    the mapping, so that `test-mapping` in CI reports what `serve` would fail on."""
    identifier, blueprint = entity["identifier"], entity["blueprint"]
    if not isinstance(identifier, str) and not is_search_query(identifier):
        return f"identifier must be a string or a search query, got {quoted(identifier)} (add | tostring)"
    if not isinstance(blueprint, str):
        return f"blueprint must be a string, got {quoted(blueprint)}"
    return None


class MappingCompileError(ConfigError):
    """A jq expression in the mapping does not compile (reported at load time)."""


class Mapping:
    """A loaded, compiled port-app-config: flags plus one mapper per resource."""

    def __init__(self, config: PortAppConfig, *, allow_env: bool = False) -> None:
        self.config = config
        self.flags = config.flags
        self.mappers = [
            ResourceMapper(resource, allow_env=allow_env, doc=config.source)
            for resource in config.resources
        ]

    @classmethod
    def load(cls, path: str | Path, *, allow_env: bool = False) -> Mapping:
        return cls(load_port_app_config(path), allow_env=allow_env)

    @property
    def kinds(self) -> list[str]:
        return self.config.kinds

    def for_kind(self, kind: str | None) -> list[ResourceMapper]:
        return [m for m in self.mappers if kind is None or m.kind == kind]
