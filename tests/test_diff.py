"""The diff stage: create / update (field by field) / delete / unchanged, merge or replace, and
Ocean's webhook deletion semantics without its stale-entity bug, through `pipeline.map_raw` and
`pipeline.plan` as every command runs them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mapping_texts import resource

from ocean_hook import render
from ocean_hook.auth.base import Verdict
from ocean_hook.auth.none import build as no_auth
from ocean_hook.diff import FieldChange, plan_changes, summarize
from ocean_hook.entity import Entity, EntityKey, entity_key
from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.fetch import Fetcher
from ocean_hook.mapping.engine import Mapping
from ocean_hook.mapping.models import MappingFlags, parse_port_app_config
from ocean_hook.pipeline import admit, map_raw, plan, process
from ocean_hook.processors.base import ProcessorSettings, RawResults, WebhookProcessor
from ocean_hook.targets.local import LocalCatalog


def pr(identifier: str, status: str, **properties: Any) -> Entity:
    return {
        "identifier": identifier, "title": f"PR {identifier}", "blueprint": "pr",
        "properties": {"status": status, **properties}, "relations": {"repo": "api"},
    }


def keyed(*entities: Entity) -> dict[EntityKey, Entity]:
    return {(e["blueprint"], e["identifier"]): e for e in entities}


def actions(changes: list[Any]) -> list[tuple[str, Any]]:
    return [(c.action, c.identifier) for c in changes]


# ------------------------------------------------------------------------------- the four actions
def test_create_update_delete_and_unchanged() -> None:
    current = keyed(pr("1", "open"), pr("2", "open"), pr("3", "open"))
    changes = plan_changes(
        [pr("1", "open"), pr("2", "closed"), pr("4", "draft")], [pr("3", "open"), pr("5", "gone")], current,
        merge=True, kind="pull-request",
    )
    assert actions(changes) == [("unchanged", "1"), ("update", "2"), ("create", "4"), ("delete", "3")]
    assert summarize(changes) == {"create": 1, "update": 1, "delete": 1, "unchanged": 1}
    unchanged, update, create, delete = changes
    assert unchanged.fields == [] and not unchanged.writes
    assert update.fields == [FieldChange("properties.status", "open", "closed")]
    assert (update.before, update.after) == (pr("2", "open"), pr("2", "closed"))
    assert render.change_lines(update) == [
        '~ update pr/2  (kind pull-request)', '    ~ properties.status: "open" → "closed"',
    ]
    assert create.before is None and create.after == pr("4", "draft")
    assert [(f.path, f.before, f.after) for f in create.fields] == [
        ("identifier", None, "4"), ("title", None, "PR 4"), ("blueprint", None, "pr"),
        ("properties.status", None, "draft"), ("relations.repo", None, "api"),
    ]
    assert (delete.before, delete.after, delete.blueprint) == (pr("3", "open"), None, "pr")
    assert all(c.kind == "pull-request" for c in changes)


def test_a_create_lists_null_properties_but_null_and_missing_are_no_update() -> None:
    desired = pr("1", "open", closedAt=None)
    (create,) = plan_changes([desired], [], {}, merge=True)
    assert FieldChange("properties.closedAt", None, None) in create.fields
    (same,) = plan_changes([desired], [], keyed(pr("1", "open")), merge=True)
    assert same.action == "unchanged"
    (same,) = plan_changes([pr("1", "open")], [], keyed(pr("1", "open", closedAt=None)), merge=False)
    assert same.action == "unchanged"


def test_top_level_fields_and_relations_are_diffed_by_path() -> None:
    desired = {**pr("1", "open"), "title": "Renamed", "team": ["core"], "relations": {"repo": "web"}}
    (change,) = plan_changes([desired], [], keyed(pr("1", "open")), merge=True)
    assert change.fields == [
        FieldChange("title", "PR 1", "Renamed"), FieldChange("team", None, ["core"]),
        FieldChange("relations.repo", "api", "web"),
    ]


def test_true_is_not_1_nor_false_0_anywhere_in_an_entity() -> None:
    """Python's `True == 1` hid a property whose type changed from the diff (found by probing)."""
    stored = {**pr("1", "open", enabled=True, tags=[True, False], meta={"on": False}), "team": [True]}
    mapped = {**pr("1", "open", enabled=1, tags=[1, 0], meta={"on": 0}), "team": [1]}
    (change,) = plan_changes([mapped], [], keyed(stored), merge=True)
    assert change.fields == [
        FieldChange("team", [True], [1]), FieldChange("properties.enabled", True, 1),
        FieldChange("properties.meta", {"on": False}, {"on": 0}), FieldChange("properties.tags", [True, False], [1, 0]),
    ]
    (same,) = plan_changes([pr("1", "open", size=2)], [], keyed(pr("1", "open", size=2.0)), merge=True)
    assert same.action == "unchanged"  # one JSON number


# ------------------------------------------------------------------------------- merge or replace
def test_team_as_port_stores_it_is_no_change() -> None:
    """`team: []` against none, or `"core"` against Port's stored `["core"]`, showed as an update on
    every run (found by probing); a real change of team still shows."""
    for stored, mapped in ((None, []), ([], None), (["core"], "core"), (["a", "b"], ["b", "a"])):
        current = {**pr("1", "open"), "team": stored} if stored is not None else pr("1", "open")
        (same,) = plan_changes([{**pr("1", "open"), "team": mapped}], [], keyed(current), merge=True)
        assert (stored, mapped, same.action) == (stored, mapped, "unchanged")
    (moved,) = plan_changes([{**pr("1", "open"), "team": "web"}], [], keyed({**pr("1", "open"), "team": ["core"]}),
                            merge=True)
    assert moved.fields == [FieldChange("team", ["core"], "web")]


def test_merge_keeps_properties_the_mapping_does_not_set_and_replace_drops_them() -> None:
    current = keyed({**pr("1", "open", owner="ann"), "icon": "Github"})
    desired = {"identifier": "1", "blueprint": "pr", "properties": {"status": "open"}}
    (merged,) = plan_changes([desired], [], current, merge=True)
    assert merged.action == "unchanged"
    assert merged.after == current[("pr", "1")]
    (replaced,) = plan_changes([desired], [], current, merge=False)
    assert replaced.action == "update"
    assert replaced.after == desired
    assert replaced.fields == [
        FieldChange("title", "PR 1", None), FieldChange("icon", "Github", None),
        FieldChange("properties.owner", "ann", None), FieldChange("relations.repo", "api", None),
    ]
    assert replaced.desired == desired  # what the target is asked to write


def test_two_versions_of_one_entity_in_a_batch_report_one_change_against_the_catalog() -> None:
    (change,) = plan_changes([pr("1", "open"), pr("1", "closed")], [], {}, merge=True)
    assert (change.action, change.after) == ("create", pr("1", "closed"))
    (change,) = plan_changes([pr("1", "draft"), pr("1", "closed")], [], keyed(pr("1", "open")), merge=True)
    assert change.action == "update"
    assert change.fields == [FieldChange("properties.status", "open", "closed")]


def test_created_then_deleted_in_one_batch_is_no_change_and_a_delete_needs_an_entity() -> None:
    assert plan_changes([pr("1", "open")], [pr("1", "open")], {}, merge=True) == []
    assert plan_changes([], [pr("9", "open")], {}, merge=True) == []
    (change,) = plan_changes([pr("1", "closed")], [pr("1", "closed")], keyed(pr("1", "open")), merge=True)
    assert (change.action, change.before) == ("delete", pr("1", "open"))


# ------------------------------------------------------------------------------- search queries
SEARCH_IDENTIFIER = {"combinator": "and", "rules": [{"property": "sha", "operator": "=", "value": "abc"}]}
SEARCH_RELATION = {"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": "api"}]}


def test_search_query_identifiers_are_passed_through_not_diffed() -> None:
    desired = {"identifier": SEARCH_IDENTIFIER, "blueprint": "deployment", "properties": {"env": "prod"}}
    (change,) = plan_changes([desired], [desired], keyed(pr("1", "open")), merge=True)
    assert (change.action, change.identifier, change.fields, change.desired) == ("update", SEARCH_IDENTIFIER, [],
                                                                                 desired)
    assert change.before is None and change.after == desired
    assert entity_key(desired) is None


def test_search_query_relations_are_compared_as_whole_objects() -> None:
    entity = {**pr("1", "open"), "relations": {"service": SEARCH_RELATION}}
    (same,) = plan_changes([copy.deepcopy(entity)], [], keyed(entity), merge=True)
    assert same.action == "unchanged"
    other = copy.deepcopy(SEARCH_RELATION)
    other["rules"][0]["value"] = "web"
    (change,) = plan_changes([{**entity, "relations": {"service": other}}], [], keyed(entity), merge=True)
    assert change.fields == [FieldChange("relations.service", SEARCH_RELATION, other)]


# ------------------------------------------------------------------------------- through the pipeline
MAPPING = Mapping(parse_port_app_config("""
resources:
  - kind: pull-request
    selector:
      query: .state == 'open' or .state == 'closed'
    port:
      entity:
        mappings:
          identifier: .number | tostring
          title: .title
          blueprint: '"pr"'
          properties:
            status: .state
""", "mapping.yml"))
MAPPER = MAPPING.mappers[0]


def raw_pr(number: int, state: str) -> dict[str, Any]:
    return {"number": number, "title": f"PR {number}", "state": state}


def entity(number: int, state: str) -> Entity:
    return {"identifier": str(number), "title": f"PR {number}", "blueprint": "pr", "properties": {"status": state}}


def run(raw: RawResults, current: dict[EntityKey, Entity]) -> list[tuple[str, Any]]:
    batch = map_raw(MAPPER, raw)
    wanted = set(batch.keys())
    return actions(plan(batch, {k: v for k, v in current.items() if k in wanted}, MAPPING.flags))


def test_an_updated_item_out_of_the_selector_is_deleted_if_present_and_nothing_if_absent() -> None:
    current = keyed(entity(1, "open"))
    assert run(RawResults(updated=[raw_pr(1, "draft")]), current) == [("delete", "1")]
    assert run(RawResults(updated=[raw_pr(2, "draft")]), current) == []
    assert run(RawResults(updated=[raw_pr(1, "closed")]), current) == [("update", "1")]


def test_a_deleted_item_is_deleted_whether_or_not_it_passes_the_selector() -> None:
    current = keyed(entity(1, "open"), entity(2, "open"))
    raw = RawResults(deleted=[raw_pr(1, "open"), raw_pr(2, "merged"), raw_pr(3, "merged")])
    assert run(raw, current) == [("delete", "1"), ("delete", "2")]


def test_the_last_version_of_an_item_in_a_batch_decides_between_upsert_and_delete() -> None:
    current = keyed(entity(1, "open"))
    back_in_scope = RawResults(updated=[raw_pr(1, "draft"), raw_pr(1, "closed")])
    assert run(back_in_scope, current) == [("update", "1")]
    out_of_scope = RawResults(updated=[raw_pr(1, "closed"), raw_pr(1, "draft")])
    assert run(out_of_scope, current) == [("delete", "1")]


def test_a_deleted_item_skipped_for_a_null_identifier_says_which_field() -> None:
    """It was counted skipped with no misconfiguration to say why (found by probing)."""
    mapper = Mapping(parse_port_app_config("resources:\n" + resource())).mappers[0]
    batch = map_raw(mapper, RawResults(deleted=[{"name": "no id"}]))
    assert batch.result.skipped == 1
    assert [m.misconfigurations for m in batch.result.unnamed] == [{"identifier": ".id"}]


def test_map_raw_counts_and_plans_with_the_mapping_flags() -> None:
    batch = map_raw(MAPPER, RawResults(updated=[raw_pr(1, "open"), raw_pr(2, "draft")], deleted=[raw_pr(3, "x")]))
    assert [m.entity["identifier"] for m in batch.upserts] == ["1"]
    assert [m.entity["identifier"] for m in batch.deletes] == ["2", "3"]
    assert batch.result.filtered == 1
    assert batch.keys() == [("pr", "1"), ("pr", "2"), ("pr", "3")]
    current = keyed({**entity(1, "open"), "properties": {"status": "open", "owner": "ann"}})
    (merged,) = plan(batch, current, MappingFlags(enable_merge_entity=True))
    assert merged.action == "unchanged"
    (replaced,) = plan(batch, current, MappingFlags(enable_merge_entity=False))
    assert replaced.fields == [FieldChange("properties.owner", "ann", None)]


# ------------------------------------------------------------------------------- property
NAMES = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, max_size=3)),
    max_leaves=8,
)
RELATIONS = st.one_of(
    st.text(max_size=8), st.lists(st.text(max_size=5), max_size=3), st.none(),
    st.builds(lambda v: {"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": v}]},
              st.text(max_size=5)),
)
ENTITIES = st.builds(
    lambda ident, bp, title, props, rels, team: {
        "identifier": ident, "blueprint": bp, "title": title, "properties": props, "relations": rels,
        **({"team": team} if team is not None else {}),
    },
    st.text(min_size=1, max_size=8), st.sampled_from(["service", "pr", "incident"]), st.one_of(st.none(), st.text()),
    st.dictionaries(NAMES, VALUES, max_size=6), st.dictionaries(NAMES, RELATIONS, max_size=3),
    st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=2)),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(ENTITIES, max_size=12, unique_by=lambda e: (e["blueprint"], e["identifier"])), st.booleans())
def test_the_diff_of_any_state_against_itself_is_all_unchanged(state: list[Entity], merge: bool) -> None:
    changes = plan_changes(copy.deepcopy(state), [], keyed(*state), merge=merge)
    assert [c.action for c in changes] == ["unchanged"] * len(state)
    assert all(c.fields == [] and not c.writes for c in changes)
    assert [c.after for c in changes] == state


class Plain(WebhookProcessor):
    """Every event, its payload the one item."""

    def __init__(self) -> None:
        super().__init__(ProcessorSettings("plain", "/hooks/plain", ["thing"], no_auth("none", [], {})))

    def should_process_event(self, event: WebhookEvent) -> bool:
        return True

    def validate_payload(self, payload: Any) -> Verdict:
        return Verdict.passed()

    async def handle_event(self, payload: Any, resource: Any, fetcher: Fetcher) -> RawResults:
        return RawResults(updated=[payload])


async def test_two_resources_writing_one_entity_end_with_the_last_every_time(tmp_path: Path) -> None:
    """Each was diffed against the state before either wrote: the second found the entity as it
    left it last time and wrote nothing, so the catalog flip-flopped between runs (found by
    probing). Now the second is diffed against what the first leaves, as test-mapping does."""
    text = "enableMergeEntity: false\nresources:\n" + resource(title="from a") + resource(title="from b")
    mapping = Mapping(parse_port_app_config(text))
    catalog = LocalCatalog(tmp_path / "catalog.db")
    try:
        titles = []
        body = b'{"id": "x"}'
        admitted = admit(WebhookEvent("POST", "/hooks/plain", make_headers({"Content-Type": "application/json"}), body),
                         [Plain()], now=None).event
        for _ in range(3):
            await process(admitted, [Plain()], mapping, catalog, Fetcher())
            titles.append((await catalog.get_entities([("thing", "x")]))[("thing", "x")]["title"])
    finally:
        await catalog.close()
    assert titles == ["from b", "from b", "from b"]
