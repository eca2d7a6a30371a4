"""`ocean-hook test-mapping` as a user runs it: the real CLI (and once the installed console
script in a subprocess), its plan in text, JSON and markdown, --expect, --strict, and one-line
errors with exit code 2 that name the file and line, never a traceback."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mapping_texts import TWO_RESOURCES, resource
from port_server import FakePort
from read_only import only_readable, snapshot
from serve_helpers import hook_env, port_env, port_target, write_config
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.queue.base import Delivery
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.targets.local import LocalCatalog

MAPPING = """\
resources:
  - kind: pull-request
    selector:
      query: .state == 'open' or .state == 'closed'
      states: [open, closed]
    port:
      entity:
        mappings:
          identifier: .number | tostring
          title: .title
          blueprint: '"githubPullRequest"'
          properties:
            status: .state
            author: .user.login
          relations:
            repository: .repo
  - kind: repository
    port:
      entity:
        mappings:
          identifier: .repo
          blueprint: '"githubRepository"'
"""
ITEMS = [
    {"number": 1, "title": "Add retries", "state": "open", "user": {"login": "ann"}, "repo": "api"},
    {"number": 2, "title": "Fix typo", "state": "closed", "user": {"login": "ben"}, "repo": "api"},
    {"number": 3, "title": "WIP", "state": "draft", "user": {"login": "cat"}, "repo": "api"},
    {"number": 4, "title": "Docs", "state": "open", "user": None, "repo": "web"},
]
STATE = [
    {"identifier": "2", "title": "Fix typo", "blueprint": "githubPullRequest",
     "properties": {"status": "open", "author": "ben"}, "relations": {"repository": "api"}},
    {"identifier": "3", "title": "WIP", "blueprint": "githubPullRequest",
     "properties": {"status": "open", "author": "cat"}, "relations": {"repository": "api"}},
    {"identifier": "4", "title": "Docs", "blueprint": "githubPullRequest",
     "properties": {"status": "open", "author": None}, "relations": {"repository": "web"}},
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "mapping": tmp_path / "port-app-config.yml",
        "data": tmp_path / "prs.json",
        "jsonl": tmp_path / "prs.jsonl",
        "state": tmp_path / "state.json",
    }
    paths["mapping"].write_text(MAPPING)
    paths["data"].write_text(json.dumps(ITEMS, indent=2))
    paths["jsonl"].write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    paths["state"].write_text(json.dumps(STATE))
    return paths


def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(app, ["test-mapping", *map(str, args)], env=env)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


# ------------------------------------------------------------------------------- text
def test_text_prints_a_plan_and_the_summary_line(files: dict[str, Path]) -> None:
    result = invoke("--mapping", files["mapping"], "--data", files["data"], "--state", files["state"],
                    "--kind", "pull-request")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "+ create githubPullRequest/1  (kind pull-request)",
        '    + identifier: "1"',
        '    + title: "Add retries"',
        '    + blueprint: "githubPullRequest"',
        '    + properties.author: "ann"',
        '    + properties.status: "open"',
        '    + relations.repository: "api"',
        "~ update githubPullRequest/2  (kind pull-request)",
        '    ~ properties.status: "open" → "closed"',
        "- delete githubPullRequest/3  (kind pull-request)",
        "1 to create, 1 to update, 1 to delete, 1 unchanged (1 filtered, 1 misconfigured)",
    ]
    assert result.stderr.splitlines() == [
        "! pull-request: properties.author is null in 1 entity (jq: .user.login), e.g. 4",
    ]


def test_every_kind_without_kind_and_quiet_prints_only_the_summary(files: dict[str, Path]) -> None:
    result = invoke("-m", files["mapping"], "-d", files["data"], "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "5 to create, 0 to update, 0 to delete, 0 unchanged (1 filtered, 1 misconfigured)\n"
    assert result.stderr == ""


def test_json_lines_and_a_single_object_are_read_like_an_array(files: dict[str, Path], tmp_path: Path) -> None:
    as_array = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "--format", "json")
    as_lines = invoke("-m", files["mapping"], "-d", files["jsonl"], "-k", "pull-request", "--format", "json")
    assert as_array.exit_code == as_lines.exit_code == 0
    assert json.loads(as_lines.stdout) == json.loads(as_array.stdout)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(ITEMS[0], indent=4))
    single = invoke("-m", files["mapping"], "-d", one, "-k", "pull-request", "--format", "json")
    assert [e["entity"]["identifier"] for e in json.loads(single.stdout)["entities"]] == ["1"]


# ------------------------------------------------------------------------------- json
def test_json_is_the_documented_stable_document(files: dict[str, Path]) -> None:
    result = invoke("-m", files["mapping"], "-d", files["jsonl"], "-s", files["state"], "-k", "pull-request",
                    "-f", "json")
    assert result.exit_code == 0
    assert result.stderr == ""
    pr1 = {"identifier": "1", "title": "Add retries", "blueprint": "githubPullRequest",
           "properties": {"status": "open", "author": "ann"}, "relations": {"repository": "api"}}
    pr2 = {"identifier": "2", "title": "Fix typo", "blueprint": "githubPullRequest",
           "properties": {"status": "closed", "author": "ben"}, "relations": {"repository": "api"}}
    pr4 = {"identifier": "4", "title": "Docs", "blueprint": "githubPullRequest",
           "properties": {"status": "open", "author": None}, "relations": {"repository": "web"}}
    assert json.loads(result.stdout) == {
        "entities": [
            {"kind": "pull-request", "entity": pr1, "misconfigurations": {}},
            {"kind": "pull-request", "entity": pr2, "misconfigurations": {}},
            {"kind": "pull-request", "entity": pr4, "misconfigurations": {"properties.author": ".user.login"}},
        ],
        "changes": [
            {"action": "create", "kind": "pull-request", "blueprint": "githubPullRequest", "identifier": "1",
             "before": None, "after": pr1, "fields": [
                 {"path": "identifier", "before": None, "after": "1"},
                 {"path": "title", "before": None, "after": "Add retries"},
                 {"path": "blueprint", "before": None, "after": "githubPullRequest"},
                 {"path": "properties.author", "before": None, "after": "ann"},
                 {"path": "properties.status", "before": None, "after": "open"},
                 {"path": "relations.repository", "before": None, "after": "api"},
             ]},
            {"action": "update", "kind": "pull-request", "blueprint": "githubPullRequest", "identifier": "2",
             "before": STATE[0], "after": pr2,
             "fields": [{"path": "properties.status", "before": "open", "after": "closed"}]},
            {"action": "unchanged", "kind": "pull-request", "blueprint": "githubPullRequest", "identifier": "4",
             "before": STATE[2], "after": pr4, "fields": []},
            {"action": "delete", "kind": "pull-request", "blueprint": "githubPullRequest", "identifier": "3",
             "before": STATE[1], "after": None, "fields": []},
        ],
        "summary": {"create": 1, "update": 1, "delete": 1, "unchanged": 1, "filtered": 1, "skipped": 0,
                    "misconfigured": 1, "errors": 0},
        "errors": [],
    }


def test_markdown_is_a_pull_request_comment(files: dict[str, Path]) -> None:
    result = invoke("-m", files["mapping"], "-d", files["data"], "-s", files["state"], "-k", "pull-request",
                    "-f", "markdown")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == ["### ocean-hook plan", "", "**1 to create, 1 to update, 1 to delete, 1 unchanged "
                         "(1 filtered, 1 misconfigured)**"]
    assert "```diff" in lines
    assert '    ~ properties.status: "open" → "closed"' in lines
    assert "- delete githubPullRequest/3  (kind pull-request)" in lines
    assert "- `pull-request`: `properties.author` is null in 1 entity (jq: `.user.login`), e.g. `4`" in lines
    assert "unchanged githubPullRequest/4" not in result.stdout


# ------------------------------------------------------------------------------- expect
def test_expect_passes_on_the_same_result_and_fails_with_a_diff_otherwise(files: dict[str, Path]) -> None:
    expected = files["data"].parent / "expected" / "pr.json"
    args = ["-m", files["mapping"], "-d", files["data"], "-s", files["state"], "-k", "pull-request",
            "--expect", expected]
    missing = invoke(*args)
    assert missing.exit_code == 2
    assert missing.stderr == f"error: {expected}: file not found (use --update-expected to create it)\n"

    written = invoke(*args, "--update-expected")
    assert written.exit_code == 0
    assert json.loads(expected.read_text())["summary"]["update"] == 1
    assert invoke(*args).exit_code == 0

    document = json.loads(expected.read_text())
    document["changes"][1]["fields"][0]["after"] = "merged"
    expected.write_text(json.dumps(document, indent=2))
    mismatch = invoke(*args)
    assert mismatch.exit_code == 1
    assert f"result differs from {expected}:" in mismatch.stderr
    assert f"--- {expected} changes[1]\n+++ actual changes[1]" in mismatch.stderr  # only what differs
    assert '-      "after": "merged"' in mismatch.stderr
    assert '+      "after": "closed"' in mismatch.stderr

    assert invoke(*args, "--update-expected").exit_code == 0
    assert invoke(*args).exit_code == 0


def test_an_expect_diff_tells_a_missing_item_from_null_and_spells_out_what_a_payload_holds(
    files: dict[str, Path]
) -> None:
    """Found by probing: an extra expected item was shown as `+null` on the actual side, a
    trailing null showed no diff at all, a title's U+2028 split a diff line and its U+202E
    reached the terminal, and the marker line CI looks for was coloured under FORCE_COLOR."""
    expected = files["data"].parent / "pr.json"
    items = [*ITEMS[:3], {**ITEMS[3], "title": "Docs\u2028ls \u202eRTL"}]
    files["data"].write_text(json.dumps(items))
    args = ["-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "--expect", expected]
    assert invoke(*args, "--update-expected").exit_code == 0
    document = json.loads(expected.read_text())
    extra = len(document["changes"])
    document["changes"].append(document["changes"][0])
    document["errors"].append(None)
    [docs] = [e for e in document["entities"] if e["entity"]["title"].startswith("Docs")]
    docs["entity"]["title"] = "Docs"
    expected.write_text(json.dumps(document))
    mismatch = invoke(*args, env={"FORCE_COLOR": "1", "NO_COLOR": None})  # type: ignore[dict-item]
    assert mismatch.exit_code == 1
    lines = mismatch.stderr.splitlines()
    assert lines[0] == f"result differs from {expected}:"
    assert f"--- {expected} changes[{extra}]" in lines and "+null" not in lines
    shown = lines.index("+++ actual errors[0]")
    assert lines[shown + 1:shown + 3] == ["@@ -1 +0,0 @@", "-null"]
    assert '+    "title": "Docs\\u2028ls \\u202eRTL",' in lines


def test_an_expect_file_that_is_not_an_expected_result_is_one_line(files: dict[str, Path]) -> None:
    """A data or export file given as --expect got a whole-document diff: minutes, 30 MB."""
    expected = files["data"].parent / "items.json"
    expected.write_text("[]")
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "--expect", expected)
    assert (result.exit_code, result.stderr) == (
        2, f"error: {expected}: not an expected result (the JSON object `test-mapping --format json` writes; "
           "make one with --update-expected)\n")


def test_expect_tells_true_from_1(tmp_path: Path) -> None:
    """The expected file said `true` where the result said `1`, and --expect passed (found by probing)."""
    mapping, data, expected = tmp_path / "m.yml", tmp_path / "d.json", tmp_path / "expected.json"
    mapping.write_text("resources:\n  - kind: thing\n    port:\n      entity:\n        mappings:\n"
                       "          identifier: .id\n          blueprint: '\"thing\"'\n"
                       "          properties:\n            enabled: .enabled\n")
    data.write_text(json.dumps({"id": "x", "enabled": True}))
    args = ["-m", mapping, "-d", data, "--expect", expected]
    assert invoke(*args, "--update-expected").exit_code == 0
    assert invoke(*args).exit_code == 0
    data.write_text(json.dumps({"id": "x", "enabled": 1}))
    mismatch = invoke(*args)
    assert mismatch.exit_code == 1
    assert '-      "after": true\n+      "after": 1' in mismatch.stderr


def test_an_expected_file_that_cannot_be_written_is_named(files: dict[str, Path]) -> None:
    blocker = files["data"].parent / "not-a-folder"
    blocker.write_text("")
    expected = blocker / "pr.json"
    result = invoke("-m", files["mapping"], "-d", files["data"], "--expect", expected, "--update-expected")
    assert result.exit_code == 2
    assert result.stderr == f"error: {expected}: cannot write the expected result: {blocker} is not a directory\n"


async def test_config_diffs_against_the_live_port_state_and_names_a_refused_login(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """--config reads the current entities from the configured target (here Port's API, served
    by FakePort), read-only; a target it cannot read from is one line, exit 2, not a traceback."""
    async with FakePort() as port:
        port.put(STATE[0])  # PR 2, open in Port, closed in the data
        config = write_config(tmp_path / "project", target=port_target(port.url), mapping=MAPPING)
        args = ["-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-c", config, "-f", "json"]
        env = {**hook_env(), **port_env()}
        result = await asyncio.to_thread(invoke, *args, env=env)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)["summary"]
        assert (summary["create"], summary["update"]) == (2, 1)
        assert {r.method for r in port.requests} == {"POST"}  # the token and searches: nothing written
        assert port.entity("githubPullRequest", "2") == STATE[0]

        refused = await asyncio.to_thread(invoke, *args, env={**hook_env(), **port_env(client_secret="wrong")})
    assert refused.exit_code == 2
    assert refused.stderr.startswith(f"error: {config}: cannot read the current entities from the target: ")
    assert "401" in refused.stderr and refused.stderr.count("\n") == 1


def test_config_with_jq_allow_env_lets_the_mapping_read_the_environment(tmp_path: Path) -> None:
    """`--config` left out the config's `jq: {allow_env: true}`: every env-derived property came
    out null, diffed as an update serve would never make (found by probing)."""
    mapping, data = tmp_path / "m.yml", tmp_path / "d.json"
    region = "properties:\n            region: env.OH_REGION\n          blueprint:"
    mapping.write_text("resources:\n" + resource().replace("blueprint:", region))
    data.write_text('{"id": "a"}')
    config = write_config(tmp_path / "project", mapping=mapping.read_text())
    config.write_text(config.read_text() + "jq:\n  allow_env: true\n")
    LocalCatalog(tmp_path / "project" / "state" / "catalog.db").import_entities([], source="test")
    result = invoke("-m", mapping, "-d", data, "-c", config, "-f", "json", env={**hook_env(), "OH_REGION": "eu"})
    assert result.exit_code == 0, result.output
    [change] = json.loads(result.stdout)["changes"]
    assert change["after"]["properties"] == {"region": "eu"}


async def test_config_reads_an_existing_local_catalog_and_refuses_a_missing_one(files: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    """A local catalog that is not there was created empty, and everything diffed as new."""
    config = write_config(tmp_path / "project", mapping=MAPPING)
    args = ["-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-c", config, "-f", "json"]
    missing = await asyncio.to_thread(invoke, *args, env=hook_env())
    catalog = tmp_path / "project" / "state" / "catalog.db"
    assert missing.exit_code == 2
    assert missing.stderr == f"error: {config}: no local catalog at {catalog} yet: serve creates it when it starts\n"
    assert not catalog.exists()
    imported = await asyncio.to_thread(CliRunner().invoke, app, ["catalog", "import", str(files["state"]),
                                                                 "--config", str(config)])
    assert imported.exit_code == 0, imported.output
    result = await asyncio.to_thread(invoke, *args, env=hook_env())
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["update"] == 1  # PR 2, open in the catalog, closed in the data
    # the config names its mapping: --mapping is not needed (it was "Missing option '--mapping'")
    same = await asyncio.to_thread(invoke, *args[2:], env=hook_env())
    assert same.exit_code == 0, same.output
    assert same.stdout == result.stdout
    # the config's mapping is then read: its variables are needed (`${MAP}/m.yml` was read as /m.yml)
    project = config.parent
    moved = project / "maps"
    moved.mkdir()
    (project / "mapping.yml").rename(moved / "mapping.yml")
    config.write_text(config.read_text().replace("mapping: mapping.yml",
                                                 "mapping: ${OCEAN_HOOK_TEST_MAPS}/mapping.yml"))
    unset = await asyncio.to_thread(invoke, *args[2:], env={**hook_env(), "OCEAN_HOOK_TEST_MAPS": None})
    assert unset.exit_code == 2
    assert "(key mapping): environment variable OCEAN_HOOK_TEST_MAPS is not set" in unset.stderr
    given = await asyncio.to_thread(invoke, *args[2:], env={**hook_env(), "OCEAN_HOOK_TEST_MAPS": str(moved)})
    assert given.stdout == result.stdout
    alone = await asyncio.to_thread(invoke, "-d", files["data"])
    assert (alone.exit_code, alone.stderr) == (2, "error: give --mapping FILE (or --config FILE, whose mapping is "
                                                  "then used)\n")


async def test_an_operator_who_may_only_read_the_state_looks_into_it_changing_nothing(
        files: dict[str, Path], tmp_path: Path) -> None:
    """serve runs as a service user; `catalog list`, `deliveries list` and a test-mapping dry run
    by anyone else failed with "attempt to write a readonly database". Looking writes nothing."""
    config = write_config(tmp_path / "project", mapping=MAPPING)
    state = config.parent / "state"
    imported = await asyncio.to_thread(CliRunner().invoke, app, ["catalog", "import", str(files["state"]),
                                                                 "--config", str(config)])
    assert imported.exit_code == 0, imported.output
    async with await SqliteJournal.open(state / "journal.db") as journal:
        await journal.put(Delivery("gh-7", "POST", "/webhooks/github", [], b"{}", 0.0))
    expected = await asyncio.to_thread(invoke, "-d", files["data"], "-k", "pull-request", "-c", config, "-f", "json",
                                       env=hook_env())

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, [*args, "--config", str(config)], env={"COLUMNS": "300"})

    with only_readable(state):
        before = snapshot(state)
        listed = await asyncio.to_thread(cli, "catalog", "list")
        assert listed.exit_code == 0, listed.output
        assert "3 entities" in listed.stdout
        deliveries = await asyncio.to_thread(cli, "deliveries", "show", "gh-7")
        assert deliveries.exit_code == 0, deliveries.output
        assert '"delivery_id": "gh-7"' in deliveries.stdout
        dry_run = await asyncio.to_thread(invoke, "-d", files["data"], "-k", "pull-request", "-c", config, "-f",
                                          "json", env=hook_env())
        assert (dry_run.exit_code, dry_run.stdout) == (0, expected.stdout)
        assert snapshot(state) == before


async def test_config_and_state_diff_alike_against_an_imported_port_export(files: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    """A Port export imported into the local catalog kept Port's own fields: `--config` then said
    createdAt, updatedBy and $datasource would go, where `--state` of the same export said
    unchanged (found by probing)."""
    config = write_config(tmp_path / "project", mapping=MAPPING)
    export = tmp_path / "port-export.json"
    export.write_text(json.dumps([{**entity, "createdAt": "2026-01-01T00:00:00Z", "updatedBy": "someone",
                                   "$datasource": "ocean-hook/0.1.0/hook", "team": []} for entity in STATE]))
    imported = await asyncio.to_thread(CliRunner().invoke, app, ["catalog", "import", str(export),
                                                                 "--config", str(config)])
    assert imported.exit_code == 0, imported.output
    args = ["-d", files["data"], "-k", "pull-request", "-f", "json"]
    by_state = await asyncio.to_thread(invoke, "-m", files["mapping"], *args, "-s", export)
    by_config = await asyncio.to_thread(invoke, *args, "-c", config, env=hook_env())
    assert by_config.exit_code == by_state.exit_code == 0, by_config.output
    assert json.loads(by_config.stdout)["changes"] == json.loads(by_state.stdout)["changes"]


@pytest.mark.parametrize(("options", "problem"), [
    (["--update-expected"], "--update-expected needs --expect FILE, the file to write"),
    (["-q", "-f", "json"], "--quiet is for text output; --format json prints its whole document"),
    (["-q", "-f", "markdown"], "--quiet is for text output; --format markdown prints its whole document"),
])
def test_options_that_would_be_ignored_are_refused(files: dict[str, Path], options: list[str], problem: str) -> None:
    result = invoke("-m", files["mapping"], "-d", files["data"], *options)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {problem}\n", "")


def test_data_and_state_cannot_both_be_standard_input(files: dict[str, Path]) -> None:
    """The state was read from what the data left of standard input: "-: entity #0 needs a
    string 'identifier'", a puzzle (found by probing)."""
    result = invoke("-m", files["mapping"], "-d", "-", "-s", "-")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --data and --state cannot both read standard input (-): give one of them a file\n"


# ------------------------------------------------------------------------------- exit codes
def test_strict_turns_misconfigured_fields_into_exit_1(files: dict[str, Path]) -> None:
    args = ["-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-q"]
    assert invoke(*args).exit_code == 0
    assert invoke(*args, "--strict").exit_code == 1
    clean = files["data"].parent / "clean.json"
    clean.write_text(json.dumps(ITEMS[:2]))
    assert invoke("-m", files["mapping"], "-d", clean, "-k", "pull-request", "--strict").exit_code == 0


def test_strict_fails_when_an_item_is_skipped_for_an_empty_identifier(files: dict[str, Path]) -> None:
    """`identifier: .nmae // ""` skipped every item and --strict passed: `""` is no null field
    (found by probing); then --strict failed saying only "(2 skipped)": the field is named now,
    as a null one is."""
    files["mapping"].write_text(MAPPING.replace("identifier: .number | tostring", "identifier: '.numbr // \"\"'"))
    files["data"].write_text(json.dumps(ITEMS[:2]))  # no null field: nothing else for --strict to find
    args = ["-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-f", "json"]
    assert json.loads(invoke(*args).stdout)["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 0,
                                                           "filtered": 0, "skipped": 2, "misconfigured": 2,
                                                           "errors": 0}
    assert invoke(*args).exit_code == 0
    assert invoke(*args, "--strict").exit_code == 1
    text = invoke(*args[:-2], "--strict")
    assert '! pull-request: identifier is null or empty in 2 entities (jq: .numbr // ""), e.g. item 0' in text.stderr
    markdown = invoke(*args[:-1], "markdown").stdout
    assert '`identifier` is null or empty in 2 entities (jq: `.numbr // ""`), e.g. `item 0`' in markdown


def test_a_misconfiguration_example_names_an_entity_when_one_has_the_field_null(tmp_path: Path) -> None:
    """The example was `item 0`, a skipped item, where a named entity had the same null field
    (found by probing)."""
    mapping, data = tmp_path / "m.yml", tmp_path / "d.json"
    mapping.write_text("resources:\n" + resource().replace("blueprint:", "properties:\n            size: .size\n"
                                                             "          blueprint:"))
    data.write_text('[{"name": "no id"}, {"id": "r1"}, {"id": "r2"}]')
    result = invoke("-m", mapping, "-d", data)
    assert "! thing: properties.size is null in 3 entities (jq: .size), e.g. r1" in result.stderr


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_an_identifier_that_is_always_null_is_a_misconfiguration_strict_fails(files: dict[str, Path],
                                                                              fmt: str) -> None:
    """A typo in `identifier` skipped every item as Ocean does, in silence: `--strict` passed."""
    files["mapping"].write_text(MAPPING.replace("identifier: .number | tostring", "identifier: .numbr"))
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "--strict", "-f", fmt)
    assert result.exit_code == 1, result.output
    if fmt == "json":
        assert json.loads(result.stdout)["summary"]["skipped"] == 3
        assert json.loads(result.stdout)["summary"]["misconfigured"] == 3
    elif fmt == "markdown":
        assert ("- `pull-request`: `identifier` is null or empty in 3 entities (jq: `.numbr`), e.g. `item 0`"
                in result.stdout)
    else:
        assert "! pull-request: identifier is null or empty in 3 entities (jq: .numbr), e.g. item 0" in result.stderr


@pytest.mark.parametrize("identifier", ["0", "false", "{}", "[]"])
def test_a_falsy_identifier_that_is_not_a_string_is_an_error_like_any_other(files: dict[str, Path],
                                                                            identifier: str) -> None:
    files["mapping"].write_text(MAPPING.replace("identifier: .number | tostring", f"identifier: '{identifier}'"))
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request")
    assert result.exit_code == 1, result.output
    assert f"identifier must be a string or a search query, got {identifier}" in result.stderr


def test_an_identifier_port_would_refuse_exits_1_naming_the_item(files: dict[str, Path]) -> None:
    files["mapping"].write_text(MAPPING.replace("identifier: .number | tostring", "identifier: .number"))
    files["data"].write_text(json.dumps([{**ITEMS[0], "number": "1"}, ITEMS[1]]))
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request")
    assert result.exit_code == 1
    assert result.stderr == ("error: kind 'pull-request', item 1: identifier must be a string or a search query, "
                             "got 2 (add | tostring)\n")
    assert result.stdout.splitlines()[-1] == "1 to create, 0 to update, 0 to delete, 0 unchanged (1 error)"


def test_mapping_errors_exit_1_and_are_listed(files: dict[str, Path]) -> None:
    files["mapping"].write_text(MAPPING.replace(".state == 'open' or .state == 'closed'", ".number"))
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request")
    assert result.exit_code == 1
    assert "error: kind 'pull-request', item 0: selector '.number' must give a boolean, got 1" in result.stderr
    assert result.stdout.splitlines()[-1] == "0 to create, 0 to update, 0 to delete, 0 unchanged (4 errors)"
    as_json = json.loads(invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request",
                                "-f", "json").stdout)
    assert as_json["summary"]["errors"] == 4 and len(as_json["errors"]) == 4


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (("mapping", "resources:\n  - kind: a\n    port: [oops\n"), "{mapping}:4: invalid YAML: "),
        (("mapping", "resources: " + "[" * 3000 + "]" * 3000 + "\n"), "{mapping}: invalid YAML: nested too deeply"),
        (("state", '{"x": ' + "[" * 3000 + "]" * 3000 + "}"), "{state}: invalid JSON: nested too deeply"),
        (("state", "[" * 3000 + "]" * 3000), "{state}: invalid JSON: nested too deeply"),
        (("state", "[" + '{"a": ' * 3000 + "1" + "}" * 3000 + "]"),
         "{state}: entity #0 needs a string 'identifier' and 'blueprint', got {{...}}"),
        (("mapping", MAPPING.replace("status: .state", "status: .state |")),
         "{mapping}:13 (key resources[0].port.entity.mappings.properties.status): resource kind 'pull-request', "
         "field properties.status: jq does not compile: syntax error"),
        (("data", '[\n  {"number": 1},\n  {"number": 2,,}\n]\n'), "{data}:3:16: invalid JSON: "),
        (("data", '{"number": 1}\n{"number": 2}\n{"number": \n'), "{data}:3:12: invalid JSON Lines record: "),
        (("data", '{\n  "number": 1\n  "title": "x"\n}\n'), "{data}:3:3: invalid JSON: Expecting ',' delimiter"),
        (("data", ""), "{data}: file is empty"),
        (("state", '[{"identifier": "1"}]'), "{state}: entity #0 needs a string 'identifier' and 'blueprint', got "),
        (("data", '[{"number": 1, "title": "a\x01b"}]'),  # Python's message ended "... character at"
         "{data}:1:27: invalid JSON: a control character in a string (write it escaped: \\n, \\t, \\u0001)\n"),
    ],
    ids=["invalid yaml", "yaml nested too deeply", "state nested too deeply", "state arrays nested too deeply",
         "state item nested too deeply",
         "jq compile error", "invalid json array", "invalid json lines", "invalid json object",
         "empty data", "bad state", "control character"],
)
def test_input_errors_exit_2_with_one_line_naming_file_and_line(
    files: dict[str, Path], write: tuple[str, str], expected: str
) -> None:
    name, text = write
    files[name].write_text(text)
    result = invoke("-m", files["mapping"], "-d", files["data"], "-s", files["state"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: " + expected.format(**{k: str(v) for k, v in files.items()}))


def test_a_broken_file_too_large_to_read_again_whole_gets_the_lines_where_the_parser_stopped(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated 91 MB array took 800 MB to say where it broke: Python's parser read it whole
    again (found by probing). Past LOCATE_WHOLE_BYTES, the lines of the last chunk read are said."""
    from ocean_hook import datafiles

    monkeypatch.setattr(datafiles, "LOCATE_WHOLE_BYTES", 10_000)
    lines = [json.dumps({"number": n, "title": "x" * 100}) for n in range(3000)]
    files["data"].write_text("[\n" + ",\n".join(lines) + ',\n{"number": ]\n')  # the fault: line 3002
    result = invoke("-m", files["mapping"], "-d", files["data"], "-q")
    assert result.exit_code == 2
    where = re.match(rf"error: {re.escape(str(files['data']))}, lines (\d+)-(\d+): invalid JSON: ", result.stderr)
    assert where is not None, result.stderr
    first, last = int(where[1]), int(where[2])
    assert first <= 3002 <= last and last - first < 1000


def test_bytes_that_are_not_utf8_from_a_pipe_are_named_plainly(files: dict[str, Path]) -> None:
    """From standard input it was yajl's bytes: `b'lexical error: invalid bytes in UTF8
    string.\\n  [1, "\\xe9"]\\n ...'`, quoting the data (found by probing)."""
    result = CliRunner().invoke(app, ["test-mapping", "-m", str(files["mapping"]), "-d", "-"],
                                input=b'[{"number": 1, "title": "\xe9"}]')
    assert (result.exit_code, result.stderr) == (2, "error: <stdin>: not UTF-8 text\n")


@pytest.mark.parametrize("layout", ["array", "json lines"])
def test_numbers_past_64_bits_are_read_like_any_json(files: dict[str, Path], layout: str) -> None:
    """The streaming parser refuses them (yajl's 64-bit numbers); they are valid JSON all the same."""
    items = [{**item, "id": 2**64 + n if n else n, "size": 1e300 * n} for n, item in enumerate(ITEMS)]
    if layout == "array":
        files["data"].write_text(json.dumps(items))
    else:
        files["data"].write_text("".join(json.dumps(item) + "\n" for item in items))
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-f", "json")
    assert result.exit_code == 0, result.output
    mapped = [e["entity"]["identifier"] for e in json.loads(result.stdout)["entities"]]
    assert mapped == ["1", "2", "4"]  # every item read (#3 is a draft), the first one only once


@pytest.mark.parametrize("layout", ["object", "array", "json lines"])
def test_a_number_too_long_to_convert_is_an_input_error(files: dict[str, Path], layout: str) -> None:
    huge = "9" * 5000
    text = {"object": f'{{"number": {huge}}}', "array": f'[{{"number": 1}}, {{"number": {huge}}}]',
            "json lines": f'{{"number": 1}}\n{{"number": {huge}}}\n'}[layout]
    files["data"].write_text(text)
    result = invoke("-m", files["mapping"], "-d", files["data"])
    assert result.exit_code == 2
    data = files["data"]
    where = f"{data}:2: invalid JSON Lines record" if layout == "json lines" else f"{data}: invalid JSON"
    assert result.stderr == f"error: {where}: a number has more than 4300 digits\n"


NOT_JSON = {  # (one item as written, the error it must give in every layout)
    "NaN": ('{"number": NaN}', "invalid JSON: NaN is not a JSON number"),
    "Infinity": ('{"number": -Infinity}', "invalid JSON: -Infinity is not a JSON number"),
    "lone first half": ('{"number": 1, "title": "a\\ud83db"}', "a \\u escape is half of a surrogate pair"),
    "lone second half": ('{"number": 1, "title": "a\\ude00"}', "a \\u escape is half of a surrogate pair"),
    "escaped backslash, then a lone half": ('{"number": 1, "title": "\\\\\\ud800"}', "half of a surrogate pair"),
    "nested too deeply": ('{"number": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}", "invalid JSON: nested too deeply"),
    "nested too deeply, spaced": ('{"x": ' + "[ " * 1000 + "]" * 1000 + "}", "invalid JSON: nested too deeply"),
}


@pytest.mark.parametrize("layout", ["object", "array", "json lines"])
@pytest.mark.parametrize("case", NOT_JSON)
def test_what_json_does_not_allow_is_the_same_input_error_in_every_layout(
    files: dict[str, Path], layout: str, case: str
) -> None:
    """Python's parser (objects, JSON Lines) took NaN and read Infinity as 1.8e308; yajl (arrays)
    refused NaN without saying where, read a lone surrogate escape as "?", and took memory growing
    with the square of the nesting depth (`[` * 100,000: 24 GB). All now refuse all."""
    item, message = NOT_JSON[case]
    text = {"object": item, "array": f'[{{"number": 2}}, {item}]', "json lines": f'{{"number": 2}}\n{item}\n'}
    files["data"].write_text(text[layout])
    result = invoke("-m", files["mapping"], "-d", files["data"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message.replace("invalid JSON: ", "") in result.stderr, result.stderr
    data = files["data"]
    where = f"{data}:2: invalid JSON Lines record" if layout == "json lines" else f"{data}: invalid JSON"
    assert result.stderr.startswith(f"error: {where}")


@pytest.mark.parametrize("offset", range(-8, 8))
def test_a_surrogate_pair_across_the_streaming_parsers_reads_is_one_character(files: dict[str, Path],
                                                                              offset: int) -> None:
    head = '[{"number": 1, "state": "open", "title": "'
    files["data"].write_text(head + "a" * (65536 - len(head) + offset) + '\\ud83d\\ude00"}]')
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entities"][0]["entity"]["title"].endswith("a\U0001f600")


@pytest.mark.parametrize("after", [0, 5, *range(9, 17), 20, 30])
def test_a_surrogate_pair_near_the_end_of_a_small_file_is_one_character_and_a_lone_half_is_refused(
    files: dict[str, Path], after: int
) -> None:
    """`[{"title": "\\ud83c\\udf89 abcdefghijkl"}]`, 50 bytes as Python's json.dump writes an
    emoji, was refused as a lone half (found by probing)."""
    head = '[{"number": 1, "state": "open", "title": "'
    files["data"].write_text(head + "\\ud83c\\udf89" + "b" * after + '"}]')
    result = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entities"][0]["entity"]["title"] == "\U0001f389" + "b" * after
    for lone in ("\\udf89", "\\ud83c"):
        files["data"].write_text(head + "a" * 12 + lone + "b" * after + '"}]')
        refused = invoke("-m", files["mapping"], "-d", files["data"], "-k", "pull-request")
        assert (refused.exit_code, "half of a surrogate pair" in refused.stderr) == (2, True), refused.output


def test_bytes_that_are_not_utf8_in_an_array_are_named_plainly(files: dict[str, Path]) -> None:
    files["data"].write_bytes(b'[{"number": 1, "title": "\xff"}]')
    result = invoke("-m", files["mapping"], "-d", files["data"])
    assert (result.exit_code, result.stderr) == (2, f"error: {files['data']}: not UTF-8 text\n")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_data_file_in_utf16_or_32_is_named_as_such(files: dict[str, Path], encoding: str) -> None:
    """JSON Lines in UTF-16 got "invalid JSON: Extra data" at line 2 (found by probing)."""
    files["data"].write_bytes('{"number": 1}\n{"number": 2}\n'.encode(encoding))
    result = invoke("-m", files["mapping"], "-d", files["data"])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {files['data']}: not UTF-8 text (it looks like UTF-16 or UTF-32): save it as UTF-8\n")


@pytest.mark.parametrize("missing", ["mapping", "data", "state", "kind"])
def test_missing_files_and_unknown_kinds_exit_2(files: dict[str, Path], missing: str) -> None:
    paths = {k: str(v) for k, v in files.items()}
    kind = "pull-request"
    if missing == "kind":
        kind = "nope"
    else:
        paths[missing] += ".gone"
    result = invoke("-m", paths["mapping"], "-d", paths["data"], "-s", paths["state"], "-k", kind)
    assert result.exit_code == 2
    assert result.stdout == ""
    if missing == "kind":
        assert result.stderr == (f"error: {paths['mapping']}: no resource of kind 'nope' "
                                 "(kinds: pull-request, repository)\n")
    else:
        assert result.stderr == f"error: {paths[missing]}: file not found\n"


def test_an_error_naming_a_file_spells_out_control_characters_in_its_name(files: dict[str, Path]) -> None:
    data = files["data"].with_name("x\x1b[2Jy.json")
    result = invoke("-m", files["mapping"], "-d", data)
    assert result.exit_code == 2
    assert result.stderr == f"error: {files['data'].parent}/x\\x1b[2Jy.json: file not found\n"


def test_usage_errors_exit_2(files: dict[str, Path]) -> None:
    result = invoke("-m", files["mapping"], "-d", files["data"], "--format", "yaml")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.stderr
    assert invoke("-m", files["mapping"]).exit_code == 2


# ------------------------------------------------------------------------------- the console script
def console_script() -> str:
    script = Path(sys.executable).with_name("ocean-hook")
    found = str(script) if script.exists() else shutil.which("ocean-hook")
    assert found, "the ocean-hook console script is installed with the package"
    return found


def test_the_installed_console_script_runs_test_mapping(files: dict[str, Path]) -> None:
    done = subprocess.run(
        [console_script(), "test-mapping", "--mapping", str(files["mapping"]), "--data", str(files["jsonl"]),
         "--state", str(files["state"]), "--kind", "pull-request"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "1 to create, 1 to update, 1 to delete, 1 unchanged (1 filtered, 1 misconfigured)"
    )
    assert "\x1b[" not in done.stdout
    bad = subprocess.run(
        [console_script(), "test-mapping", "--mapping", str(files["mapping"]), "--data", "/nonexistent/x.json"],
        capture_output=True, text=True, timeout=60,
    )
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "error: /nonexistent/x.json: file not found\n"


@pytest.mark.parametrize("data", ["-", "/dev/stdin"])
@pytest.mark.parametrize("layout", ["array", "json lines", "pretty object"])
def test_data_from_a_pipe_is_read_once_front_to_back(files: dict[str, Path], data: str, layout: str) -> None:
    """`curl ... | ocean-hook test-mapping -d -`: a pipe cannot be read twice (the reader used to
    seek back to the start, and /dev/stdin ended in a traceback)."""
    text = {"array": json.dumps(ITEMS), "json lines": "".join(json.dumps(i) + "\n" for i in ITEMS),
            "pretty object": "\n\n" + json.dumps(ITEMS[0], indent=2)}[layout]
    done = subprocess.run(
        [console_script(), "test-mapping", "--mapping", str(files["mapping"]), "--data", data, "--kind",
         "pull-request", "--format", "json"],
        input=text, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    mapped = [e["entity"]["identifier"] for e in json.loads(done.stdout)["entities"]]
    assert mapped == (["1"] if layout == "pretty object" else ["1", "2", "4"])


def test_broken_data_from_a_pipe_is_named_stdin(files: dict[str, Path]) -> None:
    done = subprocess.run([console_script(), "test-mapping", "--mapping", str(files["mapping"]), "--data", "-"],
                          input='{\n  "number": 1,,\n}', capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, "error: <stdin>:2:15: invalid JSON: Expecting property name "
                                                  "enclosed in double quotes\n")


# ------------------------------------------------------------------------------- across batches
def test_a_later_version_of_an_entity_is_diffed_against_what_this_run_already_changed(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yml"
    mapping.write_text(MAPPING)
    data = tmp_path / "many.jsonl"
    first = [{"number": n, "title": f"t{n}", "state": "open", "user": {"login": "a"}, "repo": "r"} for n in range(1100)]
    later = [{**item, "state": "closed"} for item in first[:100]]  # in the second batch of 1,000
    data.write_text("".join(json.dumps(item) + "\n" for item in [*first, *later]))
    result = invoke("-m", mapping, "-d", data, "-k", "pull-request", "-f", "json")
    document = json.loads(result.stdout)
    assert document["summary"]["create"] == 1100 and document["summary"]["update"] == 100
    updates = [c for c in document["changes"] if c["action"] == "update"]
    assert updates[0]["identifier"] == "0"
    assert updates[0]["fields"] == [{"path": "properties.status", "before": "open", "after": "closed"}]


def test_the_overlay_keeps_few_entities_in_memory_and_the_rest_on_disk() -> None:
    from ocean_hook.overlay import Overlay

    overlay = Overlay(memory=3)
    for n in range(20):
        overlay.set(("pr", str(n)), {"identifier": str(n), "n": n})
    overlay.set(("pr", "4"), None)
    assert len(overlay._recent) <= 6
    assert overlay.get(("pr", "0")) == (True, {"identifier": "0", "n": 0})
    assert overlay.get(("pr", "19")) == (True, {"identifier": "19", "n": 19})
    assert overlay.get(("pr", "4")) == (True, None)
    assert overlay.get(("pr", "99")) == (False, None)
    overlay.set(("pr", "0"), {"identifier": "0", "n": 100})
    for n in range(20, 30):
        overlay.set(("pr", str(n)), None)
    assert overlay.get(("pr", "0")) == (True, {"identifier": "0", "n": 100})
    overlay.close()




def test_an_entity_one_resource_maps_is_not_deleted_by_another(tmp_path: Path) -> None:
    """It was `~ update` by the resource whose selector passed, then `- delete` by the other."""
    mapping, data, state = tmp_path / "two.yml", tmp_path / "d.json", tmp_path / "s.json"
    mapping.write_text(TWO_RESOURCES)
    data.write_text('[{"id": "e1", "type": "a"}]')
    state.write_text('[{"identifier": "e1", "blueprint": "thing", "title": "from b"}]')
    result = invoke("-m", mapping, "-d", data, "-s", state, "-f", "json")
    assert result.exit_code == 0, result.output
    assert [(c["action"], c["identifier"]) for c in json.loads(result.stdout)["changes"]] == [("update", "e1")]


def test_an_item_that_leaves_the_selector_after_passing_it_is_deleted_in_any_batch(tmp_path: Path) -> None:
    """The delete was lost when the earlier, passing version was in the same batch of items (and
    kept when 1,000 items apart): the resource's own upsert counted as "another resource maps it"."""
    mapping, data, state = tmp_path / "m.yml", tmp_path / "d.jsonl", tmp_path / "s.json"
    mapping.write_text("resources:\n" + resource(".active"))
    state.write_text('[{"identifier": "a", "blueprint": "thing"}]')
    passing, leaving = '{"id": "a", "active": true, "n": 1}\n', '{"id": "a", "active": false}\n'
    for filler in (0, 1500):
        data.write_text(passing + '{"id": "x", "active": false}\n' * filler + leaving)
        result = invoke("-m", mapping, "-d", data, "-s", state, "-f", "json")
        assert result.exit_code == 0, result.output
        changes = [(c["action"], c["identifier"]) for c in json.loads(result.stdout)["changes"]]
        assert (filler, changes[-1]) == (filler, ("delete", "a"))


def test_an_item_that_left_the_selector_is_deleted_whatever_its_title(tmp_path: Path) -> None:
    """A title that is not a string (a mapping error for an entity to write) dropped the delete
    without a word; a delete needs only the blueprint and identifier."""
    mapping, data, state = tmp_path / "m.yml", tmp_path / "d.json", tmp_path / "s.json"
    mapping.write_text("resources:\n" + resource(".active").replace("blueprint:", "title: .name\n          blueprint:"))
    state.write_text('[{"identifier": "b", "blueprint": "thing", "title": "B"}]')
    data.write_text('{"id": "b", "name": 5, "active": false}')
    result = invoke("-m", mapping, "-d", data, "-s", state, "-f", "json")
    assert result.exit_code == 0, result.output
    assert [(c["action"], c["identifier"]) for c in json.loads(result.stdout)["changes"]] == [("delete", "b")]
    data.write_text('{"id": "b", "name": 5, "active": true}')  # to write, the title is an error still
    assert "'title' must be a string, got 5" in invoke("-m", mapping, "-d", data, "-s", state).stderr


def test_a_number_past_a_doubles_range_is_read_as_jq_reads_it_and_never_written_as_infinity(tmp_path: Path) -> None:
    """1e400 in a state file came out as `Infinity` in --format json, which no JSON parser takes
    (and an expected file written from it could never be read back)."""
    mapping, data, state = tmp_path / "m.yml", tmp_path / "d.json", tmp_path / "s.json"
    mapping.write_text("resources:\n" + resource().replace("blueprint:", "properties:\n            n: .n\n"
                                                             "          blueprint:"))
    data.write_text('[{"id": "a", "n": 1e400}, {"id": "b", "n": -1e400}]')  # the streamed array path
    state.write_text('[{"identifier": "a", "blueprint": "thing", "properties": {"n": 1e400}}]')
    result = invoke("-m", mapping, "-d", data, "-s", state, "-f", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the output"))
    assert [(c["action"], c["after"]["properties"]["n"]) for c in document["changes"]] == [
        ("unchanged", 1.7976931348623157e308), ("create", -1.7976931348623157e308)]


def test_a_state_exported_from_ports_api_diffs_as_the_port_target_reads_it(files: dict[str, Path]) -> None:
    """Port's own bookkeeping (createdAt, $datasource, ...) and its empty defaults (team [], icon
    null) were diffed as changes: every entity of a real export came out as an update."""
    exported = [{**entity, "team": [], "icon": None, "createdAt": "2026-01-01T00:00:00.000Z", "createdBy": "x",
                 "updatedAt": "2026-01-02T00:00:00.000Z", "updatedBy": "y", "$datasource": "ocean-hook/0.1.0/hook"}
                for entity in STATE]
    args = ("-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "-f", "json")
    plain = json.loads(invoke(*args, "-s", files["state"]).stdout)["changes"]  # the fixture's STATE
    files["state"].write_text(json.dumps(exported))
    assert json.loads(invoke(*args, "-s", files["state"]).stdout)["changes"] == plain


def test_a_mismatch_in_a_big_result_shows_the_first_differing_items_only(files: dict[str, Path]) -> None:
    """A whole-document diff of 10,000 items took four minutes; 25 shifted items show 20."""
    items = [{"number": n, "title": f"PR {n}", "state": "open", "repo": "api"} for n in range(1, 3001)]
    files["data"].write_text(json.dumps(items))
    expected = files["data"].parent / "big-expected.json"
    args = ["-m", files["mapping"], "-d", files["data"], "-k", "pull-request", "--expect", expected]
    assert invoke(*args, "--update-expected").exit_code == 0
    files["data"].write_text(json.dumps([{**item, "title": "changed"} if item["number"] <= 25 else item
                                         for item in items]))
    started = time.monotonic()
    mismatch = invoke(*args)
    assert mismatch.exit_code == 1 and time.monotonic() - started < 30
    headers = [line for line in mismatch.stderr.splitlines() if line.startswith("+++ actual ")]
    assert headers[:2] == ["+++ actual entities[0]", "+++ actual entities[1]"] and len(headers) == 20
    assert "... and more: the first 20 differing items are shown" in mismatch.stderr


def test_a_search_query_identifier_is_shown_as_json_in_a_misconfiguration_example() -> None:
    """It was a Python repr: {'combinator': 'and', ...} (found by probing)."""
    from ocean_hook.mapping.engine import MappedEntity
    from ocean_hook.mapping.misconfigured import Misconfigurations

    query = {"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": "a"}]}
    found = Misconfigurations()
    found.add([MappedEntity("svc", {"identifier": query, "blueprint": "svc"}, True, {"properties.x": ".x"}, 3)])
    [(_, _, _, count, example)] = found.rows()
    assert count == 1 and json.loads(example) == query


# ------------------------------------------------------------------------------- near misses, references
@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_a_key_that_nearly_is_ports_is_a_warning_on_stderr_and_strict_fails_on_it(files: dict[str, Path],
                                                                                   fmt: str) -> None:
    """`deleteDependentEntites: false` and `selectr:` were taken in silence (found by probing): a
    warning on stderr, as `check` says it, the document on stdout as it was; --strict fails on it as
    on a misconfigured field."""
    mapping = files["mapping"]
    mapping.write_text("deleteDependentEntites: false\n" + MAPPING.replace("  - kind: repository\n",
                                                                          "  - kind: repository\n    selectr: {}\n"))
    clean = files["data"].parent / "clean.json"
    clean.write_text(json.dumps(ITEMS[:2]))
    args = ["-m", mapping, "-d", clean, "-k", "pull-request", "-f", fmt]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning")] == [
        f"warning: {mapping}:1 (key deleteDependentEntites): unknown key; did you mean 'deleteDependentEntities'?",
        f"warning: {mapping}:19 (key resources[1].selectr): unknown key; did you mean 'selector'?",
    ]
    if fmt == "json":
        assert json.loads(result.stdout)["summary"]["create"] == 2
    assert invoke(*args, "--strict").exit_code == 1
    mapping.write_text(MAPPING)
    assert invoke(*args, "--strict").exit_code == 0


def test_quiet_leaves_the_warnings_out_unless_strict_fails_on_them(files: dict[str, Path]) -> None:
    files["mapping"].write_text(MAPPING.replace("selector:", "selectr:"))
    args = ["-m", files["mapping"], "-d", files["data"], "-k", "repository", "-q"]
    assert invoke(*args).stderr == ""
    strict = invoke(*args, "--strict")
    assert strict.exit_code == 1
    assert strict.stderr == (f"warning: {files['mapping']}:3 (key resources[0].selectr): unknown key; did you mean "
                             "'selector'?\n")


@pytest.mark.parametrize("place", ["port.itemsToParse", "selector.query"])
def test_an_integration_reference_where_jq_is_needed_is_a_mapping_error_not_a_traceback(
    files: dict[str, Path], place: str,
) -> None:
    """`itemsToParse: file://items.json` crashed with a JqCompileError traceback; `selector.query:
    file://...` made every item an error (found by probing)."""
    mapping = files["mapping"]
    if place == "selector.query":
        mapping.write_text(MAPPING.replace("query: .state == 'open' or .state == 'closed'", "query: file://sel.jq"))
    else:
        mapping.write_text(MAPPING.replace("    port:\n", "    port:\n      itemsToParse: file://items.json\n", 1))
    result = invoke("-m", mapping, "-d", files["data"])
    assert result.exit_code == 2
    line = 4 if place == "selector.query" else 7
    where = "selector.query" if place == "selector.query" else "port.itemsToParse"
    ref = "file://sel.jq" if place == "selector.query" else "file://items.json"
    assert result.stderr == (
        f"error: {mapping}:{line} (key resources[0].{where}): resource kind 'pull-request', field {where}: '{ref}' is "
        "a reference that only Ocean's git integrations resolve (file://, search://), not jq: ocean-hook cannot "
        "read it, and this field needs a jq expression\n")
