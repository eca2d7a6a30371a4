"""The port-app-config format, unchanged, so a mapping taken from any Ocean integration loads.

Keys this tool does not use (selector keys such as `states` or `includedFiles`, integration
specific top-level keys) are kept on the model and ignored, never rejected. An entity mapping's
keys are the exception: each one becomes a field of every entity, so an unknown one is an error.
A key that nearly is one of Port's (`selectr:`, whose default would apply in silence) is a warning.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocean_hook.errors import ConfigError, Problems
from ocean_hook.yamlfile import KeyPath, YamlDocument, load_yaml, parse_yaml

ENTITY_MAPPING_KEYS = ("identifier", "title", "blueprint", "team", "icon", "properties", "relations")


@dataclass(frozen=True)
class MappingFlags:
    """Root flags; Ocean defaults all three to true when absent."""

    enable_merge_entity: bool = True
    delete_dependent_entities: bool = True
    create_missing_related_entities: bool = True


@dataclass
class ResourceConfig:
    kind: str
    #: the raw `port.entity.mappings` object, with only the keys the user set
    mappings: dict[str, Any]
    selector_query: str = "true"
    selector_extra: dict[str, Any] = field(default_factory=dict)
    items_to_parse: str | None = None
    items_to_parse_name: str = "item"
    items_to_parse_top_level_transform: bool = True
    #: index in `resources[]`, and where it came from, for error messages
    index: int = 0
    where: str = ""


@dataclass
class PortAppConfig:
    flags: MappingFlags
    resources: list[ResourceConfig]
    source: YamlDocument
    extra: dict[str, Any] = field(default_factory=dict)
    #: near misses of Port's keys (`selectr:`), each `file:line (key ...): ...`; see `unknown_key_warnings`
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(r.kind for r in self.resources))


def _bool(doc: YamlDocument, path: KeyPath, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise doc.error(path, f"must be true or false, got {value!r}")
    return value


def _jq_text(doc: YamlDocument, path: KeyPath, value: Any) -> str:
    """A jq expression written in YAML; numbers and booleans are valid jq too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.date):  # YAML reads 2024-01-01 as a date
        raise doc.error(path, f"must be a jq expression (a string), got the date {value}: quote it")
    if not isinstance(value, str) or not value.strip():
        raise doc.error(path, f"must be a jq expression (a string), got {value!r}")
    return value


class MappingProblems(Problems):
    """Every schema problem of one resource."""


class _Found:
    """The problems of one resource, collected rather than raised: a user fixing a mapping wants
    the typo, the unquoted date and the missing key in one run."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.problems: list[str] = []

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(str(self.doc.error(path, message)))

    def jq(self, path: KeyPath, value: Any, fallback: str) -> str:
        """`value` as jq; when it is not, the problem is noted and `fallback` stands in for it."""
        try:
            return _jq_text(self.doc, path, value)
        except ConfigError as exc:
            self.problems.append(str(exc))
            return fallback


def _mapping_tree(found: _Found, path: KeyPath, value: Any) -> Any:
    """Validate an entity-mapping subtree: leaves are jq strings, dicts and lists nest. A bad leaf
    is noted and stands as `null`, so the paths (and lines) of the others stay theirs."""
    if isinstance(value, dict):
        return {str(k): _mapping_tree(found, (*path, str(k)), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mapping_tree(found, (*path, i), v) for i, v in enumerate(value)]
    return found.jq(path, value, "null")


def _did_you_mean(key: str, known: Iterable[str]) -> str | None:
    """The known key `key` is a near miss of (a typo, another case), or None."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=NEAR_MISS)
    return by_lower[close[0]] if close else None


def _entity_mappings(found: _Found, path: KeyPath, raw: dict[Any, Any]) -> dict[str, Any]:
    """The entity mapping with every problem noted; what is wrong is left out (or `null`)."""
    kept: dict[Any, Any] = {}
    guessed = set()
    for key, value in raw.items():  # a misspelt key would become a field of every entity
        if key in ENTITY_MAPPING_KEYS:
            kept[key] = value
            continue
        guess = _did_you_mean(str(key), ENTITY_MAPPING_KEYS)
        guessed.add(guess)
        found.add((*path, str(key)), f"unknown key '{key}': an entity mapping has {', '.join(ENTITY_MAPPING_KEYS)}"
                  + (f"; did you mean '{guess}'?" if guess else ""))
    for required in ("identifier", "blueprint"):
        if required not in raw and required not in guessed:  # `identifer`: said once, above
            found.add(path, f"missing '{required}'")
    for name in ("properties", "relations"):
        if name in kept and not isinstance(kept[name], dict):
            found.add((*path, name), "must be a mapping of name to jq expression")
            del kept[name]
    tree: dict[str, Any] = _mapping_tree(found, path, kept)
    return tree


def read_resource(doc: YamlDocument, index: int, raw: Any) -> tuple[ResourceConfig | None, list[str]]:
    """One resource and all its schema problems (each field checked on its own).

    With problems, the resource is what could be read (bad expressions as `null`, unknown keys
    left out) so that `ocean-hook check` can still compile the rest; None when there is no kind
    or no entity mapping to speak of.
    """
    base: KeyPath = ("resources", index)
    found = _Found(doc)
    if not isinstance(raw, dict):
        found.add(base, "each resource must be a mapping with 'kind', 'selector' and 'port'")
        return None, found.problems
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        found.add((*base, "kind"), "every resource needs a 'kind' (a non-empty string)")
        kind = None
    selector = raw.get("selector")
    selector = {} if selector is None else selector  # `selector:` left empty
    if not isinstance(selector, dict):
        found.add((*base, "selector"), "must be a mapping (with 'query')")
        selector = {}
    query = found.jq((*base, "selector", "query"), selector.get("query", "true"), "true")
    port = raw.get("port")
    mappings = None
    if not isinstance(port, dict):
        found.add((*base, "port"), "every resource needs 'port.entity.mappings'")
        port = {}
    else:
        entity = port.get("entity")
        if not isinstance(entity, dict) or not isinstance(entity.get("mappings"), dict):
            found.add((*base, "port", "entity"), "needs 'mappings' (identifier, blueprint, ...)")
        else:
            mappings = _entity_mappings(found, (*base, "port", "entity", "mappings"), entity["mappings"])
    items = port.get("itemsToParse")
    if items is not None:
        items = found.jq((*base, "port", "itemsToParse"), items, "") or None
    name = port.get("itemsToParseName", "item")
    if not isinstance(name, str) or not name.isidentifier():
        found.add((*base, "port", "itemsToParseName"), f"must be a plain key name, got {name!r}")
        name = "item"
    try:
        top_level = _bool(doc, (*base, "port", "itemsToParseTopLevelTransform"),
                          port.get("itemsToParseTopLevelTransform"), True)
    except ConfigError as exc:
        found.problems.append(str(exc))
        top_level = True
    if kind is None or mappings is None:
        return None, found.problems
    return ResourceConfig(
        kind=kind,
        mappings=mappings,
        selector_query=query,
        selector_extra={k: v for k, v in selector.items() if k != "query"},
        items_to_parse=items,
        items_to_parse_name=name,
        items_to_parse_top_level_transform=top_level,
        index=index,
        where=doc.where(base),
    ), found.problems


def _resource(doc: YamlDocument, index: int, raw: Any) -> ResourceConfig:
    resource, problems = read_resource(doc, index, raw)
    if problems:
        raise MappingProblems(problems)
    assert resource is not None  # no problem: a kind and a mapping
    return resource


#: Keys of Port's format, per level, that a key is compared with (`unknown_key_warnings`). Others
#: are welcome (Ocean integrations add their own, selector options above all): only a near miss of
#: one of these is said, since that key is then most likely a typo whose default applies silently.
ROOT_KEYS = ("resources", "enableMergeEntity", "deleteDependentEntities", "createMissingRelatedEntities",
             "entityDeletionThreshold")
RESOURCE_KEYS = ("kind", "selector", "port")
SELECTOR_KEYS = ("query",)
PORT_KEYS = ("entity", "itemsToParse", "itemsToParseName", "itemsToParseTopLevelTransform")
ENTITY_KEYS = ("mappings",)
#: `difflib` ratio from which an unknown key is taken for a known one mistyped
NEAR_MISS = 0.8


def unknown_key_warnings(doc: YamlDocument) -> list[str]:
    """`file:line (key ...): unknown key; did you mean '...'?` for each key that is not Port's but
    nearly is (`selectr`, `deleteDependentEntites`): a warning, as a mapping may hold keys of its
    own. Unknown keys of an entity mapping are errors (see `read_resource`), not warnings."""
    warnings: list[str] = []

    def look(path: KeyPath, value: Any, known: tuple[str, ...]) -> None:
        if not isinstance(value, dict):
            return
        for key in value:
            if str(key) in known:
                continue
            guess = _did_you_mean(str(key), known)
            if guess is not None:
                warnings.append(f"{doc.where((*path, str(key)))}: unknown key; did you mean '{guess}'?")

    data = doc.data
    look((), data, ROOT_KEYS)
    resources = data.get("resources") if isinstance(data, dict) else None
    for i, resource in enumerate(resources if isinstance(resources, list) else []):
        base: KeyPath = ("resources", i)
        look(base, resource, RESOURCE_KEYS)
        if not isinstance(resource, dict):
            continue
        look((*base, "selector"), resource.get("selector"), SELECTOR_KEYS)
        port = resource.get("port")
        look((*base, "port"), port, PORT_KEYS)
        if isinstance(port, dict):
            look((*base, "port", "entity"), port.get("entity"), ENTITY_KEYS)
    return warnings


def port_app_config_from_document(doc: YamlDocument) -> PortAppConfig:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "a port-app-config mapping must be a YAML mapping with 'resources'")
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise doc.error(("resources",), "needs a non-empty 'resources' list")
    flags = MappingFlags(
        enable_merge_entity=_bool(doc, ("enableMergeEntity",), data.get("enableMergeEntity"), True),
        delete_dependent_entities=_bool(
            doc, ("deleteDependentEntities",), data.get("deleteDependentEntities"), True
        ),
        create_missing_related_entities=_bool(
            doc, ("createMissingRelatedEntities",), data.get("createMissingRelatedEntities"), True
        ),
    )
    known = {"resources", "enableMergeEntity", "deleteDependentEntities", "createMissingRelatedEntities"}
    return PortAppConfig(
        flags=flags,
        resources=[_resource(doc, i, r) for i, r in enumerate(resources)],
        source=doc,
        extra={k: v for k, v in data.items() if k not in known},
        warnings=unknown_key_warnings(doc),
    )


def load_port_app_config(path: str | Path) -> PortAppConfig:
    return port_app_config_from_document(load_yaml(path))


def parse_port_app_config(text: str, file: str = "<mapping>") -> PortAppConfig:
    return port_app_config_from_document(parse_yaml(text, file))
