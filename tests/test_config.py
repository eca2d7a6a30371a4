"""ocean-hook.yaml: validation with file:line, env interpolation, fail-closed auth, processors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mapping_texts import PULL_REQUESTS

from ocean_hook.auth import SCHEMES
from ocean_hook.check import check
from ocean_hook.config import ConfigProblems, load_config, parse_duration
from ocean_hook.errors import ConfigError
from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.processors.declarative import DeclarativeProcessor
from ocean_hook.yamlfile import parse_yaml

MAPPING = PULL_REQUESTS


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.yml").write_text(MAPPING)
    path = tmp_path / "ocean-hook.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(path: Path, env: dict[str, str] | None = None, *, error: type[ConfigError] = ConfigProblems) -> str:
    """What load_config refuses the file with: its list of problems (or, for a file that is not
    YAML it can read, its one-line `error`)."""
    with pytest.raises(error) as info:
        load_config(path, env=env or {})
    return str(info.value)


def test_valid_config_builds_processors(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: gh
            preset: github
            events: [pull_request]
            kinds: [pull-request]
            auth: {secret: '${GH_SECRET}'}
            items: .pull_request
            order_key: .repository.full_name
        """)
    config = load_config(path, env={"GH_SECRET": "s3cret"})
    [proc] = config.processors
    assert isinstance(proc, DeclarativeProcessor)
    assert proc.path == "/webhooks/github"
    assert proc.settings.verifier.scheme == "github"
    assert config.mapping_path == tmp_path / "m.yml"
    assert config.state_dir == tmp_path / ".ocean-hook"
    event = WebhookEvent("POST", "/webhooks/github", make_headers({
        "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d1", "X-GitHub-Hook-ID": "7"}), b"{}",
        payload={"repository": {"full_name": "o/r"}}, parsed=True)
    assert proc.could_process(event)
    assert proc.delivery_id(event) == "7:d1"
    assert proc.order_key(event) == "/webhooks/github:o/r"
    other = WebhookEvent("POST", "/webhooks/github", make_headers({"X-GitHub-Event": "issues"}), b"{}")
    assert not proc.could_process(other)


def test_every_problem_reported_with_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: a
            path: /hook
            kinds: [pull-request]
            auth: {scheme: github, secret: literal-secret}
          - name: b
            path: /hook
            kinds: [pull-request]
            auth: {scheme: stripe, secret: '${MISSING_VAR}'}
            match: {query: '.a |||'}
          - name: c
            path: /hook
            kinds: [pull-request]
        """)
    with pytest.raises(ConfigProblems) as info:
        load_config(path, env={})
    text = str(info.value)
    problems = info.value.problems
    assert any("ocean-hook.yaml:6" in p and "never the secret itself" in p for p in problems), text
    assert any("MISSING_VAR is not set" in p for p in problems), text
    assert any("ocean-hook.yaml:11" in p and "jq does not compile" in p for p in problems), text
    assert any("key processors[2].auth" in p and "scheme: none" in p for p in problems), text
    assert "literal-secret" not in text


def test_auth_none_must_be_explicit_and_warns(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - {name: open, path: /open, kinds: [pull-request], auth: {scheme: none}}
        """)
    config = load_config(path, env={})
    assert config.warnings == ["processor 'open' accepts unauthenticated deliveries (auth: none)"]


def test_secret_file_and_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("from-file\n")
    path = write(tmp_path, """\
        mapping: m.yml
        colour: blue
        processors:
          - {name: x, path: /x, kinds: [pull-request], auth: {scheme: gitlab, secret_file: secret.txt}}
        """)
    with pytest.raises(ConfigProblems) as info:
        load_config(path, env={})
    assert info.value.problems == [f"{path}:2 (key colour): unknown key 'colour' (known: fetch, integration, jq, "
                                   "mapping, processors, queue, server, state_dir, target)"]


@pytest.mark.parametrize(("written", "key", "problem"), [
    # found by probing: each fell back to the preset's value, silently
    ("name: no", "name", "every processor needs a 'name', got False (quote it)"),
    ("name: ''", "name", "every processor needs a 'name', got ''"),
    ("path: ''", "path", "needs a URL path starting with '/', got ''"),
    ("path: 0", "path", "needs a URL path starting with '/', got 0"),
    # found by probing: a misspelled key of a delivery id source was ignored
    ("delivery_id: {header: X-Id, heder: Y}", "delivery_id",
     "unknown key 'heder' (known: header, headers, query)"),
])
def test_a_written_value_never_falls_back_to_the_presets(tmp_path: Path, written: str, key: str,
                                                         problem: str) -> None:
    path = write(tmp_path, f"""\
        mapping: m.yml
        processors:
          - {{preset: github, kinds: [pull-request], auth: {{scheme: none}}, {written}}}
        """)
    assert refused(path) == f"{path}:3 (key processors[0].{key}{'.heder' if 'heder' in written else ''}): {problem}"


def test_an_auth_option_taken_out_is_not_then_said_to_be_missing(tmp_path: Path) -> None:
    """Said at its line, then "option 'header' is required" at the auth line (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - {name: x, path: /x, kinds: [pull-request], auth: {scheme: hmac, secret: '${S}', header: 5}}
        """)
    assert refused(path, {"S": "s"}) == (f"{path}:3 (key processors[0].auth.header): auth scheme 'hmac': option "
                                         "'header' must be a string")


def test_a_variable_as_the_auth_scheme_is_said_not_to_be_read(tmp_path: Path) -> None:
    """Why `scheme: ${SCHEME}` is unknown was lost with the unknown scheme's own fix (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - {name: x, path: /x, kinds: [pull-request], auth: {scheme: '${SCHEME}', secret: '${S}'}}
        """)
    assert refused(path, {"S": "s", "SCHEME": "hmac"}).endswith(
        "(${VAR} is not read from the environment here, got '${SCHEME}')")


def test_an_unknown_auth_scheme_is_one_problem_not_its_secret_too(tmp_path: Path) -> None:
    """The secret's `${VAR}` was said "not read here" beside the unknown scheme (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - {name: x, path: /x, kinds: [pull-request], auth: {scheme: githb, secret: '${S}'}}
        """)
    assert refused(path, {"S": "s"}) == (f"{path}:3 (key processors[0].auth.scheme): unknown auth scheme 'githb' "
                                         f"(known: {', '.join(SCHEMES)})")


def test_a_mapping_path_that_is_no_file_says_what_it_is(tmp_path: Path) -> None:
    """A directory, or a link to nothing, was "not found" (found by probing)."""
    path = write(tmp_path, f"mapping: maps\n{PROCESSOR}\n")
    (tmp_path / "maps").mkdir()
    assert refused(path) == f"{path}:1 (key mapping): mapping file {tmp_path / 'maps'} is a directory"
    (tmp_path / "maps").rmdir()
    (tmp_path / "maps").symlink_to(tmp_path / "maps")
    assert refused(path) == (f"{path}:1 (key mapping): mapping file {tmp_path / 'maps'} is a symbolic link to "
                             "nothing (or a loop of links)")
    (tmp_path / "maps").unlink()
    assert refused(path) == f"{path}:1 (key mapping): mapping file {tmp_path / 'maps'} not found"


def test_every_auth_option_refused_is_said_at_its_own_line_at_once(tmp_path: Path) -> None:
    """Fixing three bad options took three runs of check, each pointing at the `auth:` line
    (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: e
            path: /e
            kinds: [pull-request]
            auth:
              scheme: hmac
              header: X-Sig
              secret: '${SEC}'
              encoding: HEX
              algorithm: SHA256
              prefix: 5
        """)
    problems = refused(path, {"SEC": "s"}).splitlines()[1:]
    assert sorted(p.strip() for p in problems) == [
        f"{path}:10 (key processors[0].auth.encoding): auth scheme 'hmac': option 'encoding' must be one of hex, "
        "base64",
        f"{path}:11 (key processors[0].auth.algorithm): auth scheme 'hmac': option 'algorithm' must be one of sha1, "
        "sha256, sha512",
        f"{path}:12 (key processors[0].auth.prefix): auth scheme 'hmac': option 'prefix' must be a string",
    ]


def test_a_variable_where_none_is_read_and_forms_that_are_no_variable_are_problems(tmp_path: Path) -> None:
    """`name: gh-${ENV}`, `workers: '${W}'` and `${INTEGRATION:-ocean-hook}` were taken as
    written, silently: the README says `${VAR}` anywhere (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        integration: '${INTEGRATION:-ocean-hook}'
        server: {workers: '${W}'}
        processors:
          - {name: 'gh-${ENV}', path: /x, kinds: [pull-request], auth: {scheme: none}, validate: ['."${x}" == 1']}
        """)
    problems = refused(path, {"INTEGRATION": "i", "W": "2", "ENV": "prod"}).splitlines()[1:]
    assert [p.strip().split(": ", 1)[1] for p in problems] == [
        "must be a positive whole number (${VAR} is not read from the environment here, got '${W}')",
        "only ${NAME} is read from the environment (no default, spaces or nesting), got "
        "'${INTEGRATION:-ocean-hook}'",
        "is read as written: ${VAR} is not read from the environment here, got 'gh-${ENV}'",
    ]  # the jq program is read as written on purpose
    assert [p.strip().split(" (key ")[1].split(")")[0] for p in problems] == [
        "server.workers", "integration", "processors[0].name"]


def test_a_tilde_is_the_home_folder_in_every_path_of_the_config(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Only target.path and queue.path read `~`: `state_dir: ~/state` made a folder named '~'
    beside the config (the journal, in queue.path, went home), and `mapping: ~/m.yml` was not
    found (found by probing)."""
    home = tmp_path / "home"
    (home / "maps").mkdir(parents=True)
    (home / "maps" / "m.yml").write_text(MAPPING)
    (home / "secret.txt").write_text("s3cret\n")
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "project").mkdir()
    path = write(tmp_path / "project", """\
        mapping: ~/maps/m.yml
        state_dir: ~/state
        processors:
          - {name: x, path: /x, kinds: [pull-request], auth: {scheme: github, secret_file: ~/secret.txt}}
        """)
    config = load_config(path, env={})
    assert (config.mapping_path, config.state_dir) == (home / "maps" / "m.yml", home / "state")
    assert check(path, env={}).ok
    # a `~name` of no user is read as written (it was a RuntimeError traceback)
    path.write_text(path.read_text().replace("state_dir: ~/state", "state_dir: ~no-such-user-here/state"))
    assert load_config(path, env={}).state_dir == tmp_path / "project" / "~no-such-user-here" / "state"


@pytest.mark.parametrize("content", ["export GITHUB_WEBHOOK_SECRET=3f9a\n", "GITHUB_WEBHOOK_SECRET=3f9a"])
def test_a_secret_file_holding_a_shell_assignment_is_a_problem(tmp_path: Path, content: str) -> None:
    """`secret_file: webhook-secret.sh`, the README's file: the secret was the whole line, and
    every delivery a 401 (found by probing). A base64 secret's padding is no assignment."""
    (tmp_path / "s.sh").write_text(content)
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - {name: x, path: /x, kinds: [pull-request], auth: {scheme: github, secret_file: s.sh}}
        """)
    assert refused(path).endswith(f"secret file {tmp_path / 's.sh'} holds a shell assignment "
                                  f"({content.split('=')[0]}=...), not the secret alone")
    for secret in ("c2VjcmV0IQ==\n", "JBSWY3DPEHPK3PXPJBSWY3DPEB======\n"):  # base64, base32: padding, no assignment
        (tmp_path / "s.sh").write_text(secret)
        assert load_config(path, env={}).processors[0].name == "x"


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        ("webhooks/x", "needs a URL path starting with '/', got 'webhooks/x'"),
        ("/healthz", "/healthz is one of the listener's own endpoints (/healthz, /readyz, /metrics); "
                     "choose another path"),
        ("/metrics", "/metrics is one of the listener's own endpoints (/healthz, /readyz, /metrics); "
                     "choose another path"),
        ("/hooks/{team}", "must be a plain URL path (letters, digits, / - _ . ~ and no { } ? # % or spaces), "
                          "got '/hooks/{team}'"),
        ("/hooks?x=1", "must be a plain URL path (letters, digits, / - _ . ~ and no { } ? # % or spaces), "
                       "got '/hooks?x=1'"),
        ("/my hooks", "must be a plain URL path (letters, digits, / - _ . ~ and no { } ? # % or spaces), "
                      "got '/my hooks'"),
    ],
)
def test_a_processor_path_the_listener_cannot_route_is_named(tmp_path: Path, route: str, problem: str) -> None:
    """'/healthz' would take the health check over (its GET answered 405); '{team}' would be an
    aiohttp placeholder that no delivery's path is looked up by."""
    path = write(tmp_path, f"""\
        mapping: m.yml
        processors:
          - {{name: open, path: '{route}', kinds: [pull-request], auth: {{scheme: none}}}}
        """)
    assert refused(path) == f"{path}:3 (key processors[0].path): {problem}"


def test_an_empty_events_list_is_a_problem_not_every_event(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - {name: gh, preset: github, events: [], kinds: [pull-request], auth: {secret: '${GH_SECRET}'}}
        """)
    assert refused(path, {"GH_SECRET": "s"}) == (
        f"{path}:3 (key processors[0].events): is empty: leave 'events' out to take every event, "
        "or list the ones to take")


def test_jq_options_are_checked(tmp_path: Path) -> None:
    """'allow_env: 1' was read as false and 'allwo_env' ignored: $ENV stayed empty, silently."""
    path = write(tmp_path, """\
        mapping: m.yml
        jq: {allow_env: 1, allwo_env: true}
        processors:
          - {name: open, path: /open, kinds: [pull-request], auth: {scheme: none}}
        """)
    assert refused(path).splitlines()[1:] == [
        f"  {path}:2 (key jq.allwo_env): unknown key 'allwo_env' (known: allow_env)",
        f"  {path}:2 (key jq.allow_env): must be true or false, got 1",
    ]


def test_a_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: a second `auth:` would silently replace the first."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: gh
            preset: github
            kinds: [pull-request]
            auth: {secret: '${GH_SECRET}'}
            auth: {scheme: none}
        """)
    assert refused(path, {"GH_SECRET": "s"}, error=ConfigError) == (
        f"{path}:7 (key processors[0].auth): duplicate key 'auth' (first at line 6; YAML keys must be unique)")


def test_keys_that_are_lists_or_the_same_text_are_errors_naming_the_line() -> None:
    """`? [a, b]` ended in a TypeError traceback; `1:` and `"1":` became one property, the
    first value lost."""
    with pytest.raises(ConfigError) as info:
        parse_yaml("properties:\n  ? [a, b]\n  : .x\n", "m.yml")
    assert info.value.where == "m.yml:2"
    assert str(info.value).endswith("invalid YAML: a key must be a plain value (text or a number), not a list or "
                                    "a mapping")
    with pytest.raises(ConfigError) as info:
        parse_yaml('properties:\n  1: .name\n  "1": .url\n', "m.yml")
    assert info.value.where == "m.yml:3 (key properties.1)"
    assert "duplicate key '1' (first at line 2" in str(info.value)
    assert parse_yaml("properties: {1: .a, 2: .b, null: .c}\n", "m.yml").data == {"properties": {1: ".a", 2: ".b",
                                                                                                   None: ".c"}}


def test_a_control_character_in_yaml_is_an_error_naming_the_line() -> None:
    """PyYAML refuses it while setting up, outside the error handling: a ReaderError traceback
    from check, test-mapping, serve and the rest (found by probing)."""
    with pytest.raises(ConfigError) as info:
        parse_yaml("a: 1\nb: x\x07\n", "m.yml")
    assert (info.value.where, str(info.value)) == (
        "m.yml:2", "m.yml:2: invalid YAML: a control character (#x07) is not allowed")


def test_target_and_queue_paths_are_read_from_the_configs_folder(tmp_path: Path, monkeypatch) -> None:
    """As `mapping` and `state_dir` are: they were read from wherever the command ran, so `serve`
    and `catalog` started in two folders used two catalogs (found by probing)."""
    folder = tmp_path / "sub"
    folder.mkdir()
    path = write(folder, "mapping: m.yml\ntarget: {type: local, path: mycat.db}\nqueue: {type: sqlite, path: q/j.db}\n"
                         f"{PROCESSOR}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path, env={})
    assert (config.target["path"], config.queue["path"]) == (str(folder / "mycat.db"), str(folder / "q" / "j.db"))
    absolute = write(folder, f"mapping: m.yml\ntarget: {{type: local, path: {tmp_path / 'abs.db'}}}\n{PROCESSOR}\n")
    assert load_config(absolute, env={}).target["path"] == str(tmp_path / "abs.db")


def test_merge_keys_share_settings_and_a_key_written_after_one_wins(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - &shared
            name: gh
            preset: github
            kinds: [pull-request]
            auth: {secret: '${GH_SECRET}'}
          - <<: *shared
            name: gh-issues
            path: /webhooks/github-issues
          - <<: [*shared]
            name: broken
            order_key: .[
        """)
    problem = refused(path, {"GH_SECRET": "s"})
    assert problem.startswith(f"{path}:13 (key processors[2].order_key): jq does not compile")
    path.write_text(path.read_text().replace("    order_key: .[\n", ""))
    config = load_config(path, env={"GH_SECRET": "s"})
    assert [(p.name, p.path) for p in config.processors] == [
        ("gh", "/webhooks/github"), ("gh-issues", "/webhooks/github-issues"), ("broken", "/webhooks/github")]
    assert {p.settings.verifier.scheme for p in config.processors} == {"github"}


def test_missing_mapping_file_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mapping: nope.yml\nprocessors: [\n")
    with pytest.raises(Exception) as info:
        load_config(path, env={})
    assert f"{path}:3" in str(info.value) and "invalid YAML" in str(info.value)


@pytest.mark.parametrize("written", [True, False], ids=["state_dir written", "the default"])
def test_a_state_dir_that_is_a_file_is_a_config_problem(tmp_path: Path, written: bool) -> None:
    name = "state" if written else ".ocean-hook"
    (tmp_path / name).write_text("a file")
    path = write(tmp_path, f"""\
        mapping: m.yml
        {"state_dir: state" if written else ""}
        processors:
          - {{name: open, path: /open, kinds: [pull-request], auth: {{scheme: none}}}}
    """)
    line = 2 if written else 1
    assert refused(path) == (f"{path}:{line}{' (key state_dir)' if written else ''}: state_dir {tmp_path / name} "
                             "(journal and local catalog) exists and is not a directory")


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), (45, 45.0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_server_idle_timeout_is_a_positive_duration(tmp_path: Path) -> None:
    processors = "processors: [{name: x, path: /x, kinds: [pull-request], auth: {scheme: none}}]"
    assert load_config(write(tmp_path, f"mapping: m.yml\n{processors}\n"), env={}).server.idle_timeout_seconds == 75
    config = load_config(write(tmp_path, f"mapping: m.yml\nserver: {{idle_timeout: 20s}}\n{processors}\n"), env={})
    assert config.server.idle_timeout_seconds == 20
    assert config.server.stall_timeout_seconds == 60
    config = load_config(write(tmp_path, f"mapping: m.yml\nserver: {{stall_timeout: 0s}}\n{processors}\n"), env={})
    assert config.server.stall_timeout_seconds == 0
    for bad, why in (("0s", "longer than 0s"), ("soon", "a duration like")):
        path = write(tmp_path, f"mapping: m.yml\nserver: {{idle_timeout: {bad}}}\n{processors}\n")
        with pytest.raises(ConfigProblems) as info:
            load_config(path, env={})
        assert len(info.value.problems) == 1
        assert info.value.problems[0].startswith(f"{path}:2 (key server.idle_timeout): must be ")
        assert why in info.value.problems[0]


PROCESSOR = "processors: [{name: x, path: /x, kinds: [pull-request], auth: {scheme: none}}]"


@pytest.mark.parametrize(("block", "key", "problem"), [
    ("server: {dedup_window: -5}", "server.dedup_window", "must be longer than 0s, got -5"),
    ("server: {dedup_window: 0s}", "server.dedup_window", "must be longer than 0s, got '0s'"),
    ("server: {shutdown_timeout: -5}", "server.shutdown_timeout", "must be 0s or longer, got -5"),
    ("server: {stall_timeout: -1m}", "server.stall_timeout",
     "must be a duration like 7d, 12h or 30s (at most 36500d), got '-1m'"),
    # found by probing: .nan turned de-duplication off, .inf or 999999d killed the watchdog
    # with an OverflowError, 0.001 had serve killed while idle
    ("server: {dedup_window: .nan}", "server.dedup_window",
     "must be a duration like 7d, 12h or 30s (at most 36500d), got nan"),
    ("server: {stall_timeout: .inf}", "server.stall_timeout",
     "must be a duration like 7d, 12h or 30s (at most 36500d), got inf"),
    ("server: {stall_timeout: 999999d}", "server.stall_timeout",
     "must be a duration like 7d, 12h or 30s (at most 36500d), got '999999d'"),
    ("server: {stall_timeout: 0.001}", "server.stall_timeout", "must be 0s (never) or 1s or longer, got 0.001"),
    ("server: {stall_timeout: -60}", "server.stall_timeout", "must be 0s or longer (0s: never), got -60"),
    ("server: {max_body_bytes: true}", "server.max_body_bytes", "must be a positive number of bytes"),
    ("server: {workers: yes}", "server.workers", "must be a positive whole number"),
    ("fetch: {timeout_seconds: abc}", "fetch.timeout_seconds", "must be a number of seconds, > 0, got 'abc'"),
    ("fetch: {timeout_seconds: [1]}", "fetch.timeout_seconds", "must be a number of seconds, > 0, got [1]"),
    ("fetch: {attempts: 0}", "fetch.attempts", "must be a whole number, 1 or more, got 0"),
    # found by probing: every fetch dead-lettered with aiohttp's OverflowError
    ("fetch: {timeout_seconds: .inf}", "fetch.timeout_seconds", "must be a number of seconds, > 0, got inf"),
    ("fetch: {timeout_seconds: .nan}", "fetch.timeout_seconds", "must be a number of seconds, > 0, got nan"),
    ("fetch: {allow_loopback: maybe}", "fetch.allow_loopback", "must be true or false, got 'maybe'"),
])
def test_settings_that_used_to_pass_and_misbehave_are_problems(tmp_path: Path, block: str, key: str,
                                                               problem: str) -> None:
    """A negative dedup window turned de-duplication off; `max_body_bytes: true` made it 1 byte;
    a bad `fetch:` value passed `check` and ended `serve` in a traceback."""
    path = write(tmp_path, f"mapping: m.yml\n{block}\n{PROCESSOR}\n")
    assert refused(path) == f"{path}:2 (key {key}): {problem}"


@pytest.mark.parametrize("value", [".inf", ".nan", "-1", "1e12"])
def test_a_retry_delay_that_is_no_number_of_seconds_is_a_problem(tmp_path: Path, value: str) -> None:
    """`.inf` passed: the delivery was never retried, its order key blocked, and `deliveries
    list` ended in an OverflowError; `.nan` retried at once (found by probing)."""
    processor = PROCESSOR.replace("kinds: [pull-request]",
                                  f"kinds: [pull-request], retry: {{initial_retry_delay_seconds: {value}}}")
    assert processor != PROCESSOR
    path = write(tmp_path, f"mapping: m.yml\n{processor}\n")
    assert "(key processors[0].retry.initial_retry_delay_seconds): must be a non-negative number (at most " in (
        refused(path))


@pytest.mark.parametrize("host", ["127.0.0.1:18441", "localhost", "10.0.0.7:8080", "[::1]:9000"])
def test_a_fetch_host_every_fetch_would_be_refused_is_a_problem_unless_loopback_is_allowed(
    tmp_path: Path, host: str
) -> None:
    """`check` said ok, then every delivery was dead-lettered: `fetch refused ... (needs
    allow_loopback)`, a key the docs did not name (found by probing)."""
    processor = ("processors: [{name: x, path: /x, kinds: [pull-request], auth: {scheme: none}, "
                 f"fetch: {{url: .url, allowed_hosts: ['{host}']}}}}]")
    path = write(tmp_path, f"mapping: m.yml\n{processor}\n")
    assert refused(path) == (f"{path}:2 (key processors[0].fetch.allowed_hosts[0]): {host} is a loopback or private "
                             "address: every fetch there is refused unless `fetch: {allow_loopback: true}` is set at "
                             "the top of the config")
    path = write(tmp_path, f"mapping: m.yml\nfetch: {{allow_loopback: true}}\n{processor}\n")
    assert load_config(path, env={}).processors[0].name == "x"


def test_variables_are_read_in_a_processors_path_events_and_allowed_hosts(tmp_path: Path) -> None:
    """`${VAR}` anywhere, the README says; in these three it stayed as written: events silently
    never matched, and the path and host were refused with confusing messages (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: gh
            preset: github
            path: '${HOOK_PATH}'
            events: ['${EV}']
            kinds: [pull-request]
            auth: {secret: '${GH_SECRET}'}
            fetch: {url: .url, allowed_hosts: ['${API_HOST}']}
        """)
    env = {"HOOK_PATH": "/hooks/gh", "EV": "issues", "API_HOST": "api.example.com", "GH_SECRET": "s"}
    [processor] = load_config(path, env=env).processors
    assert processor.path == "/hooks/gh"
    assert processor.spec.events == ["issues"]  # type: ignore[attr-defined]
    assert processor.spec.fetch.allowed_hosts == ["api.example.com"]  # type: ignore[attr-defined]
    assert "environment variable EV is not set" in refused(path, {k: v for k, v in env.items() if k != "EV"})


def test_a_fetch_token_variable_set_empty_is_a_problem(tmp_path: Path) -> None:
    """`Authorization: Bearer ${TOKEN}` with TOKEN='' passed check; GitHub answers 404 for a
    private repository asked without a token, and the 404 deleted its entity (found by probing)."""
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: gh
            preset: github
            kinds: [pull-request]
            auth: {secret: '${GH_SECRET}'}
            fetch: {url: .url, allowed_hosts: [api.example.com], headers: {Authorization: 'Bearer ${TOKEN}'}}
        """)
    assert refused(path, {"GH_SECRET": "s", "TOKEN": " "}).endswith(
        "(key processors[0].fetch.headers.Authorization): environment variable TOKEN is empty")
    assert load_config(path, env={"GH_SECRET": "s", "TOKEN": "t"}).processors[0].name == "gh"
    assert load_config(path, env={"TOKEN": ""}, inspection=True, needs=("state_dir",)).processors  # only looking


def test_a_secret_file_that_is_not_text_and_secrets_that_are_not_a_list(tmp_path: Path) -> None:
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bin")
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - name: a
            path: /a
            kinds: [pull-request]
            auth: {scheme: github, secret_file: bin.txt}
          - name: b
            path: /b
            kinds: [pull-request]
            auth: {scheme: github, secrets: '${B_SECRET}'}
        """)
    assert refused(path, {"B_SECRET": "s"}) == (
        f"2 problems:\n  {path}:6 (key processors[0].auth.secret_file): secret file {tmp_path / 'bin.txt'} "
        f"is not UTF-8 text\n  {path}:10 (key processors[1].auth.secrets): must be a list: "
        "secrets: ['${OLD_SECRET}', '${NEW_SECRET}']")


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("state_dir: 5\n", "state_dir", "must be a directory path, got 5"),
    ("integration: [a, b]\n", "integration", "must be a name, got ['a', 'b']"),
    ("processors: [{name: x, path: /x, kinds: [pull-request], auth: {scheme: none}, retry: {max_retries: 2.5}}]\n",
     "processors[0].retry.max_retries", "must be a whole number, got 2.5"),
    ("processors: [{name: x, path: /x, kinds: [pull-request], auth: {scheme: none}, "
     "retry: {initial_retry_delay_seconds: 1, max_retry_delay_seconds: 0.5}}]\n",
     "processors[0].retry.max_retry_delay_seconds", "must be at least initial_retry_delay_seconds (1)"),
    ("processors: [{name: x, path: /x, kinds: [pull-request], auth: {scheme: none}, "
     "fetch: {url: .u, allowed_hosts: [h], headers: {Authorization: }}}]\n",
     "processors[0].fetch.headers.Authorization", "must be the header's value (a string), got None"),
])
def test_values_that_were_coerced_in_silence_are_problems(tmp_path: Path, text: str, key: str, problem: str) -> None:
    """`integration: [a, b]` became the name "['a', 'b']"; `Authorization:` left empty was sent
    as "None"; `max_retries: 2.5` was 2."""
    body = f"mapping: m.yml\n{text}" + ("" if "processors" in text else PROCESSOR + "\n")
    path = write(tmp_path, body)
    assert refused(path) == f"{path}:2 (key {key}): {problem}"


def test_integration_is_read_from_the_environment_like_any_value(tmp_path: Path) -> None:
    path = write(tmp_path, f"mapping: m.yml\nintegration: ${{INTEGRATION}}\n{PROCESSOR}\n")
    assert load_config(path, env={"INTEGRATION": "hooks-eu"}).integration == "hooks-eu"
