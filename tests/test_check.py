"""`ocean-hook check`: every problem of a config and its mapping in one run, nothing started."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocean_hook.check import check
from ocean_hook.cli import app
from ocean_hook.config import load_config
from ocean_hook.errors import ConfigError
from ocean_hook.mapping.engine import Mapping, MappingCompileError
from ocean_hook.mapping.problems import collect_problems, mapping_warnings
from ocean_hook.targets.local import LocalCatalog

GOOD_MAPPING = """\
resources:
  - kind: pull-request
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .number | tostring
          blueprint: '"pr"'
"""

#: three bad expressions in two resources, a resource without mappings, a bad root flag
BAD_MAPPING = """\
enableMergeEntity: maybe
resources:
  - kind: pull-request
    selector:
      query: .draft ==
    port:
      entity:
        mappings:
          identifier: .number | tostring
          blueprint: '"pr"'
          properties:
            title: .title |||
  - kind: issue
    port: {}
  - kind: release
    port:
      itemsToParse: .assets[
      entity:
        mappings:
          identifier: .id
          blueprint: '"release"'
"""

CONFIG = """\
mapping: m.yml
processors:
  - name: gh-pr
    preset: github
    events: [pull_request]
    kinds: [pull-request]
    auth: {secret: '${GH_SECRET}'}
    items: .pull_request
"""


def write(tmp_path: Path, config: str = CONFIG, mapping: str = GOOD_MAPPING) -> Path:
    (tmp_path / "m.yml").write_text(mapping)
    path = tmp_path / "ocean-hook.yaml"
    path.write_text(textwrap.dedent(config))
    return path


def run_check(path: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["check", "--config", str(path), *args], env=env or {})


def test_clean_config_exits_0_with_counts(tmp_path: Path) -> None:
    path = write(tmp_path)
    result = run_check(path, env={"GH_SECRET": "s"})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == ["ok: 1 processor, 1 kind"]
    assert not (tmp_path / ".ocean-hook").exists()  # nothing started, no state created


def test_every_problem_of_config_and_mapping_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG.replace("items: .pull_request", "items: .pull_request |||") + """\
  - name: gh-issue
    preset: github
    events: [issues]
    kinds: [issues]
    auth: {secret: '${GH_SECRET}'}
""", BAD_MAPPING)
    result = run_check(path, env={})
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert summary == f"{len(problems)} problems"
    text = "\n".join(problems)
    config, mapping = str(path), str(tmp_path / "m.yml")
    # config: a missing variable (file:line and key), a processor jq error
    assert f"{config}:7 (key processors[0].auth.secret): environment variable GH_SECRET is not set" in text
    assert f"{config}:8 (key processors[0].items): jq does not compile" in text
    # mapping: each bad expression with its resource kind and field path, the schema errors
    assert f"{mapping}:5 (key resources[0].selector.query): resource kind 'pull-request', field selector.query" in text
    assert "resource kind 'pull-request', field properties.title: jq does not compile" in text
    assert "resource kind 'release', field port.itemsToParse: jq does not compile" in text
    assert f"{mapping}:14 (key resources[1].port.entity): needs 'mappings'" in text
    assert f"{mapping}:1 (key enableMergeEntity): must be true or false" in text
    # a processor feeding a kind the mapping lacks (checked although the secret is missing)
    assert (f"{config}:12 (key processors[1].kinds): processor 'gh-issue' feeds kind 'issues', which the "
            "mapping m.yml does not have (kinds: pull-request, issue, release)") in text
    assert all(line.startswith("error: ") for line in problems)


def test_collect_problems_finds_more_than_the_loader(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yml"
    mapping.write_text(BAD_MAPPING)
    problems = collect_problems(mapping)
    assert len(problems) == 5
    with pytest.raises(ConfigError) as first:
        Mapping.load(mapping)
    assert str(first.value) in problems  # the loader stops at one of them
    # jq errors alone: the first is the engine's own message, word for word
    mapping.write_text(BAD_MAPPING.replace("enableMergeEntity: maybe\n", "").replace("    port: {}\n", """\
    port:
      entity:
        mappings: {identifier: .id, blueprint: '"issue"'}
"""))
    problems = collect_problems(mapping)
    assert len(problems) == 3
    with pytest.raises(MappingCompileError) as first:
        Mapping.load(mapping)
    assert str(first.value) == problems[0]
    mapping.write_text(GOOD_MAPPING)
    assert collect_problems(mapping) == []


def test_missing_secret_and_no_env_for_ci(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert run_check(path).exit_code == 1
    result = run_check(path, "--no-env", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {"config": str(path), "ok": True, "problems": [], "warnings": [], "processors": 1,
                   "kinds": ["pull-request"]}


def test_auth_none_is_a_warning_not_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG.replace("auth: {secret: '${GH_SECRET}'}", "auth: {scheme: none}"))
    for require_env in (True, False):
        report = check(path, env={}, require_env=require_env)
        assert report.ok, report.problems
        assert report.warnings == [
            f"{path}:7 (key processors[0].auth): processor 'gh-pr' accepts unauthenticated deliveries (auth: none)"
        ]


def test_yaml_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG.replace("name: gh-pr", "name: gh-pr: x"))
    result = run_check(path, "--format", "json", env={"GH_SECRET": "s"})
    assert result.exit_code == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert problem == f"{path}:3: invalid YAML: mapping values are not allowed here"


def test_a_mapping_that_is_not_yaml_is_one_problem_not_two(tmp_path: Path) -> None:
    """Its kinds are unknown, not none: "feeds kind 'pull-request', which the mapping does not
    have (kinds: none)" came on top of the YAML error (found by probing)."""
    path = write(tmp_path, mapping=GOOD_MAPPING + "          identifier: .id\n")  # a duplicate key
    result = run_check(path, "--format", "json", env={"GH_SECRET": "s"})
    assert result.exit_code == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert "duplicate key 'identifier'" in problem


def test_missing_config_file_is_a_problem(tmp_path: Path) -> None:
    result = run_check(tmp_path / "nope.yaml")
    assert result.exit_code == 1
    assert "nope.yaml: file not found" in result.stdout
    assert "Traceback" not in result.output


def test_a_target_problem_is_reported_beside_the_configs_other_problems(tmp_path: Path) -> None:
    """Any other problem in the config hid the target's: `check` listed one problem, then the
    next run another (found by probing)."""
    path = write(tmp_path, CONFIG + "server: {workers: -1}\ntarget: {type: locall}\n")
    problems = check(path, env={"GH_SECRET": "s"}).problems
    assert f"{path}:10 (key target): target.type must be local, port or dry-run, got 'locall'" in problems
    assert any("server.workers" in p for p in problems) and len(problems) == 2


def test_target_settings_and_port_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG + "target: {type: port, region: mars}\n")
    report = check(path, env={"GH_SECRET": "s"})
    assert report.problems == [f"{path}:9 (key target): target.region must be 'eu' or 'us', got 'mars'"]
    path = write(tmp_path, CONFIG + "target: {type: port}\n")
    [problem] = check(path, env={"GH_SECRET": "s"}).problems
    assert problem.endswith("environment variables PORT_CLIENT_ID (the Port client id) and PORT_CLIENT_SECRET (the "
                            "Port client secret) are not set")  # both: only the first was said (found by probing)
    assert check(path, env={"GH_SECRET": "s", "PORT_CLIENT_ID": "i", "PORT_CLIENT_SECRET": "x"}).ok
    assert check(path, env={}, require_env=False).ok
    # a local catalog path is checked without creating the file
    path = write(tmp_path, CONFIG + "target: {type: local, path: db/catalog.db}\n")
    assert check(path, env={"GH_SECRET": "s"}).ok
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("queue: {type: sqlite, pth: x.db}", "(key queue): unknown key(s) 'pth' (allowed: path, type)"),
        ("queue: {type: sqlite, path: 5}", "(key queue.path): must be the journal's file path, got 5"),
        ("queue: {type: redis}", "(key queue): queue type redis needs 'url' (redis://host:6379/0), got None"),
        ("queue: {type: redis, url: 'redis://h', stream: 5}", "(key queue.stream): must be a stream name, got 5"),
        ("queue: {type: kafka}", "(key queue): queue.type must be sqlite or redis, got 'kafka'"),
        ("target: {type: local, path: 5}", "(key target): target.path must be a non-empty string, got 5"),
    ],
)
def test_a_queue_or_catalog_serve_would_refuse_is_a_problem(tmp_path: Path, block: str, problem: str) -> None:
    """They used to pass `check` ('ok') and fail `serve` at start, or be ignored (a misspelt key).
    Each has its line (a target's had none: found by probing), for `serve` as for `check`."""
    path = write(tmp_path, CONFIG + block + "\n")
    assert check(path, env={"GH_SECRET": "s"}).problems == [f"{path}:9 {problem}"]
    assert not (tmp_path / ".ocean-hook").exists()


def test_journal_and_catalog_files_serve_could_not_open_are_problems(tmp_path: Path) -> None:
    """`check` said ok and `serve` refused to start (found by probing); nothing is created."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "junk.db").write_text("not a database")
    cases = {
        "state_dir: afile/sub": [f"{tmp_path}/afile/sub/journal.db: cannot be created: {tmp_path}/afile is not a "
                                 "directory", f"{tmp_path}/afile/sub/catalog.db: cannot be created: {tmp_path}/afile "
                                 "is not a directory"],
        "target: {type: local, path: adir}": [f"{tmp_path}/adir: is a directory, where a database file goes"],
        "queue: {type: sqlite, path: junk.db}": [f"{tmp_path}/junk.db: is not an SQLite database"],
    }
    for block, problems in cases.items():
        path = write(tmp_path, CONFIG + block + "\n")
        assert check(path, env={"GH_SECRET": "s"}).problems == [f"{path}: {p}" for p in problems]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "junk.db", "m.yml", "ocean-hook.yaml"]
    assert check(write(tmp_path, CONFIG), env={"GH_SECRET": "s"}).ok  # a state_dir still to be made is fine


def test_a_journal_and_a_catalog_that_are_one_file_or_each_others_are_problems(tmp_path: Path) -> None:
    """`check` said ok; `serve` refused the journal, having made the file a catalog already
    (found by probing)."""
    catalog = LocalCatalog(tmp_path / "state" / "catalog.db")
    catalog.import_entities([], source="test")
    asyncio.run(catalog.close())
    cases = {
        "queue: {type: sqlite, path: one.db}\ntarget: {type: local, path: one.db}": [
            f"the journal (queue.path) and the local catalog (target.path) are one file, {tmp_path}/one.db: each "
            "needs its own"],
        "queue: {type: sqlite, path: state/catalog.db}": [
            f"{tmp_path}/state/catalog.db: it holds the tables of something else (entities), not a journal"],
    }
    for block, problems in cases.items():
        path = write(tmp_path, CONFIG + block + "\n")
        assert check(path, env={"GH_SECRET": "s"}).problems == [f"{path}: {p}" for p in problems]
    assert not (tmp_path / "one.db").exists()


def test_mapping_kind_without_processor_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, mapping=GOOD_MAPPING + GOOD_MAPPING.split("resources:\n")[1].replace("pull-request", "x"))
    result = run_check(path, env={"GH_SECRET": "s"})
    assert result.exit_code == 0
    assert "kind 'x' has no processor feeding it" in result.stderr
    assert run_check(path, "--quiet", env={"GH_SECRET": "s"}).output == ""


def test_a_problem_quoting_the_mapping_stays_one_line_without_control_characters(tmp_path: Path) -> None:
    # a multi-line jq expression, and an ESC sequence written into the mapping file
    bad = "\n          properties:\n            x: \".b\\n| foo(\\n)\\u001b[2J\""
    mapping = GOOD_MAPPING.replace("blueprint: '\"pr\"'", "blueprint: '\"pr\"'" + bad)
    result = run_check(write(tmp_path, mapping=mapping), "--no-env")
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(problems) == 1 and "\\x0a| foo(\\x0a)\\x1b[2J" in problems[0], result.output
    assert "\x1b" not in result.output


def test_no_env_does_not_judge_a_state_dir_or_fetch_host_made_of_unset_variables(tmp_path: Path) -> None:
    """`state_dir: ${STATE}` failed `check --no-env` as "must be a directory path, got ''", and a
    fetch host from a variable as "'' is not a host" (found by probing)."""
    config = CONFIG.replace("mapping: m.yml", "mapping: m.yml\nstate_dir: ${STATE}") + (
        "    fetch: {url: .url, allowed_hosts: ['${API_HOST}']}\n")
    path = write(tmp_path, config=config)
    result = run_check(path, "--no-env")
    assert result.exit_code == 0, result.output
    env = {"GH_SECRET": "s", "STATE": str(tmp_path / "state"), "API_HOST": "api.example.com"}
    assert run_check(path, env=env).exit_code == 0
    result = run_check(path, env={**env, "API_HOST": ""})  # set, but to nothing: that is a problem
    assert result.exit_code == 1 and "allowed_hosts entry '' is not a host or host:port" in result.stdout
    # one host written alone, not in a list, is read the same way (it was still judged as '')
    alone = write(tmp_path, config=config.replace("['${API_HOST}']", "'${API_HOST}'"))
    assert run_check(alone, "--no-env").exit_code == 0
    assert [line for line in run_check(alone, env={"GH_SECRET": "s", "STATE": "s"}).stdout.splitlines()
            if line.startswith("error")] == [
        f"error: {alone}:10 (key processors[0].fetch.allowed_hosts): environment variable API_HOST is not set"]


def test_no_env_does_not_invent_a_mapping_path_from_an_unset_variable(tmp_path: Path) -> None:
    """`mapping: ${MAPDIR}/m.yml` was read as /m.yml under --no-env, and failed CI as not found."""
    path = write(tmp_path, config=CONFIG.replace("mapping: m.yml", "mapping: ${MAPDIR}/m.yml"))
    result = run_check(path, "--no-env")
    assert result.exit_code == 0, result.output
    assert "warning: the mapping path uses $MAPDIR, not set here: the mapping is not checked" in result.stderr
    result = run_check(path, env={"GH_SECRET": "s"})
    assert result.exit_code == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("error")] == [
        f"error: {path}:1 (key mapping): environment variable MAPDIR is not set"]
    assert run_check(path, env={"GH_SECRET": "s", "MAPDIR": str(tmp_path)}).exit_code == 0


def test_text_that_looks_like_an_emoji_code_is_printed_as_written(tmp_path: Path) -> None:
    """`class: hooks:Star` was printed `cannot import hooks⭐` by rich's emoji codes."""
    path = write(tmp_path, config=CONFIG.replace("    preset: github\n", "    preset: github\n    class: hooks:Star\n"))
    result = run_check(path, "--no-env")
    assert "hooks:Star" in result.output and "\N{WHITE MEDIUM STAR}" not in result.output, result.output


def test_no_env_needs_no_secret_file_and_no_mapping_variable(tmp_path: Path) -> None:
    """`--no-env` still read secret files, and `mapping: ${VAR}` was 'needs the path of a mapping'."""
    config = CONFIG.replace("mapping: m.yml", "mapping: ${MAPPING_FILE}").replace(
        "auth: {secret: '${GH_SECRET}'}", "auth: {secret_file: secrets/gh.txt}")
    path = write(tmp_path, config=config)
    result = run_check(path, "--no-env")
    assert result.exit_code == 0, result.output
    assert "warning: the mapping path uses $MAPPING_FILE, not set here: the mapping is not checked" in result.stderr
    result = run_check(path)
    assert result.exit_code == 1
    assert [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("error")] == [
        f"{path}:1 (key mapping): environment variable MAPPING_FILE is not set",
        f"{path}:7 (key processors[0].auth.secret_file): cannot read secret file {tmp_path / 'secrets/gh.txt'}: "
        "No such file or directory"]


def test_a_queue_url_made_of_an_unset_variable_is_that_variable_alone(tmp_path: Path) -> None:
    """An unset `${REDIS_URL}` was said twice: the variable, then "needs 'url' ..., got ''"."""
    path = write(tmp_path, config=CONFIG + "queue: {type: redis, url: '${REDIS_URL}'}\n")
    result = run_check(path, env={"GH_SECRET": "s"})
    assert result.exit_code == 1
    assert [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("error")] == [
        f"{path}:{CONFIG.count(chr(10)) + 1} (key queue.url): environment variable REDIS_URL is not set"]
    assert run_check(path, "--no-env").exit_code == 0


@pytest.mark.parametrize(("url", "warned"), [
    ("redis://:hunter2@127.0.0.1:6379/0", True), ("redis://user:hunter2@h/0", True),
    ("'redis://h:6379/0?password=hunter2'", True), ("redis://h:6379/0", False), ("'${REDIS_URL}'", False),
    ("redis://user@h:6379/0", False),
])
def test_a_redis_password_written_in_the_config_is_a_warning(tmp_path: Path, url: str, warned: bool) -> None:
    """Secrets never go in the config text; a Redis password in `queue.url` was taken silently."""
    path = write(tmp_path, config=CONFIG + f"queue: {{type: redis, url: {url}}}\n")
    result = run_check(path, env={"GH_SECRET": "s", "REDIS_URL": "redis://h/0"})
    assert result.exit_code == 0, result.output
    line = (f"warning: {path}:{CONFIG.count(chr(10)) + 1} (key queue.url): the Redis password is written in the "
            "config, where secrets never go: put the URL in an environment variable (url: ${REDIS_URL})")
    assert (line in result.stderr.splitlines()) is warned, result.stderr
    assert "hunter2" not in result.output
    logged = load_config(path, env={"GH_SECRET": "s", "REDIS_URL": "redis://h/0"}).warnings  # serve logs these
    assert (line.removeprefix("warning: ") in logged) is warned


def test_an_unset_variable_used_in_many_places_is_one_problem_naming_the_other_lines(tmp_path: Path) -> None:
    """Seven processors sharing one secret variable, unset, were seven problems (found by probing)."""
    processors = "".join(f"  - name: p{n}\n    preset: github\n    path: /hooks/{n}\n    events: [pull_request]\n"
                         f"    kinds: [pull-request]\n    auth: {{secret: '${{GH_SECRET}}'}}\n" for n in range(3))
    path = write(tmp_path, config="mapping: m.yml\nprocessors:\n" + processors)
    result = run_check(path)
    assert result.exit_code == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("error")] == [
        f"error: {path}:8 (key processors[0].auth.secret): environment variable GH_SECRET is not set "
        "(also used at lines 14, 20)"]


def test_a_secret_variable_set_but_empty_is_a_problem_with_no_env_too(tmp_path: Path) -> None:
    """A variable set to nothing is a mistake wherever it is read; `--no-env` once stopped saying so."""
    path = write(tmp_path)
    result = run_check(path, "--no-env", env={"GH_SECRET": ""})
    assert result.exit_code == 1
    assert f"{path}:7 (key processors[0].auth.secret): environment variable GH_SECRET is empty" in result.stdout


# ------------------------------------------------------------------------------- near misses, references
def test_a_key_that_nearly_is_ports_is_a_warning_and_the_check_still_passes(tmp_path: Path) -> None:
    """`deleteDependentEntites: false` and `selectr:` were taken in silence, their defaults in force
    (found by probing): a warning each, with its line, as the mapping may hold keys of its own."""
    path = write(tmp_path, mapping="deleteDependentEntites: false\n" + GOOD_MAPPING.replace("selector:", "selectr:"))
    mapping = tmp_path / "m.yml"
    result = run_check(path, env={"GH_SECRET": "s"})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == ["ok: 1 processor, 1 kind"]
    assert result.stderr.splitlines() == [
        f"warning: {mapping}:1 (key deleteDependentEntites): unknown key; did you mean 'deleteDependentEntities'?",
        f"warning: {mapping}:4 (key resources[0].selectr): unknown key; did you mean 'selector'?",
    ]
    as_json = json.loads(run_check(path, "--format", "json", env={"GH_SECRET": "s"}).stdout)
    assert as_json["ok"] is True and len(as_json["warnings"]) == 2
    assert run_check(path, "--quiet", env={"GH_SECRET": "s"}).output == ""


def test_a_resource_with_several_problems_has_them_all_listed_in_one_run(tmp_path: Path) -> None:
    """An `identifer` typo, an unquoted date and a jq error took three runs of check (found by probing)."""
    mapping = tmp_path / "m.yml"
    mapping.write_text(GOOD_MAPPING.replace("identifier:", "identifer:") + "          title: 2024-01-01\n"
                       "          properties:\n            url: .html_url)\n            readme: file://README.md\n")
    assert collect_problems(mapping) == [
        f"{mapping}:8 (key resources[0].port.entity.mappings.identifer): unknown key 'identifer': an entity "
        "mapping has identifier, title, blueprint, team, icon, properties, relations; did you mean 'identifier'?",
        f"{mapping}:10 (key resources[0].port.entity.mappings.title): must be a jq expression (a string), got "
        "the date 2024-01-01: quote it",
        f"{mapping}:12 (key resources[0].port.entity.mappings.properties.url): resource kind 'pull-request', "
        "field properties.url: jq does not compile: syntax error, unexpected INVALID_CHARACTER, expecting end of "
        "file at <top-level>, line 1, column 10 (expression: .html_url))",
    ]


def test_an_integration_reference_as_items_to_parse_is_one_problem_for_check_and_the_loader(tmp_path: Path) -> None:
    """It passed check, then test-mapping, serve and replay stopped with a jq traceback (found by probing)."""
    mapping = tmp_path / "m.yml"
    mapping.write_text(GOOD_MAPPING.replace("    port:\n", "    port:\n      itemsToParse: file://items.json\n"))
    problems = collect_problems(mapping)
    assert problems == [f"{mapping}:6 (key resources[0].port.itemsToParse): resource kind 'pull-request', field "
                        "port.itemsToParse: 'file://items.json' is a reference that only Ocean's git integrations "
                        "resolve (file://, search://), not jq: ocean-hook cannot read it, and this field needs a jq "
                        "expression"]
    with pytest.raises(ConfigError) as caught:
        Mapping.load(mapping)
    assert str(caught.value) == problems[0]


SHIPPED = sorted(Path(__file__).parent.parent.glob("mappings/*/port-app-config.yml")) + sorted(
    Path(__file__).parent.parent.glob("ocean_hook/templates/*/port-app-config.yml"))


@pytest.mark.parametrize("mapping", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_the_shipped_mappings_have_no_problem_and_no_warning(mapping: Path) -> None:
    assert collect_problems(mapping) == []
    assert mapping_warnings(mapping) == []
