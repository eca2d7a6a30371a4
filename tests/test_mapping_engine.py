"""The jq mapping engine keeps Ocean's JQ entity processor semantics, one compiled program per
resource notwithstanding: single-quoted strings, first output only, null plus a misconfiguration
for a failing field, boolean selectors, exact entity keys, search-query relations, itemsToParse,
a walled-off environment, and errors that name the file, line, kind and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocean_hook.errors import ConfigError
from ocean_hook.mapping.engine import CHUNK, Mapping, MapResult, ResourceMapper
from ocean_hook.mapping.jq import JqQuery, normalize_quotes
from ocean_hook.mapping.models import parse_port_app_config
from ocean_hook.yamlfile import dotted


def load(text: str, *, allow_env: bool = False) -> Mapping:
    return Mapping(parse_port_app_config(text, "mapping.yml"), allow_env=allow_env)


def mapper(text: str, *, allow_env: bool = False) -> ResourceMapper:
    return load(text, allow_env=allow_env).mappers[0]


def resource(properties: dict[str, str], *, selector: str = "true", extra: str = "") -> str:
    """A one-resource mapping whose properties are the given jq expressions (JSON-quoted)."""
    props = "".join(f"\n            {name}: {json.dumps(expr)}" for name, expr in properties.items())
    return f"""
resources:
  - kind: thing
    selector:
      query: {json.dumps(selector)}
    port:{extra}
      entity:
        mappings:
          identifier: .id
          blueprint: '"thing"'
          properties:{props}
"""


def properties_of(text: str, item: Any) -> tuple[dict[str, Any], dict[str, str]]:
    result = mapper(text).map_items([item])
    assert result.errors == [] and len(result.entities) == 1
    return result.entities[0].entity["properties"], result.entities[0].misconfigurations


# ------------------------------------------------------------------------------- single quotes
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (".organization + '/' + .repository", "port/ocean"),
        (".status == 'active'", True),
        ("'\"githubRepository\"'", '"githubRepository"'),
        ('"it\'s " + .organization', "it's port"),
        ("\"\\(.organization) 'quoted' \\(.repository)\"", "port 'quoted' ocean"),
        ("\"\\(.organization + '-x')\"", "port-x"),
        ("'it\\'s'", "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ("# a comment with a ' quote\n.repository", "ocean"),
        ("[.tags[] | select(. != 'b')] | join(',')", "a,c"),
    ],
)
def test_single_quoted_strings_are_read_as_ocean_reads_them(expr: str, expected: Any) -> None:
    item = {"id": "1", "organization": "port", "repository": "ocean", "status": "active", "tags": ["a", "b", "c"]}
    props, misconfigured = properties_of(resource({"value": expr}), item)
    assert props == {"value": expected}
    assert misconfigured == {}


def test_normalize_quotes_leaves_double_quoted_text_and_interpolations_as_written() -> None:
    assert normalize_quotes(".a + '/' + .b") == '.a + "/" + .b'
    assert normalize_quotes('"it\'s"') == '"it\'s"'
    assert normalize_quotes('"a \\" \' b"') == '"a \\" \' b"'
    assert normalize_quotes("\"\\(.a + 'x') 'y'\"") == "\"\\(.a + \"x\") 'y'\""
    assert normalize_quotes("'it\\'s'") == '"it\'s"'
    assert normalize_quotes("'a\"b'") == '"a\\"b"'


def test_single_quoted_selector_filters_items() -> None:
    m = mapper(resource({"status": ".status"}, selector=".status == 'active'"))
    result = m.map_items([{"id": "1", "status": "active"}, {"id": "2", "status": "archived"}])
    assert [e.entity["identifier"] for e in result.entities] == ["1"]
    assert result.filtered == 1


# ------------------------------------------------------------------------------- first output
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (".a[]", 1),
        (".a[] | select(. > 1)", 2),
        ("(.a[] | tostring), \"never\"", "1"),
        ('repeat("forever")', "forever"),  # an endless generator: only its first output is taken
        ("range(5; infinite)", 5),
        ('(1, error("after the first output"))', 1),  # Ocean's `first` never sees the error
        ('.a | .[] | if . == 2 then error("boom") else . end', 1),
    ],
)
def test_only_the_first_output_counts(expr: str, expected: Any) -> None:
    props, misconfigured = properties_of(resource({"value": expr}), {"id": "1", "a": [1, 2, 3]})
    assert props == {"value": expected}
    assert misconfigured == {}


# ------------------------------------------------------------------------------- failing fields
def test_a_failing_field_is_null_and_misconfigured_while_the_others_still_map() -> None:
    text = resource({
        "url": ".html_url",
        "number": ".title | tonumber",
        "labels": "[.labels[].name]",
        "nothing": "empty",
        "raised": 'error("custom")',
        "halted": "halt",
    })
    item = {"id": "7", "html_url": "https://example.test/7", "title": "not a number", "labels": None}
    props, misconfigured = properties_of(text, item)
    assert props == {
        "url": "https://example.test/7", "number": None, "labels": None,
        "nothing": None, "raised": None, "halted": None,
    }
    assert misconfigured == {
        "properties.number": ".title | tonumber",
        "properties.labels": "[.labels[].name]",
        "properties.nothing": "empty",
        "properties.raised": 'error("custom")',
        "properties.halted": "halt",
    }


def test_a_halting_field_stops_neither_the_other_fields_nor_the_other_items() -> None:
    m = mapper(resource({"h": "halt_error", "name": ".name"}))
    result = m.map_items([{"id": str(i), "name": f"n{i}"} for i in range(3)])
    assert [e.entity["properties"] for e in result.entities] == [{"h": None, "name": f"n{i}"} for i in range(3)]


def test_a_null_field_is_reported_under_its_dotted_path_at_any_depth() -> None:
    text = """
resources:
  - kind: thing
    port:
      entity:
        mappings:
          identifier: .id
          title: .missing_title
          blueprint: '"thing"'
          relations:
            owner:
              combinator: "'and'"
              rules:
                - property: "'$identifier'"
                  operator: "'='"
                  value: .owner.name
"""
    result = mapper(text).map_items([{"id": "1"}])
    assert result.entities[0].misconfigurations == {
        "title": ".missing_title",
        "relations.owner.rules[0].value": ".owner.name",
    }


# ------------------------------------------------------------------------------- selector
@pytest.mark.parametrize(("selector", "shown"), [(".count", "5"), (".name", '"x"'), (".missing", "null")])
def test_a_non_boolean_selector_is_an_error_naming_the_kind_and_the_value(selector: str, shown: str) -> None:
    result = mapper(resource({"n": ".name"}, selector=selector)).map_items([{"id": "1", "count": 5, "name": "x"}])
    assert result.entities == []
    assert result.errors == [f"kind 'thing', item 0: selector '{selector}' must give a boolean, got {shown}"]


def test_a_failing_selector_is_an_error_and_the_next_items_still_map() -> None:
    m = mapper(resource({"n": ".name"}, selector=".name | test('^a')"))
    result = m.map_items([{"id": "1", "name": 5}, {"id": "2", "name": "abc"}])
    assert [e.entity["identifier"] for e in result.entities] == ["2"]
    assert len(result.errors) == 1
    assert result.errors[0].startswith("kind 'thing', item 0: selector '.name | test('^a')' failed: ")
    assert "cannot be matched" in result.errors[0]


def test_parse_all_maps_items_that_fail_the_selector_and_marks_them() -> None:
    m = mapper(resource({"state": ".state"}, selector=".state == 'open'"))
    result = m.map_items([{"id": "1", "state": "open"}, {"id": "2", "state": "closed"}], parse_all=True)
    assert [(e.entity["identifier"], e.passed_selector) for e in result.entities] == [("1", True), ("2", False)]
    assert [e.entity["identifier"] for e in result.passed] == ["1"]
    assert [e.entity["identifier"] for e in result.failed] == ["2"]
    assert result.filtered == 1


def test_an_item_the_selector_refuses_is_filtered_whatever_its_identifier() -> None:
    """It was an error (a dead letter in `serve`, exit 1 in test-mapping): a refused item with
    a numeric id names nothing to write or delete."""
    m = mapper(resource({"state": ".state"}, selector=".state == 'open'"))
    for parse_all in (False, True):
        result = m.map_items([{"id": "1", "state": "open"}, {"id": 42, "state": "closed"}], parse_all=parse_all)
        assert [e.entity["identifier"] for e in result.entities] == ["1"]
        assert (result.errors, result.filtered) == ([], 1)


# ------------------------------------------------------------------------------- entity shape
def test_the_entity_has_exactly_the_keys_the_mapping_names() -> None:
    text = """
resources:
  - kind: svc
    port:
      entity:
        mappings:
          identifier: .name
          blueprint: '"service"'
          properties:
            lang: .lang
"""
    result = mapper(text).map_items([{"name": "api", "lang": "go", "team": "core", "title": "API"}])
    assert result.entities[0].entity == {"identifier": "api", "blueprint": "service", "properties": {"lang": "go"}}


ID_AND_BLUEPRINT = """
resources:
  - kind: thing
    port:
      entity:
        mappings:
          identifier: .id
          blueprint: .bp
"""


@pytest.mark.parametrize(
    "item",
    [{"id": "", "bp": "thing"}, {"bp": "thing"}, {"id": "1", "bp": ""}, {"id": "1"}],
    ids=["empty identifier", "null identifier", "empty blueprint", "null blueprint"],
)
def test_an_entity_without_identifier_or_blueprint_is_skipped_and_counted(item: dict[str, Any]) -> None:
    result = mapper(ID_AND_BLUEPRINT).map_items([item, {"id": "ok", "bp": "thing"}])
    assert [e.entity for e in result.entities] == [{"identifier": "ok", "blueprint": "thing"}]
    assert result.skipped == 1
    assert result.errors == []


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"id": 42, "bp": "thing"}, "identifier must be a string or a search query, got 42 (add | tostring)"),
        ({"id": ["a"], "bp": "thing"}, 'identifier must be a string or a search query, got ["a"] (add | tostring)'),
        ({"id": {"rules": []}, "bp": "thing"},
         'identifier must be a string or a search query, got {"rules": []} (add | tostring)'),
        ({"id": "1", "bp": 7}, "blueprint must be a string, got 7"),
    ],
    ids=["number", "list", "object that is no search query", "numeric blueprint"],
)
def test_a_key_port_would_refuse_is_an_error_not_an_entity(item: dict[str, Any], problem: str) -> None:
    """Ocean passes such an entity on and Port refuses the write; test-mapping should say so."""
    result = mapper(ID_AND_BLUEPRINT).map_items([{"id": "ok", "bp": "thing"}, item])
    assert [e.entity for e in result.entities] == [{"identifier": "ok", "blueprint": "thing"}]
    assert result.errors == [f"kind 'thing', item 1: {problem}"]
    assert result.skipped == 0


def test_a_title_or_icon_port_would_refuse_is_an_error_as_the_local_catalog_says() -> None:
    """`title: .num` passed test-mapping --strict and was written to the local catalog, whose
    export then could not be imported back ("'title' must be a string, got 42"); Port refuses it."""
    text = ID_AND_BLUEPRINT + "          title: .title\n          icon: .icon\n"
    result = mapper(text).map_items([{"id": "a", "bp": "t", "title": 42}, {"id": "b", "bp": "t", "icon": ["x"]},
                                     {"id": "c", "bp": "t", "title": "C"}])
    assert [e.entity["identifier"] for e in result.entities] == ["c"]
    assert result.errors == ["kind 'thing', item 0: 'title' must be a string, got 42",
                             "kind 'thing', item 1: 'icon' must be a string, got [\"x\"]"]


def test_root_flags_default_to_true_as_in_ocean() -> None:
    flags = load(resource({"a": ".a"})).flags
    assert (flags.enable_merge_entity, flags.delete_dependent_entities, flags.create_missing_related_entities) == (
        True, True, True,
    )
    explicit = load("enableMergeEntity: false\ndeleteDependentEntities: false\n" + resource({"a": ".a"})).flags
    assert (explicit.enable_merge_entity, explicit.delete_dependent_entities) == (False, False)
    assert explicit.create_missing_related_entities is True


def test_a_root_flag_that_is_not_a_boolean_names_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load("enableMergeEntity: maybe\n" + resource({"a": ".a"}))
    assert str(caught.value) == "mapping.yml:1 (key enableMergeEntity): must be true or false, got 'maybe'"


# ------------------------------------------------------------------------------- search queries
SEARCH_QUERY_MAPPING = """
resources:
  - kind: deployment
    port:
      entity:
        mappings:
          identifier:
            combinator: "'and'"
            rules:
              - property: "'commitSha'"
                operator: "'='"
                value: .sha
          blueprint: '"deployment"'
          relations:
            service:
              combinator: '"and"'
              rules:
                - property: '"$identifier"'
                  operator: '"="'
                  value: .service | ascii_downcase
                - property: "'environment'"
                  operator: "'in'"
                  value: "[.envs[] | 'env-' + .]"
            owner: .owner
"""


def test_search_query_relations_and_identifiers_are_evaluated_leaf_by_leaf_and_kept_as_objects() -> None:
    result = mapper(SEARCH_QUERY_MAPPING).map_items(
        [{"sha": "abc123", "service": "Payments", "envs": ["prod", "eu"], "owner": "team-a"}]
    )
    assert result.entities[0].entity == {
        "identifier": {"combinator": "and", "rules": [{"property": "commitSha", "operator": "=", "value": "abc123"}]},
        "blueprint": "deployment",
        "relations": {
            "service": {
                "combinator": "and",
                "rules": [
                    {"property": "$identifier", "operator": "=", "value": "payments"},
                    {"property": "environment", "operator": "in", "value": ["env-prod", "env-eu"]},
                ],
            },
            "owner": "team-a",
        },
    }
    assert result.entities[0].misconfigurations == {}


# ------------------------------------------------------------------------------- itemsToParse
ITEMS_TO_PARSE = """
resources:
  - kind: file-entry
    port:
      itemsToParse: .content.services
{extra}      entity:
        mappings:
          identifier: .repo + '/' + .{name}.name
          blueprint: '"service"'
          properties:
            owner: .{name}.owner
            repo: .repo
            stillThere: .content.services | length
            sibling: .content.version
"""
RAW_FILE = {"repo": "shop", "content": {"version": 2, "services": [{"name": "cart", "owner": "a"}, {"name": "pay"}]}}


def test_items_to_parse_makes_one_entity_per_element_under_item_with_the_array_removed() -> None:
    result = mapper(ITEMS_TO_PARSE.format(name="item", extra="")).map_items([RAW_FILE])
    assert [(e.entity["identifier"], e.entity["properties"]) for e in result.entities] == [
        ("shop/cart", {"owner": "a", "repo": "shop", "stillThere": 0, "sibling": 2}),
        ("shop/pay", {"owner": None, "repo": "shop", "stillThere": 0, "sibling": 2}),
    ]
    assert [e.item_index for e in result.entities] == [0, 0]
    assert RAW_FILE["content"]["services"][0] == {"name": "cart", "owner": "a"}  # the raw item is untouched


def test_items_to_parse_with_a_trailing_comment_works_as_in_other_fields() -> None:
    """It ended in a JqCompileError traceback: the comment swallowed `del(...)`'s parenthesis."""
    text = ITEMS_TO_PARSE.format(name="item", extra="").replace(
        "itemsToParse: .content.services", "itemsToParse: '.content.services # the services'")
    result = mapper(text).map_items([RAW_FILE])
    assert [(e.entity["identifier"], e.entity["properties"]["stillThere"]) for e in result.entities] == [
        ("shop/cart", 0), ("shop/pay", 0),
    ]


def test_items_to_parse_name_and_top_level_transform_false_keep_the_array() -> None:
    extra = "      itemsToParseName: service\n      itemsToParseTopLevelTransform: false\n"
    result = mapper(ITEMS_TO_PARSE.format(name="service", extra=extra)).map_items([RAW_FILE])
    assert [(e.entity["identifier"], e.entity["properties"]["stillThere"]) for e in result.entities] == [
        ("shop/cart", 2), ("shop/pay", 2),
    ]


def test_items_to_parse_that_gives_null_skips_the_item_as_ocean_does_and_names_the_field() -> None:
    """An optional array an item lacks was an error, exit 1 in CI; Ocean skips that item with a
    warning (found by probing). Here it is skipped and counted misconfigured, as a null field is."""
    m = mapper(ITEMS_TO_PARSE.format(name="item", extra=""))
    result = m.map_items([{"repo": "x"}, RAW_FILE, {"repo": "y", "content": {"services": None}}])
    assert (len(result.entities), result.errors, result.skipped) == (2, [], 2)
    assert [(u.item_index, u.misconfigurations) for u in result.unnamed] == [
        (0, {"itemsToParse": ".content.services"}), (2, {"itemsToParse": ".content.services"})]


def test_items_to_parse_that_is_not_a_list_is_an_error_for_that_item_only() -> None:
    m = mapper(ITEMS_TO_PARSE.format(name="item", extra=""))
    result = m.map_items([{"repo": "x", "content": {"services": "oops"}}, RAW_FILE, {"content": 5}])
    assert len(result.entities) == 2
    assert result.errors[0] == (
        "kind 'file-entry', item 0: itemsToParse '.content.services' must give a list, got \"oops\""
    )
    assert result.errors[1].startswith(
        "kind 'file-entry', item 2: itemsToParse '.content.services' failed: Cannot index number with"
    )
    assert len(result.errors) == 2


# ------------------------------------------------------------------------------- loading
def test_unknown_selector_keys_are_kept_and_ignored() -> None:
    text = """
resources:
  - kind: pull-request
    selector:
      query: 'true'
      states: [open, merged]
      includedFiles: [README.md]
      maxResults: 100
    port:
      entity:
        mappings:
          identifier: .id | tostring
          blueprint: '"pr"'
"""
    m = load(text)
    assert m.config.resources[0].selector_extra == {
        "states": ["open", "merged"], "includedFiles": ["README.md"], "maxResults": 100,
    }
    assert m.mappers[0].map_items([{"id": 3, "state": "closed"}]).entities[0].entity == {
        "identifier": "3", "blueprint": "pr",
    }


def test_integration_file_references_load_and_map_to_null() -> None:
    props, misconfigured = properties_of(resource({"readme": "file://README.md", "n": ".n"}), {"id": "1", "n": 2})
    assert props == {"readme": None, "n": 2}
    assert misconfigured == {"properties.readme": "file://README.md"}


def test_jq_cannot_read_the_environment_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCEAN_HOOK_TEST_SECRET", "s3cr3t")
    text = resource({"env": "env", "dollar": "$ENV", "secret": "env.OCEAN_HOOK_TEST_SECRET",
                     "other": "$ENV.OCEAN_HOOK_TEST_SECRET // 'none'"})
    walled = mapper(text).map_items([{"id": "1"}]).entities[0].entity["properties"]
    assert walled == {"env": {}, "dollar": {}, "secret": None, "other": "none"}
    allowed = mapper(text, allow_env=True).map_items([{"id": "1"}]).entities[0].entity["properties"]
    assert allowed["secret"] == "s3cr3t" and allowed["other"] == "s3cr3t"
    assert allowed["env"]["OCEAN_HOOK_TEST_SECRET"] == "s3cr3t"


@pytest.mark.parametrize(
    ("snippet", "line", "key", "field", "expr"),
    [
        ("properties:\n            url: .html_url |", 11, "port.entity.mappings.properties.url",
         "properties.url", ".html_url |"),
        ("title: .title)", 10, "port.entity.mappings.title", "title", ".title)"),
        ("relations:\n            svc:\n              combinator: \"'and'\"\n              rules:\n"
         "                - property: \"'x'\"\n                  operator: \"'='\"\n"
         "                  value: .x[", 16, "port.entity.mappings.relations.svc.rules[0].value",
         "relations.svc.rules[0].value", ".x["),
    ],
)
def test_a_jq_compile_error_is_reported_at_load_with_file_line_kind_and_field(
    tmp_path: Path, snippet: str, line: int, key: str, field: str, expr: str
) -> None:
    path = tmp_path / "port-app-config.yml"
    path.write_text(f"""resources:
  - kind: repo
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .name
          blueprint: '"service"'
          {snippet}
""")
    with pytest.raises(ConfigError) as caught:
        Mapping.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line} (key resources[0].{key}): resource kind 'repo', field {field}: ")
    assert "jq does not compile: syntax error" in message
    assert message.endswith(f"(expression: {expr})")
    assert "\n" not in message


def test_a_bad_selector_or_items_to_parse_is_reported_at_load(tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text("resources:\n  - kind: a\n    selector:\n      query: .x ==\n    port:\n      entity:\n"
                    "        mappings:\n          identifier: .id\n          blueprint: '\"b\"'\n")
    with pytest.raises(ConfigError, match=r"m\.yml:4 \(key resources\[0\]\.selector\.query\): resource kind 'a', "
                       r"field selector\.query: jq does not compile"):
        Mapping.load(path)
    path.write_text("resources:\n  - kind: a\n    port:\n      itemsToParse: .files[\n      entity:\n"
                    "        mappings:\n          identifier: .id\n          blueprint: '\"b\"'\n")
    with pytest.raises(ConfigError, match=r"m\.yml:4 .*field port\.itemsToParse: jq does not compile"):
        Mapping.load(path)


def test_a_yaml_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("resources:\n  - kind: repo\n    port: [unclosed\n    selector: {}\n")
    with pytest.raises(ConfigError) as caught:
        Mapping.load(path)
    assert str(caught.value).startswith(f"{path}:4: invalid YAML: ")


def test_a_structural_mistake_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mapping\.yml:5 \(key resources\[0\]\.port\.entity\.mappings\): "
                       r"missing 'blueprint'"):
        load("resources:\n  - kind: a\n    port:\n      entity:\n        mappings:\n          identifier: .id\n")


# ------------------------------------------------------------------------------- Ocean-shaped mappings
OCEAN_SHAPED = r"""
deleteDependentEntities: true
createMissingRelatedEntities: true
enableMergeEntity: true
repositoryType: all
resources:
  - kind: pull-request
    selector:
      query: .draft == false
      state: open
    port:
      entity:
        mappings:
          identifier: .head.repo.name + (.id|tostring)
          title: .title
          blueprint: '"githubPullRequest"'
          properties:
            creator: .user.login
            assignees: "[.assignees[].login]"
            reviewers: "[.requested_reviewers[].login]"
            status: .state
            mergedAt: .merged_at
            link: .html_url
            leadTimeHours: >-
              (.created_at as $created | .merged_at as $merged |
              ($created | sub("\\..*Z$"; "Z") | strptime("%Y-%m-%dT%H:%M:%SZ") | mktime) as $start |
              ($merged | if . == null then null else sub("\\..*Z$"; "Z") |
              strptime("%Y-%m-%dT%H:%M:%SZ") | mktime end) as $end |
              if $end == null then null else ((($end - $start) / 3600) * 100 | floor) / 100 end)
          relations:
            repository: .head.repo.name
  - kind: merge-request
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .id | tostring
          title: .title
          blueprint: '"gitlabMergeRequest"'
          properties:
            creator: .author.name
            status: .state
            reviewers: .reviewers | map(.name)
            link: .web_url
          relations:
            project: .references.full | gsub("!.+"; "")
  - kind: project
    selector:
      query: 'true'
      includeLanguages: 'true'
    port:
      entity:
        mappings:
          identifier: .path_with_namespace | gsub(" "; "")
          title: .name
          blueprint: '"service"'
          properties:
            url: .web_url
            readme: file://README.md
            language: .__languages | to_entries | max_by(.value) | .key
  - kind: issue
    selector:
      query: .fields.issuetype.name != 'Epic'
      jql: statusCategory != Done
    port:
      entity:
        mappings:
          identifier: .key
          title: .fields.summary
          blueprint: '"jiraIssue"'
          properties:
            url: (.self | split("/") | .[:3] | join("/")) + "/browse/" + .key
            status: .fields.status.name
            issueType: .fields.issuetype.name
            assignee: .fields.assignee.emailAddress
            labels: .fields.labels
            created: .fields.created
          relations:
            project: .fields.project.key
            parentIssue: .fields.parent.key
            subtasks: .fields.subtasks | map(.key)
  - kind: services
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .id
          title: .name
          blueprint: '"pagerdutyService"'
          properties:
            status: .status
            url: .html_url
            oncall: '[.__oncall_user[] | select(.escalation_level == 1) | .user.email]'
            escalationLevels: .__oncall_user | map(.escalation_level) | unique | length
"""

PR = {
    "id": 1901, "number": 12, "title": "Fix retries", "state": "closed", "draft": False,
    "user": {"login": "octocat"}, "assignees": [{"login": "hubot"}], "requested_reviewers": [],
    "created_at": "2024-03-01T10:00:00Z", "merged_at": "2024-03-02T11:30:00Z",
    "html_url": "https://github.test/acme/api/pull/12", "head": {"repo": {"name": "api"}},
}
MR = {
    "id": 77, "title": "Bump deps", "state": "opened", "author": {"name": "Ada"},
    "reviewers": [{"name": "Bo"}, {"name": "Cy"}], "web_url": "https://gitlab.test/g/p/-/merge_requests/3",
    "references": {"full": "group/proj!3"},
}
PROJECT = {"path_with_namespace": "group/my proj", "name": "my proj", "web_url": "https://gitlab.test/group/my-proj",
           "__languages": {"Python": 70.5, "Shell": 29.5}}
ISSUE = {
    "key": "PROJ-9", "self": "https://acme.atlassian.test/rest/api/3/issue/10009",
    "fields": {
        "summary": "Login fails", "status": {"name": "In Progress"}, "issuetype": {"name": "Bug"},
        "assignee": None, "labels": ["auth"], "created": "2024-05-01T08:00:00.000+0000",
        "project": {"key": "PROJ"}, "subtasks": [{"key": "PROJ-10"}],
    },
}
SERVICE = {
    "id": "PSVC1", "name": "Checkout", "status": "active", "html_url": "https://acme.pagerduty.test/service-directory/PSVC1",
    "__oncall_user": [
        {"escalation_level": 1, "user": {"email": "ann@acme.test"}},
        {"escalation_level": 2, "user": {"email": "ben@acme.test"}},
        {"escalation_level": 1, "user": {"email": "cat@acme.test"}},
    ],
}


def map_kind(m: Mapping, kind: str, items: list[Any]) -> MapResult:
    result = MapResult()
    for r in m.for_kind(kind):
        result.extend(r.map_items(items))
    return result


def test_a_mapping_shaped_like_ocean_integrations_maps_to_the_exact_entities() -> None:
    m = load(OCEAN_SHAPED)
    assert m.kinds == ["pull-request", "merge-request", "project", "issue", "services"]
    assert m.config.extra == {"repositoryType": "all"}

    prs = map_kind(m, "pull-request", [PR, {**PR, "id": 5, "draft": True}])
    assert prs.filtered == 1 and prs.errors == []
    assert [(e.entity, e.misconfigurations) for e in prs.entities] == [(
        {
            "identifier": "api1901", "title": "Fix retries", "blueprint": "githubPullRequest",
            "properties": {
                "creator": "octocat", "assignees": ["hubot"], "reviewers": [], "status": "closed",
                "mergedAt": "2024-03-02T11:30:00Z", "link": "https://github.test/acme/api/pull/12",
                "leadTimeHours": 25.5,
            },
            "relations": {"repository": "api"},
        },
        {},
    )]

    mrs = map_kind(m, "merge-request", [MR])
    assert [(e.entity, e.misconfigurations) for e in mrs.entities] == [(
        {
            "identifier": "77", "title": "Bump deps", "blueprint": "gitlabMergeRequest",
            "properties": {"creator": "Ada", "status": "opened", "reviewers": ["Bo", "Cy"],
                           "link": "https://gitlab.test/g/p/-/merge_requests/3"},
            "relations": {"project": "group/proj"},
        },
        {},
    )]

    projects = map_kind(m, "project", [PROJECT])
    assert [(e.entity, e.misconfigurations) for e in projects.entities] == [(
        {
            "identifier": "group/myproj", "title": "my proj", "blueprint": "service",
            "properties": {"url": "https://gitlab.test/group/my-proj", "readme": None, "language": "Python"},
        },
        {"properties.readme": "file://README.md"},
    )]

    issues = map_kind(m, "issue", [ISSUE, {**ISSUE, "key": "PROJ-1", "fields": {"issuetype": {"name": "Epic"}}}])
    assert issues.filtered == 1
    assert [(e.entity, e.misconfigurations) for e in issues.entities] == [(
        {
            "identifier": "PROJ-9", "title": "Login fails", "blueprint": "jiraIssue",
            "properties": {
                "url": "https://acme.atlassian.test/browse/PROJ-9", "status": "In Progress", "issueType": "Bug",
                "assignee": None, "labels": ["auth"], "created": "2024-05-01T08:00:00.000+0000",
            },
            "relations": {"project": "PROJ", "parentIssue": None, "subtasks": ["PROJ-10"]},
        },
        {"properties.assignee": ".fields.assignee.emailAddress", "relations.parentIssue": ".fields.parent.key"},
    )]

    services = map_kind(m, "services", [SERVICE])
    assert [e.entity for e in services.entities] == [{
        "identifier": "PSVC1", "title": "Checkout", "blueprint": "pagerdutyService",
        "properties": {"status": "active", "url": "https://acme.pagerduty.test/service-directory/PSVC1",
                       "oncall": ["ann@acme.test", "cat@acme.test"], "escalationLevels": 2},
    }]


def test_items_beyond_one_chunk_keep_their_order_and_index() -> None:
    m = mapper(resource({"n": ".n"}, selector=".n % 3 != 0"))
    items = [{"id": str(i), "n": i} for i in range(CHUNK * 2 + 7)]
    result = m.map_items(items, start=10)
    kept = [i for i in range(len(items)) if i % 3 != 0]
    assert [e.entity["properties"]["n"] for e in result.entities] == kept
    assert [e.item_index for e in result.entities] == [i + 10 for i in kept]
    assert result.filtered == len(items) - len(kept)


# ------------------------------------------------------------------------------- identical output
#: fields of every kind: plain paths, single quotes, failing, empty, multi-output, generators
PROPERTY_EXPRESSIONS = {
    "name": ".name",
    "upper": ".name | ascii_upcase",
    "joined": ".name + '-' + (.n | tostring)",
    "first_tag": ".tags[]",
    "tags": "[.tags[] | tostring]",
    "number": ".n + 1",
    "nested": ".meta.owner.login",
    "keys": ".meta | keys",
    "quoted": "if .flag then 'yes' else 'no' end",
    "nothing": ".tags[] | select(. == 'never')",
    "late_error": "(.n, error(\"late\"))",
    "gen": "range(.n; infinite)",
    "recursive": "[.. | numbers] | length",
    "alt": ".missing // .name",
}
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=6))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["login", "x"]), inner,
                                                                         max_size=2)),
    max_leaves=6,
)
ITEMS = st.fixed_dictionaries(
    {"id": st.one_of(st.text(min_size=1, max_size=5), st.integers(0, 50), st.none())},
    optional={
        "name": st.one_of(st.text(max_size=8), st.integers(), st.none()),
        "n": st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()),
        "tags": st.one_of(st.lists(JSON_SCALARS, max_size=4), JSON_SCALARS),
        "meta": st.one_of(st.dictionaries(st.sampled_from(["owner", "size"]), JSON_VALUES, max_size=2), JSON_VALUES),
        "flag": JSON_VALUES,
    },
)
PROPERTY_MAPPING = mapper(resource(PROPERTY_EXPRESSIONS).replace("identifier: .id", "identifier: .id | tostring"))
ALONE = {name: JqQuery(expr) for name, expr in PROPERTY_EXPRESSIONS.items()}


def one_by_one(expr: JqQuery, item: Any) -> Any:
    try:
        return expr.first(item)
    except ValueError:
        return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ITEMS, min_size=1, max_size=8))
def test_one_program_per_resource_gives_what_one_jq_call_per_field_gives(items: list[dict[str, Any]]) -> None:
    result = PROPERTY_MAPPING.map_items(items)
    assert result.errors == [] and result.skipped == 0
    assert len(result.entities) == len(items)
    for entity, item in zip(result.entities, items, strict=True):
        expected = {name: one_by_one(query, item) for name, query in ALONE.items()}
        assert entity.entity["properties"] == expected
        assert entity.misconfigurations == {
            dotted(("properties", name)): PROPERTY_EXPRESSIONS[name]
            for name, value in expected.items() if value is None
        }


RESOURCE = "resources:\n  - kind: a\n{selector}    port:\n      entity:\n        mappings:\n{mappings}"
NAMED = "          identifier: .id\n          blueprint: '\"b\"'\n"


@pytest.mark.parametrize(("selector", "mappings", "problem"), [
    ("", NAMED + "          propertys:\n            a: .a\n",
     r"mapping\.yml:8 \(key resources\[0\]\.port\.entity\.mappings\.propertys\): unknown key 'propertys': "
     r"an entity mapping has identifier, title, blueprint, team, icon, properties, relations"),
    ("    selector: false\n", NAMED, r"\(key resources\[0\]\.selector\): must be a mapping \(with 'query'\)"),
    ("    selector: []\n", NAMED, r"\(key resources\[0\]\.selector\): must be a mapping"),
    ("", NAMED + "          properties:\n",
     r"\(key resources\[0\]\.port\.entity\.mappings\.properties\): must be a mapping of name to jq expression"),
    ("", NAMED + "          title: 2024-01-01\n", r"must be a jq expression \(a string\), got the date 2024-01-01: "
                                                    "quote it"),
])
def test_mapping_mistakes_that_used_to_pass_name_their_key(selector: str, mappings: str, problem: str) -> None:
    """A misspelt key became a field of every entity (`+ propertys: ...`), a false selector took
    every item, and the others were worded after what they were not."""
    with pytest.raises(ConfigError, match=problem):
        load(RESOURCE.format(selector=selector, mappings=mappings))


def test_an_empty_selector_key_is_no_selector() -> None:
    mapping = load(RESOURCE.format(selector="    selector:\n", mappings=NAMED))
    assert [m.entity["identifier"] for m in mapping.mappers[0].map_items([{"id": "x"}]).entities] == ["x"]


def test_items_to_parse_on_an_item_that_is_not_an_object_names_the_item_not_the_list() -> None:
    m = mapper(ITEMS_TO_PARSE.format(name="item", extra="").replace(".content.services", "."))
    result = m.map_items([[{"id": "x"}]])
    assert result.errors == ["kind 'file-entry', item 0: itemsToParse '.': the item must be a JSON object, "
                             'got [{"id": "x"}]']


def test_a_mapping_path_that_is_a_directory_is_named_plainly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Mapping.load(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read file: Is a directory"


# ------------------------------------------------------------------------------- near misses, references
TYPOS = """\
deleteDependentEntites: false
repositoryType: all
resources:
  - kind: thing
    selectr:
      query: .a == 1
    port:
      itemsToParseNam: x
      entity:
        mappings:
          identifier: .id
          blueprint: '"thing"'
  - Kind: other
    kind: other
    selector:
      qurey: .b
      states: [open]
      jql: status != Done
    port:
      Entity: {}
      entity:
        mappings:
          identifier: .id
          blueprint: '"other"'
"""


def test_a_key_that_nearly_is_ports_is_a_warning_naming_its_line_and_the_key_meant() -> None:
    """`deleteDependentEntites: false` left the default true in force and `selectr:` a selector of
    true, in silence (found by probing); keys Ocean integrations add are no concern of this."""
    m = load(TYPOS)
    assert m.config.warnings == [
        "mapping.yml:1 (key deleteDependentEntites): unknown key; did you mean 'deleteDependentEntities'?",
        "mapping.yml:5 (key resources[0].selectr): unknown key; did you mean 'selector'?",
        "mapping.yml:8 (key resources[0].port.itemsToParseNam): unknown key; did you mean 'itemsToParseName'?",
        "mapping.yml:13 (key resources[1].Kind): unknown key; did you mean 'kind'?",
        "mapping.yml:16 (key resources[1].selector.qurey): unknown key; did you mean 'query'?",
        "mapping.yml:20 (key resources[1].port.Entity): unknown key; did you mean 'entity'?",
    ]
    assert m.flags.delete_dependent_entities is True  # a warning, not a change of what the mapping does
    assert load(OCEAN_SHAPED).config.warnings == []  # repositoryType, states, jql, includeLanguages...


def test_an_unknown_entity_mapping_key_says_which_key_was_meant() -> None:
    with pytest.raises(ConfigError) as caught:
        load(RESOURCE.format(selector="", mappings="          identifer: .id\n          blueprint: '\"b\"'\n"))
    assert str(caught.value) == (
        "mapping.yml:6 (key resources[0].port.entity.mappings.identifer): unknown key 'identifer': an entity "
        "mapping has identifier, title, blueprint, team, icon, properties, relations; did you mean 'identifier'?")


def test_every_schema_problem_of_a_resource_is_reported_at_once() -> None:
    """A typo, an unquoted date and a bad itemsToParseName took one run each (found by probing)."""
    text = RESOURCE.format(selector="    selector:\n      query: 2024-01-01\n",
                           mappings="          identifer: .id\n          blueprint: '\"b\"'\n"
                                    "          title: 2024-01-01\n          properties: [a]\n")
    text = text.replace("    port:\n", "    port:\n      itemsToParseName: a-b\n")
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert str(caught.value).splitlines() == [
        "5 problems:",
        "  mapping.yml:4 (key resources[0].selector.query): must be a jq expression (a string), got the date "
        "2024-01-01: quote it",
        "  mapping.yml:9 (key resources[0].port.entity.mappings.identifer): unknown key 'identifer': an entity "
        "mapping has identifier, title, blueprint, team, icon, properties, relations; did you mean 'identifier'?",
        "  mapping.yml:12 (key resources[0].port.entity.mappings.properties): must be a mapping of name to jq "
        "expression",
        "  mapping.yml:11 (key resources[0].port.entity.mappings.title): must be a jq expression (a string), got "
        "the date 2024-01-01: quote it",
        "  mapping.yml:6 (key resources[0].port.itemsToParseName): must be a plain key name, got 'a-b'",
    ]


@pytest.mark.parametrize(("place", "expr", "line", "key", "field"), [
    ("items", "file://items.json", 4, "port.itemsToParse", "port.itemsToParse"),
    ("items", "search://path=*.yml", 4, "port.itemsToParse", "port.itemsToParse"),
    ("selector", "file://select.jq", 4, "selector.query", "selector.query"),
])
def test_an_integration_reference_where_jq_must_give_items_or_a_verdict_is_a_mapping_error(
    tmp_path: Path, place: str, expr: str, line: int, key: str, field: str,
) -> None:
    """`itemsToParse: file://...` passed `check` and crashed test-mapping, serve and replay with a
    jq traceback; `selector.query: file://...` made every item an error (found by probing). A
    property keeps loading and mapping to null, as in Ocean (test above)."""
    path = tmp_path / "m.yml"
    head = (f"resources:\n  - kind: repo\n    port:\n      itemsToParse: {expr}\n" if place == "items" else
            f"resources:\n  - kind: repo\n    selector:\n      query: {expr}\n    port:\n")
    path.write_text(head + "      entity:\n        mappings:\n          identifier: .id\n          blueprint: '\"b\"'\n"
                    "          properties:\n            readme: file://README.md\n")
    with pytest.raises(ConfigError) as caught:
        Mapping.load(path)
    assert str(caught.value) == (
        f"{path}:{line} (key resources[0].{key}): resource kind 'repo', field {field}: '{expr}' is a reference "
        "that only Ocean's git integrations resolve (file://, search://), not jq: ocean-hook cannot read it, and "
        "this field needs a jq expression")
