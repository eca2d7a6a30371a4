"""`ocean-hook test-mapping`: dry-run jq mappings against sample data, print the plan."""

from __future__ import annotations

import contextlib
import difflib
import json
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from ocean_hook import render
from ocean_hook.cli.common import fail, run, stderr, stdout, user_errors
from ocean_hook.config import Config, load_config
from ocean_hook.datafiles import iter_items, load_json, load_state
from ocean_hook.diff import Change
from ocean_hook.errors import InputError
from ocean_hook.jsontext import same
from ocean_hook.mapping.engine import MappedEntity, Mapping, ResourceMapper
from ocean_hook.printable import printable
from ocean_hook.report import MappingReport, build_report, state_lookup
from ocean_hook.runtime import make_target
from ocean_hook.sqlitefiles import not_made_yet
from ocean_hook.targets import catalog_path, reads_local_catalog
from ocean_hook.targets.base import TargetError
from ocean_hook.watchdog import Watchdog


class Format(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


EPILOG = """
Examples:

  ocean-hook test-mapping --mapping mappings/github/port-app-config.yml --data prs.json

  ocean-hook test-mapping --mapping m.yml --kind pull-request --data prs.jsonl --state export.json

  ocean-hook test-mapping --mapping m.yml --data prs.json --expect expected.json --format markdown

Exit codes: 0 clean; 1 mapping errors, misconfigurations, skipped items or mapping warnings (a key that
nearly is Port's, such as selectr:) with --strict, or a mismatch with --expect; 2 a usage or input error;
137 (killed) when jq ran for --stall-timeout seconds on one batch of items without end: a jq program that
never ends on some item.
"""


class _LazyProgress:
    """A spinner on stderr that appears only once the work has taken more than a second."""

    delay = 1.0

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.progress is None and time.monotonic() - self.started > self.delay:
            self.progress = Progress(
                SpinnerColumn(), TextColumn("mapping: {task.completed:,} items"), TimeElapsedColumn(),
                console=stderr(), transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("map", total=None)
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@user_errors
def command(
    mapping: Path | None = typer.Option(
        None, "--mapping", "-m", help="Port port-app-config mapping (YAML); with --config, the config's by default."
    ),
    data: Path = typer.Option(
        ..., "--data", "-d", help="Raw items: a JSON object, array or JSON Lines (- reads standard input)."
    ),
    kind: str | None = typer.Option(None, "--kind", "-k", help="Only the resources of this kind."),
    state: Path | None = typer.Option(
        None, "--state", "-s", help="Current Port entities (JSON list) to diff against; empty if omitted."
    ),
    expect: Path | None = typer.Option(None, "--expect", help="Compare the JSON result with this file."),
    update_expected: bool = typer.Option(
        False, "--update-expected", help="With --expect: rewrite the file with the current result."
    ),
    output: Format = typer.Option(Format.text, "--format", "-f", help="text, json or markdown."),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 1 when any field is misconfigured, any item skipped (no identifier) or the "
        "mapping has a warning (a key that nearly is Port's: selectr)."
    ),
    allow_env: bool = typer.Option(
        False, "--allow-env", help="Let jq read the environment (env, $ENV). Off: secrets stay out."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary line."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Diff against the live state of this config's target (read-only)."
    ),
    stall_timeout: float = typer.Option(
        60.0, "--stall-timeout", min=0, help="Stop (exit 137) when jq runs this many seconds on one batch of items "
        "without end (0: never).",
    ),
) -> None:
    """Dry-run jq [bold]mappings[/] against sample data and print the Port changes they would make."""
    # without --mapping, the config's is the one read: its variables are needed then too
    needs = ("state_dir", "target") if mapping is not None else ("state_dir", "target", "mapping")
    loaded = load_config(config, inspection=True, needs=needs) if config is not None else None
    # the config's `jq: {allow_env: true}` too: serve's jq reads the environment, so must this run's
    if mapping is None:
        if loaded is None:
            raise fail("give --mapping FILE (or --config FILE, whose mapping is then used)")
        mapping = loaded.mapping_path
    compiled = Mapping.load(mapping, allow_env=allow_env or (loaded is not None and loaded.allow_env_in_jq))
    mappers = compiled.for_kind(kind)
    if not mappers:
        raise fail(f"{mapping}: no resource of kind '{kind}' (kinds: {', '.join(compiled.kinds)})")
    if state is not None and config is not None:
        raise fail("give --state or --config, not both")
    if str(data) == "-" and str(state) == "-":  # the state would be read from what is left of the data
        raise fail("--data and --state cannot both read standard input (-): give one of them a file")
    if expect is not None and not update_expected and not expect.exists():
        raise fail(f"{expect}: file not found (use --update-expected to create it)")
    if update_expected and expect is None:
        raise fail("--update-expected needs --expect FILE, the file to write")
    if quiet and output is not Format.text:
        raise fail(f"--quiet is for text output; --format {output.value} prints its whole document")
    # on stderr in every format (stdout stays one JSON or markdown document), as `check` says them;
    # --strict fails on them as on misconfigured fields, and then says them even with --quiet
    warnings = compiled.config.warnings
    if not quiet or strict:
        for warning in warnings:
            stderr().print(f"[yellow]warning:[/] {render.escape_text(warning)}")

    streaming = output is Format.text and expect is None
    out, err = stdout(), stderr()
    # a plan printed as it comes to the same terminal would tangle with the spinner's line
    progress = _LazyProgress(err.is_terminal and not (streaming and not quiet and out.is_terminal))

    # jq holds the GIL: a program that never ends leaves nothing in this process able to stop it
    watchdog = Watchdog.for_command("test-mapping", stall_timeout)

    def on_batch(done: int, changes: list[Change], entities: list[MappedEntity]) -> None:
        progress.update(done)
        if streaming and not quiet:
            render.print_changes(out, changes)

    with contextlib.ExitStack() as stack:
        if watchdog is not None:
            stack.enter_context(watchdog.beating_thread())
        on_chunk = None if watchdog is None else lambda start, size: watchdog.now_on(_items(start, size))
        try:
            report = run(_report(compiled, mappers, data, state, loaded, on_batch, on_chunk, keep=not streaming))
        finally:
            progress.stop()
    exit_code = max(_exit_code(report, strict), 1 if strict and warnings else 0)
    if expect is not None:
        exit_code = max(exit_code, _check_expectation(report, expect, update_expected))
    _print(report, output, streaming=streaming, quiet=quiet)
    raise typer.Exit(exit_code)


async def _report(
    compiled: Mapping,
    mappers: list[ResourceMapper],
    data: Path,
    state: Path | None,
    loaded: Config | None,
    on_batch: Callable[[int, list[Change], list[MappedEntity]], None],
    on_chunk: Callable[[int, int], None] | None,
    *,
    keep: bool,
) -> MappingReport:
    """Map and diff against a --state file, or read-only against the configured target."""
    if loaded is None:
        lookup = state_lookup(load_state(state) if state else {})
        return await build_report(mappers, iter_items(data), lookup, compiled.flags, on_batch=on_batch,
                                  on_chunk=on_chunk, keep=keep)
    config = loaded.file
    _require_local_catalog(loaded, config)
    target = make_target(loaded, "dry-run")  # dry-run: reads, never writes
    try:
        return await build_report(
            mappers, iter_items(data), target.get_entities, compiled.flags, on_batch=on_batch, on_chunk=on_chunk,
            keep=keep,
        )
    except TargetError as exc:  # no current state, no diff: nothing to report but why
        raise InputError(f"cannot read the current entities from the target: {exc}", where=str(config)) from None
    finally:
        await target.close()


def _items(start: int, size: int) -> str:
    """The batch of data items being mapped, as the watchdog names it if jq never ends on one
    (counted from 0, as the errors count them)."""
    return f"items {start:,} to {start + size - 1:,} of the data (counted from 0)"


def _require_local_catalog(loaded: Config, config: Path) -> None:
    """A local catalog that is not there yet would be created empty, and every entity diffed as
    new: a wrong `state_dir` would pass as "everything to create"."""
    if not reads_local_catalog(loaded.target):
        return
    try:
        path = catalog_path(loaded.target, loaded.state_dir)
    except ValueError:
        return  # make_target names the bad path
    if not_made_yet(path):
        raise InputError(f"no local catalog at {path} yet: serve creates it when it starts", where=str(config))


def _exit_code(report: MappingReport, strict: bool) -> int:
    if report.counts["errors"]:
        return 1
    if strict and (report.counts["misconfigured"] or report.counts["skipped"]):
        return 1
    return 0


def _print(report: MappingReport, output: Format, *, streaming: bool, quiet: bool) -> None:
    out, err = stdout(), stderr()
    if output is Format.json:
        out.print(render.dumps(report.to_json()), markup=False, highlight=False)
        return
    if output is Format.markdown:
        out.print(
            render.plan_markdown(
                report.changes, report.counts,
                misconfigured=report.misconfigured.rows(), errors=report.errors,
            ),
            markup=False, highlight=False,
        )
        return
    if not streaming and not quiet:
        render.print_changes(out, report.changes)
    if not quiet:
        render.print_misconfigured(err, report.misconfigured.rows())
    render.print_errors(err, report.errors)
    if report.counts["errors"] > len(report.errors):
        err.print(f"[red]... and {report.counts['errors'] - len(report.errors):,} more errors[/]")
    out.print(f"[bold]{render.escape_text(render.summary_line(report.counts))}[/]")


def _check_expectation(report: MappingReport, expect: Path, update: bool) -> int:
    actual = report.to_json()
    if update:
        try:
            expect.parent.mkdir(parents=True, exist_ok=True)
            expect.write_text(render.dumps(actual) + "\n", encoding="utf-8")
        except OSError as exc:  # a parent that is a file fails the mkdir with "File exists"
            reason = f"{expect.parent} is not a directory" if isinstance(exc, FileExistsError) else exc.strerror
            raise InputError(f"cannot write the expected result: {reason}", where=str(expect)) from None
        stderr().print(f"wrote {expect}", markup=False)
        return 0
    expected = load_json(expect)
    if not isinstance(expected, dict):  # a data or export file given by mistake: not worth a diff
        raise InputError("not an expected result (the JSON object `test-mapping --format json` writes; make one "
                         "with --update-expected)", where=str(expect))
    actual = json.loads(json.dumps(actual, default=str))
    if same(expected, actual):
        return 0
    err = stderr()
    # plain, never coloured: CI scripts look for this line (FORCE_COLOR would hide it from grep)
    err.print(f"result differs from {expect}:", markup=False, highlight=False)
    differences = _differences(expected, actual)
    for where, before, after in differences[:MAX_DIFFERENCES]:
        for line in difflib.unified_diff(_lines(before), _lines(after),
                                         fromfile=f"{expect} {where}", tofile=f"actual {where}", lineterm=""):
            err.print(printable(line), markup=False, highlight=False)
    if len(differences) > MAX_DIFFERENCES:
        err.print(f"... and more: the first {MAX_DIFFERENCES} differing items are shown", markup=False)
    return 1


#: items shown when a result differs from --expect (a whole-document diff of 10,000 items took minutes)
MAX_DIFFERENCES = 20


#: a value one side of the diff does not have (an item past the end of a list, a missing key):
#: shown as no lines, not as `null`, which a document can hold
_ABSENT = object()


def _lines(value: Any) -> list[str]:
    """Split on newlines only: the JSON text of a payload value keeps U+2028 as it is, and
    `str.splitlines` would make a diff line of what follows it."""
    return [] if value is _ABSENT else render.dumps(value).split("\n")


def _differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(where, expected, actual) per differing top-level value, lists item by item, up to one more
    than is shown."""
    found: list[tuple[str, Any, Any]] = []
    for key in dict.fromkeys([*expected, *actual]):
        before, after = expected.get(key, _ABSENT), actual.get(key, _ABSENT)
        if isinstance(before, list) and isinstance(after, list):
            for i in range(max(len(before), len(after))):
                item_before = before[i] if i < len(before) else _ABSENT
                item_after = after[i] if i < len(after) else _ABSENT
                if not same(item_before, item_after):
                    found.append((f"{key}[{i}]", item_before, item_after))
                    if len(found) > MAX_DIFFERENCES:
                        break
        elif not same(before, after):
            found.append((key, before, after))
        if len(found) > MAX_DIFFERENCES:
            break
    return found
