"""How the CLI feels: help with examples everywhere, a version, no colors where they don't belong."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from serve_helpers import write_config
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.queue.base import Delivery
from ocean_hook.queue.sqlite import SqliteJournal
from ocean_hook.targets.local import LocalCatalog

ANSI = "\x1b["
OCEAN_HOOK = str(Path(sys.executable).parent / "ocean-hook")


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the (Click) tree, as the words that reach it."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def all_paths() -> list[tuple[str, ...]]:
    return list(command_paths(typer.main.get_command(app)))


def test_the_tree_has_every_command() -> None:
    paths = {" ".join(p) for p in all_paths()}
    assert {"", "init", "check", "serve", "replay", "test-mapping", "catalog", "catalog list",
            "catalog get", "catalog export", "catalog import", "deliveries", "deliveries list",
            "deliveries show", "deliveries retry", "deliveries purge"} <= paths


@pytest.mark.parametrize("path", all_paths(), ids=lambda p: " ".join(p) or "ocean-hook")
def test_help_has_examples(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="ocean-hook")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"ocean-hook {' '.join(path)}".strip() in result.output  # examples name the command
    assert "Traceback" not in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"ocean-hook {version('ocean-hook')}\n"


def on_terminal(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal: its exit code and what it wrote."""
    master, slave = pty.openpty()
    with open(slave, "w", encoding="utf-8") as tty, redirect_stdout(tty), redirect_stderr(tty):
        try:
            app(args, prog_name="ocean-hook")
        except SystemExit as done:
            code = done.code
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return int(code or 0), b"".join(chunks).decode()


def test_the_test_mapping_spinner_never_tangles_with_a_plan_printed_on_the_same_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`⠋ mapping: 0 items 0:00:00+ create thing/id7000` stayed in the plan (found by probing):
    the spinner shows only when nothing else is printed as it goes (here `--quiet`)."""
    import ocean_hook.cli.test_mapping as command

    monkeypatch.setattr(command._LazyProgress, "delay", -1.0)  # due at once
    monkeypatch.setenv("TERM", "xterm-256color")
    (tmp_path / "m.yml").write_text("resources:\n  - kind: thing\n    port:\n      entity:\n        mappings:\n"
                                    "          identifier: .id\n          blueprint: '\"thing\"'\n")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"id": f"e{n}"}) + "\n" for n in range(20)))
    args = ["test-mapping", "-m", str(tmp_path / "m.yml"), "-d", str(tmp_path / "d.jsonl")]
    code, plan = on_terminal(args)
    assert code == 0 and "+ create thing/e19" in plan
    assert "mapping:" not in plan
    code, quiet = on_terminal([*args, "-q"])
    assert code == 0 and "mapping:" in quiet  # nothing else on the terminal meanwhile: the spinner shows


@pytest.fixture
def broken_config(tmp_path: Path) -> Path:
    path = tmp_path / "ocean-hook.yaml"
    path.write_text("mapping: missing.yml\nprocessors: []\n")
    return path


def test_no_ansi_escapes_when_not_a_terminal_or_with_no_color(
    broken_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    args = ["check", "--config", str(broken_config)]
    # on a terminal, problems are red: the escapes are there to be removed
    code, colored = on_terminal(args)
    assert code == 1 and ANSI in colored
    # NO_COLOR on the same terminal: none
    monkeypatch.setenv("NO_COLOR", "1")
    code, plain = on_terminal(args)
    assert code == 1 and "error:" in plain and "problems" in plain
    assert ANSI not in plain
    # not a terminal (a pipe, as the real command writes to one): none either
    monkeypatch.delenv("NO_COLOR")
    piped = subprocess.run([OCEAN_HOOK, *args], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 1
    assert "error:" in piped.stdout
    assert ANSI not in piped.stdout + piped.stderr


@pytest.mark.parametrize("age", ["36501d", "-1d", "soon"])
def test_purge_names_what_a_duration_may_be(tmp_path: Path, age: str) -> None:
    """`36501d` was told it is no duration, when it is one over the limit (found by probing)."""
    result = CliRunner().invoke(app, ["deliveries", "purge", "--older-than", age, "--config",
                                      str(write_config(tmp_path))])
    assert (result.exit_code, result.stderr) == (2, "error: --older-than must be a duration like 30d, 12h or 90m "
                                                    f"(at most 36500d), got '{age}'\n")


def test_purge_says_the_dedup_window_as_it_is_written(tmp_path: Path) -> None:
    """A 1-second window was said as `1.15741e-05 days` (found by probing)."""
    config = write_config(tmp_path, server={"dedup_window": "90m"})

    async def made_by_serve() -> None:
        async with await SqliteJournal.open(tmp_path / "state" / "journal.db"):
            pass

    asyncio.run(made_by_serve())
    result = CliRunner().invoke(app, ["deliveries", "purge", "--older-than", "1h", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ("purged 0 deliveries\n(what arrived in the last 90m still de-duplicates redeliveries: "
                             "server.dedup_window)\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["catalog", "list"], "no local catalog at {state}/catalog.db yet: serve creates it when it starts "
                              "(replay and import too)"),
        (["catalog", "export", "--db", "{tmp}/typo.db"], "no local catalog at {tmp}/typo.db yet"),
        (["catalog", "get", "service", "api"], "no local catalog at {state}/catalog.db yet"),
        (["deliveries", "list"], "no journal at {state}/journal.db yet: serve creates it when it starts"),
        (["deliveries", "retry", "--all-dead"], "no journal at {state}/journal.db yet"),
        (["deliveries", "purge", "--older-than", "1d"], "no journal at {state}/journal.db yet"),
    ],
)
def test_looking_into_a_project_serve_never_ran_in_creates_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A mistyped --db or a fresh project used to get an empty file created, then '0 entities'."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    words = [a.format(tmp=tmp_path) for a in args]
    where = [] if "--db" in words else ["--config", str(config)]  # --db is the catalog itself
    result = CliRunner().invoke(app, [*words, *where], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: " + message.format(state=state, tmp=tmp_path))
    assert not state.exists() and not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize(("command", "name", "what"), [
    (["deliveries", "list"], "journal.db", "journal"), (["catalog", "list"], "catalog.db", "local catalog"),
])
def test_an_empty_file_is_not_made_into_a_journal_or_catalog(tmp_path: Path, command: list[str], name: str,
                                                              what: str) -> None:
    """`deliveries list` made a journal of it, exit 0 (found by probing); `catalog list` a catalog."""
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / name).touch()
    result = CliRunner().invoke(app, [*command, "--config", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: no {what} at {tmp_path / 'state' / name} yet")
    assert (tmp_path / "state" / name).stat().st_size == 0


async def test_tables_show_outside_text_as_written_never_as_markup_or_terminal_codes(tmp_path: Path) -> None:
    """An entity titled '[/]...' made `catalog list` fail with a rich MarkupError; '[bold]' in a
    delivery id vanished from `deliveries list`; an ESC from a payload reached the terminal."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    catalog = LocalCatalog(state / "catalog.db")
    title = "[/]closed [bold]tag\x1b[31mred"
    await catalog.upsert([{"identifier": "1", "blueprint": "pr", "title": title}], MappingFlags())
    await catalog.close()
    async with await SqliteJournal.open(state / "journal.db") as journal:
        await journal.put(Delivery("[bold]7", "POST", "/webhooks/github", [], b"{}", 0.0))

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, [*args, "--config", str(config)], env={"COLUMNS": "300"})

    listed = await asyncio.to_thread(run, "catalog", "list")
    assert listed.exit_code == 0, listed.output
    assert "│ [/]closed [bold]tag\\x1b[31mred │" in listed.stdout and "\x1b" not in listed.stdout
    deliveries = await asyncio.to_thread(run, "deliveries", "list")
    assert deliveries.exit_code == 0, deliveries.output
    assert "│ [bold]7 " in deliveries.stdout


async def test_catalog_commands_find_the_catalog_where_serve_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`target.path: ~/...` is expanded by serve; `catalog list` used to look for a folder named '~'
    (and a path of 5 was a TypeError traceback)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = write_config(tmp_path, target={"type": "local", "path": "~/hooks/catalog.db"})
    catalog = LocalCatalog(tmp_path / "home" / "hooks" / "catalog.db")
    await catalog.upsert([{"identifier": "1", "blueprint": "pr", "title": "found"}], MappingFlags())
    await catalog.close()
    listed = await asyncio.to_thread(CliRunner().invoke, app, ["catalog", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "found" in listed.stdout and "1 entity" in listed.stdout

    config = write_config(tmp_path, target={"type": "local", "path": 5})
    broken = await asyncio.to_thread(CliRunner().invoke, app, ["catalog", "list", "--config", str(config)])
    assert broken.exit_code == 2
    line = config.read_text().splitlines().index("target:") + 1
    assert broken.stderr == f"error: {config}:{line} (key target): target.path must be a non-empty string, got 5\n"


async def test_catalog_list_never_cuts_an_identifier_short(tmp_path: Path) -> None:
    """Piped, or in a narrow terminal, it showed "acme/some-very-long-reposi…": the key that
    `catalog get` needs was lost (found by probing). Long ones wrap instead."""
    identifier = "acme/some-very-long-repository-name-for-payments/pull/12345"
    catalog = LocalCatalog(tmp_path / "c.db")
    await catalog.upsert([{"identifier": identifier, "blueprint": "githubPullRequest", "title": "t"}], MappingFlags())
    await catalog.close()
    for width in ("80", "30"):
        listed = await asyncio.to_thread(CliRunner().invoke, app, ["catalog", "list", "--db", str(tmp_path / "c.db")],
                                         env={"COLUMNS": width})
        assert listed.exit_code == 0, listed.output
        cells = [line.split("│")[2].strip() for line in listed.stdout.splitlines() if line.count("│") == 4]
        assert "".join(cells) == identifier and "…" not in listed.stdout


async def test_deliveries_take_any_id_and_a_digit_delivery_id_is_retried_past_a_queue_id(tmp_path: Path) -> None:
    """`show 99999999999999999999` and `show ²` (digits to str.isdigit) ended in tracebacks; `retry 1`
    found queue id 1 (done) and missed the dead delivery whose sender's id is "1"."""
    config = write_config(tmp_path)
    async with await SqliteJournal.open(tmp_path / "state" / "journal.db") as journal:
        for delivery_id in ("victim", "1"):  # queue ids 1 and 2
            await journal.put(Delivery(delivery_id=delivery_id, method="POST", path="/h", headers=[], body=b"{}",
                                       received_at=0.0, processors=["p"], order_key=delivery_id))
        victim, dead = await journal.claim(2)
        await journal.ack(victim)
        await journal.dead_letter(dead, "boom")

    async def cli(*args: str) -> Any:  # the command runs its own event loop: in a thread
        return await asyncio.to_thread(CliRunner().invoke, app, [*args, "--config", str(config)],
                                       env={"COLUMNS": "300"})

    for args in (["show", "99999999999999999999"], ["show", "²"], ["retry", "99999999999999999999"]):
        result = await cli("deliveries", *args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert result.stderr.startswith("error: no ") and "Traceback" not in result.output, result.output
    result = await cli("deliveries", "list", "-n", "99999999999999999999")
    assert result.exit_code == 2 and "Input should be less than or equal to 1000000" in result.stderr
    assert (await cli("deliveries", "show", "1")).stdout.count('"delivery_id": "victim"') == 1  # the queue id first
    listed = json.loads((await cli("deliveries", "list", "--format", "json")).stdout)
    assert [(d["id"], d["delivery_id"], d["state"], d["superseded_by"]) for d in listed["deliveries"]] == [
        ("2", "1", "dead", None), ("1", "victim", "done", None)]
    assert listed["depth"]["dead"] == 1 and "body" not in listed["deliveries"][0]
    result = await cli("deliveries", "retry", "victim")
    assert (result.exit_code, result.stderr) == (1, "error: delivery victim is done, not dead or failed: nothing to "
                                                    "retry\n")
    result = await cli("deliveries", "retry", "1")
    assert result.exit_code == 0, result.output
    assert "delivery 1 is pending again" in result.stdout
    async with await SqliteJournal.open(tmp_path / "state" / "journal.db") as journal:
        assert [(d.delivery_id, d.state.value) for d in await journal.list()] == [("1", "pending"), ("victim", "done")]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
async def test_an_export_to_a_full_disk_is_one_line(tmp_path: Path, fmt: str) -> None:
    catalog = tmp_path / "catalog.db"
    local = LocalCatalog(catalog)
    local.import_entities([{"identifier": "api", "blueprint": "service", "title": "API"}], source="t")
    await local.close()
    command = [sys.executable, "-m", "ocean_hook", "catalog", "export", "--db", str(catalog), "-f", fmt]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "error: cannot write the output: No space left on device\n")


@pytest.fixture
def many_items(tmp_path: Path) -> list[str]:
    """A test-mapping run whose plan is far longer than a pipe holds (64 KiB)."""
    (tmp_path / "m.yml").write_text("resources:\n  - kind: thing\n    port:\n      entity:\n        mappings:\n"
                                    "          identifier: .id\n          blueprint: '\"thing\"'\n")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"id": f"e{n}"}) + "\n" for n in range(3000)))
    return [sys.executable, "-m", "ocean_hook", "test-mapping", "-m", str(tmp_path / "m.yml"),
            "-d", str(tmp_path / "d.jsonl")]


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_test_mapping_to_a_full_disk_is_one_line(many_items: list[str], fmt: str) -> None:
    """It was a traceback, in each of the three formats (found by probing)."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([*many_items, "-f", fmt], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "error: cannot write the output: No space left on device\n")


def test_a_reader_that_goes_away_ends_the_output_quietly(many_items: list[str]) -> None:
    """`ocean-hook test-mapping ... | head` printed a traceback (BrokenPipeError) and exited 1; it
    ends as a process SIGPIPE stops, 141, with nothing said."""
    reading = subprocess.Popen(many_items, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reading.stdout is not None and reading.stderr is not None
    assert reading.stdout.readline().startswith(b"+ create thing/e")
    reading.stdout.close()
    assert reading.wait(timeout=60) == 141
    assert reading.stderr.read() == b""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["test-mapping", "--help"]])
def test_version_and_help_to_a_full_disk_are_one_line(args: list[str]) -> None:
    """Click's own writes, outside any command: a traceback (found by probing)."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "ocean_hook", *args], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "error: cannot write the output: No space left on device\n")


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_output_is_utf8_whatever_the_locale_says(tmp_path: Path, fmt: str) -> None:
    """Under PYTHONIOENCODING=ascii (or LANG=C) an entity titled in Japanese was a traceback,
    exit 1, which CI reads as a mismatch (found by probing)."""
    (tmp_path / "m.yml").write_text("resources:\n  - kind: thing\n    port:\n      entity:\n        mappings:\n"
                                    "          identifier: .id\n          title: .title\n"
                                    "          blueprint: '\"thing\"'\n")
    (tmp_path / "d.json").write_text(json.dumps({"id": "x", "title": "日本\u00e9"}))
    done = subprocess.run([sys.executable, "-m", "ocean_hook", "test-mapping", "-m", str(tmp_path / "m.yml"),
                           "-d", str(tmp_path / "d.json"), "-f", fmt], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "日本é" in done.stdout.decode("utf-8")


@pytest.mark.parametrize(("args", "problem"), [
    (["check", "-q", "-f", "json"], "--quiet is for text output; --format json prints its whole document"),
    (["catalog", "list", "--db", "x.db", "--config", "nowhere.yaml"], "give --db or --config, not both"),
    (["catalog", "export", "--db", "x.db", "-c", "ocean-hook.yaml"], "give --db or --config, not both"),
])
def test_options_one_of_which_would_be_ignored_are_refused(tmp_path: Path, args: list[str], problem: str) -> None:
    """Taken without a word, one of them ignored (found by probing)."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert (result.exit_code, result.stderr) == (2, f"error: {problem}\n")


UNSET = "OCEAN_HOOK_TEST_NEVER_SET"


@pytest.mark.parametrize(("command", "place", "key"), [
    (["catalog", "import", "{tmp}/e.json"], {"state_dir": "${%s}{tmp}/elsewhere"}, "state_dir"),
    (["catalog", "list"], {"target": {"type": "local", "path": "${%s}{tmp}/elsewhere/c.db"}}, "target.path"),
    (["deliveries", "list"], {"state_dir": "${%s}{tmp}/elsewhere"}, "state_dir"),
    (["deliveries", "purge", "--older-than", "1d"], {"state_dir": "${%s}{tmp}/elsewhere"}, "state_dir"),
    (["deliveries", "list"], {"queue": {"type": "redis", "url": "${%s}"}}, "queue.url"),
    (["test-mapping", "-m", "{tmp}/mapping.yml", "-d", "{tmp}/e.json"],
     {"state_dir": "${%s}{tmp}/elsewhere"}, "state_dir"),
])
def test_a_place_made_of_an_unset_variable_is_named_not_read_as_empty(
    tmp_path: Path, command: list[str], place: dict[str, Any], key: str
) -> None:
    """`state_dir: ${DIR}/x` with DIR unset: `catalog import` wrote into /x, `deliveries list`
    looked there (found by probing); a Redis URL's variable was never named."""
    def filled(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: filled(v) for k, v in value.items()}
        return value.replace("%s", UNSET).replace("{tmp}", str(tmp_path))

    config = write_config(tmp_path, **filled(place))
    (tmp_path / "e.json").write_text("[]")
    result = CliRunner().invoke(app, [*(filled(w) for w in command), "--config", str(config)],
                                env={"COLUMNS": "300", UNSET: None})
    assert result.exit_code == 2, result.output
    line = next(x for x in result.stderr.splitlines() if UNSET in x)
    assert line.endswith(f"(key {key}): environment variable {UNSET} is not set"), result.stderr
    assert "got ''" not in result.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_the_catalog_needs_no_queue_variable(tmp_path: Path) -> None:
    """`catalog list` refused a config whose Redis URL variable was unset: it never opens the queue."""
    config = write_config(tmp_path, queue={"type": "redis", "url": f"${{{UNSET}}}"})
    result = CliRunner().invoke(app, ["catalog", "list", "--config", str(config)],
                                env={"COLUMNS": "300", UNSET: None})
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: no local catalog at {tmp_path / 'state' / 'catalog.db'} yet")


async def test_a_next_attempt_no_clock_shows_is_listed_as_it_is(tmp_path: Path) -> None:
    """A retry delay of .inf (refused now) left a journal whose `deliveries list` ended in an
    OverflowError (found by probing)."""
    config = write_config(tmp_path)
    async with await SqliteJournal.open(tmp_path / "state" / "journal.db") as journal:
        await journal.put(Delivery("far", "POST", "/webhooks/github", [], b"{}", 0.0))
        [claimed] = await journal.claim(1)
        await journal.retry_later(claimed, "boom", 1e300)
    listed = await asyncio.to_thread(CliRunner().invoke, app, ["deliveries", "list", "--config", str(config)],
                                     env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    assert "│ far " in listed.stdout and "1e+300" in listed.stdout
