"""The port-app-config format, unchanged, so a mapping taken from any Ocean integration loads.

Keys this tool does not use (selector keys such as `states` or `includedFiles`, integration
specific top-level keys) are kept on the model and ignored, never rejected. An entity mapping's
keys are the exception: each one becomes a field of every entity, so an unknown one is an error.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _mapping_tree(doc: YamlDocument, path: KeyPath, value: Any) -> Any:
    """Validate an entity-mapping subtree: leaves are jq strings, dicts and lists nest."""
    if isinstance(value, dict):
        return {str(k): _mapping_tree(doc, (*path, str(k)), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mapping_tree(doc, (*path, i), v) for i, v in enumerate(value)]
    return _jq_text(doc, path, value)


def _resource(doc: YamlDocument, index: int, raw: Any) -> ResourceConfig:
    base: KeyPath = ("resources", index)
    if not isinstance(raw, dict):
        raise doc.error(base, "each resource must be a mapping with 'kind', 'selector' and 'port'")
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise doc.error((*base, "kind"), "every resource needs a 'kind' (a non-empty string)")
    selector = raw.get("selector")
    selector = {} if selector is None else selector  # `selector:` left empty
    if not isinstance(selector, dict):
        raise doc.error((*base, "selector"), "must be a mapping (with 'query')")
    query = _jq_text(doc, (*base, "selector", "query"), selector.get("query", "true"))
    port = raw.get("port")
    if not isinstance(port, dict):
        raise doc.error((*base, "port"), "every resource needs 'port.entity.mappings'")
    entity = port.get("entity")
    if not isinstance(entity, dict) or not isinstance(entity.get("mappings"), dict):
        raise doc.error((*base, "port", "entity"), "needs 'mappings' (identifier, blueprint, ...)")
    mpath = (*base, "port", "entity", "mappings")
    for key in entity["mappings"]:  # a misspelt key would become a field of every entity
        if key not in ENTITY_MAPPING_KEYS:
            raise doc.error((*mpath, str(key)), f"unknown key '{key}': an entity mapping has "
                                                f"{', '.join(ENTITY_MAPPING_KEYS)}")
    for required in ("identifier", "blueprint"):
        if required not in entity["mappings"]:
            raise doc.error(mpath, f"missing '{required}'")
    for name in ("properties", "relations"):
        if name in entity["mappings"] and not isinstance(entity["mappings"][name], dict):
            raise doc.error((*mpath, name), "must be a mapping of name to jq expression")
    mappings = _mapping_tree(doc, mpath, entity["mappings"])
    items = port.get("itemsToParse")
    name = port.get("itemsToParseName", "item")
    if not isinstance(name, str) or not name.isidentifier():
        raise doc.error((*base, "port", "itemsToParseName"), f"must be a plain key name, got {name!r}")
    return ResourceConfig(
        kind=kind,
        mappings=mappings,
        selector_query=query,
        selector_extra={k: v for k, v in selector.items() if k != "query"},
        items_to_parse=None if items is None else _jq_text(doc, (*base, "port", "itemsToParse"), items),
        items_to_parse_name=name,
        items_to_parse_top_level_transform=_bool(
            doc, (*base, "port", "itemsToParseTopLevelTransform"),
            port.get("itemsToParseTopLevelTransform"), True,
        ),
        index=index,
        where=doc.where(base),
    )


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
    )


def load_port_app_config(path: str | Path) -> PortAppConfig:
    return port_app_config_from_document(load_yaml(path))


def parse_port_app_config(text: str, file: str = "<mapping>") -> PortAppConfig:
    return port_app_config_from_document(parse_yaml(text, file))
