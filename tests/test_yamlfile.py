"""yamlfile: aliases built once (a "billion laughs" is refused at once), and the lines of keys
written over ones merged in with `<<:` (found by probing)."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from mapping_texts import PULL_REQUESTS
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.config import ConfigProblems, load_config
from ocean_hook.errors import ConfigError
from ocean_hook.yamlfile import parse_yaml

MAPPING = PULL_REQUESTS

PROCESSOR = """\
processors:
  - name: gh
    preset: github
    kinds: [pull-request]
    auth: {secret: '${GH_SECRET}'}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.yml").write_text(MAPPING)
    path = tmp_path / "ocean-hook.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail, rather than hang, when the block takes longer (each alias was built again, so time
    grew tenfold with each level of a billion laughs)."""
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def laughs(levels: int, *, mappings: bool = False) -> str:
    """`x0: &a0 [lol, ...]`, `x1: &a1 [*a0, ...]`, ...: ten of each, one level a line."""
    def row(items: list[str]) -> str:
        return "{" + ", ".join(f"k{i}: {v}" for i, v in enumerate(items)) + "}" if mappings else f"[{', '.join(items)}]"
    lines = [f"x0: &a0 {row(['lol'] * 10)}"]
    lines += [f"x{n}: &a{n} {row([f'*a{n - 1}'] * 10)}" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_is_built_once_and_shares_its_value_and_lines() -> None:
    text = laughs(4)  # 11,110 values repeated through aliases: under the limit
    with deadline(5):
        doc = parse_yaml(text, "m.yml")
    assert doc.data == yaml.safe_load(text)
    assert doc.data["x3"][0] is doc.data["x3"][9] is doc.data["x2"]  # as PyYAML's safe_load has it
    # an alias keeps the lines of the value it names: where it is written
    assert doc.line(("x3", 9)) == 3  # `&a2 [...]`, on x2's line
    assert doc.line(("x3", 9, 4)) == 2
    assert doc.line(("x3", 9, 4, 7)) == 1
    assert doc.line(("x3", 9, 4, 7, "nope")) == 1  # nearest known


def test_a_billion_laughs_is_refused_at_once_naming_the_file_and_line(tmp_path: Path) -> None:
    """8 levels of 10 aliases each: `check` was still running after a minute (safe_load reads
    it in under a second, but anything walking the data would visit 10**8 values)."""
    path = write(tmp_path, "mapping: m.yml\n" + laughs(8) + PROCESSOR)
    with deadline(5):
        result = CliRunner().invoke(app, ["check", "--config", str(path)], env={"GH_SECRET": "s"})
    assert result.exit_code == 1, result.output
    # x4 (line 6) holds the alias that takes the count over 100,000
    assert (f"{path}:6: invalid YAML: the aliases (*name) up to here stand for more than 100,000 values when "
            "written out: use fewer") in result.output
    with deadline(5), pytest.raises(ConfigError) as info:
        load_config(path, env={"GH_SECRET": "s"})
    assert info.value.where == f"{path}:6"
    # mappings of aliases, in a mapping file, and deeper still
    with deadline(5), pytest.raises(ConfigError) as info:
        parse_yaml("resources: []\n" + laughs(30, mappings=True), "m.yml")
    assert info.value.where == "m.yml:6"
    assert "more than 100,000 values" in str(info.value)


def test_an_alias_inside_the_value_it_names_is_an_error() -> None:
    """It was built again and again until Python's recursion limit: "nested too deeply"."""
    for text in ("a: &a [1, *a]\n", "a: &a\n  b: 1\n  c: *a\n", "a: &a\n  b: 1\n  <<: *a\n"):
        with deadline(5), pytest.raises(ConfigError) as info:
            parse_yaml(text, "m.yml")
        assert (info.value.where, str(info.value).split(": ", 1)[1]) == (
            "m.yml:1", "invalid YAML: an alias is used inside the value it names (a loop)"), text


def test_a_key_written_over_a_merged_one_has_its_own_lines() -> None:
    """Its parts took the lines of the merged value's parts: `fetch` written again without `url`
    was reported at the anchor's `url`."""
    doc = parse_yaml(textwrap.dedent("""\
        base: &base
          fetch:
            url: .a
            headers: {A: a}
          kinds: [x, y]
          auth: {secret: s}
        p:
          <<: *base
          fetch:
            allowed_hosts: [h]
          kinds: z
        q:
          kinds: w
          <<: [{kinds: v, name: one}, {name: two, path: /two}]
        """), "m.yml")
    assert doc.data["p"] == {"fetch": {"allowed_hosts": ["h"]}, "kinds": "z", "auth": {"secret": "s"}}
    line = doc.line
    assert line(("p", "fetch")) == 9
    assert line(("p", "fetch", "url")) == 9  # not written here: its nearest key, not line 3
    assert line(("p", "fetch", "headers", "A")) == 9
    assert line(("p", "fetch", "allowed_hosts", 0)) == 10
    assert line(("p", "kinds", 1)) == 11
    assert (line(("p", "auth")), line(("p", "auth", "secret"))) == (6, 6)  # only the anchor has it
    assert (line(("base", "fetch", "url")), line(("base", "kinds", 1))) == (3, 5)
    assert doc.data["q"] == {"kinds": "w", "name": "one", "path": "/two"}
    assert [line(("q", k)) for k in ("kinds", "name", "path")] == [13, 14, 14]


def test_check_names_the_line_of_a_key_written_over_a_merged_one(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mapping: m.yml
        processors:
          - &gh
            name: a
            preset: github
            kinds: [pull-request]
            auth: {secret: '${GH_SECRET}'}
            fetch:
              url: .issue.url
              allowed_hosts: [api.github.com]
          - <<: *gh
            name: b
            path: /b
            fetch:
              headers: {A: b}
              allowed_hosts: [api.github.com]
        """)
    with pytest.raises(ConfigProblems) as info:
        load_config(path, env={"GH_SECRET": "s"})
    problems = info.value.problems
    assert any(p.startswith(f"{path}:14 (key processors[1].fetch.url): ") for p in problems), problems
    assert not any(":9 (key processors[1]" in p for p in problems), problems
