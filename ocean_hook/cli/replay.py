"""`ocean-hook replay`: captured deliveries through the listener's pipeline, or to a listener."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import aiohttp
import typer
from rich.progress import Progress

from ocean_hook import render
from ocean_hook.cli.common import OutputFailed, fail, run, stderr, stdout, user_errors
from ocean_hook.config import Config, load_config
from ocean_hook.errors import InputError
from ocean_hook.events import WebhookEvent
from ocean_hook.fetch import is_http_url
from ocean_hook.replay import (
    ReplayOutcome,
    bare_payload_headers,
    expand_files,
    load_outcome_or_event,
    replay_event,
    replay_runtime,
    send_event,
)
from ocean_hook.watchdog import Watchdog


class Format(StrEnum):
    text = "text"
    json = "json"


EPILOG = """
Examples:

  ocean-hook replay captures/                       # every capture, applied to the target

  ocean-hook replay capture.json --dry-run          # print the plan, write nothing

  ocean-hook replay pr.json --path /webhooks/github --header 'X-GitHub-Event: pull_request' --dry-run

  ocean-hook replay captures/ --to http://127.0.0.1:8000   # send them to a running listener

  ocean-hook replay captures/ --verify --format json       # per delivery: processors, kinds,
                                                           # auth, validation, changes

A directory replays its *.json files in name order (the listener names captures by arrival
time). Captures redact secret headers (X-Gitlab-Token, Authorization): sent with --to, or
checked with --verify, such deliveries fail authentication.

Exit code 1 when any delivery failed (rejected, unreadable, or failed to process); 137
(killed) when nothing ran for --stall-timeout seconds: a jq program that never ends.
"""


@user_errors
def command(
    files: list[Path] = typer.Argument(..., help="Capture files, bare JSON payloads, or directories of them."),
    config: Path = typer.Option(Path("ocean-hook.yaml"), "--config", "-c", help="The ocean-hook.yaml file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan of changes, write nothing."),
    output: Format = typer.Option(Format.text, "--format", "-f", help="text, or json (one object per delivery)."),
    verify: bool = typer.Option(False, "--verify", help="Re-check signatures (timestamp age ignored)."),
    to: str | None = typer.Option(None, "--to", help="Send the captured requests to this listener URL instead."),
    path: str | None = typer.Option(
        None, "--path", help="The files are bare payloads sent to this listener path (not captures)."
    ),
    header: list[str] = typer.Option([], "--header", "-H", help="For bare payloads: 'Name: value' (repeatable)."),
    stall_timeout: float = typer.Option(
        60.0, "--stall-timeout", min=0, help="Stop (exit 137) when nothing has run for this many seconds: a jq "
        "program that never ends (0: never).",
    ),
) -> None:
    """[bold]Replay[/] captured deliveries through the same pipeline as the listener."""
    _check_options(to, dry_run=dry_run, verify=verify, path=path, header=header)
    # with --to, the listener's config is the one; without --verify, no secret is needed
    loaded = None if to is not None else load_config(config, secrets=verify)
    found = expand_files(files)
    # jq holds the GIL: a program that never ends leaves nothing in this process able to stop it
    watchdog = Watchdog.for_command("replay", stall_timeout) if to is None else None
    printer = _Printer(output, dry_run=dry_run)
    try:
        read = functools.partial(load_outcome_or_event, path=path, headers=header)
        run(_replay_all(found, loaded, read, printer, verify=verify, to=to, watchdog=watchdog))
    except KeyboardInterrupt:  # what was printed stays a whole JSON document
        printer.close()
        raise
    printer.close()
    raise typer.Exit(1 if printer.counts["failed"] else 0)


def _check_options(to: str | None, *, dry_run: bool, verify: bool, path: str | None, header: list[str]) -> None:
    """Once, up front: a mistyped `--to` would otherwise fail every file with a puzzling reason,
    and an option that cannot apply would be ignored without a word."""
    if to is not None and not is_http_url(to):
        raise fail(f"--to must be the http:// or https:// URL of a running listener, got {to!r}")
    if to is not None and dry_run:
        raise fail("--dry-run cannot go with --to: the listener applies what it accepts (replay without --to "
                   "for a dry run here)")
    if to is not None and verify:
        raise fail("--verify cannot go with --to: the listener checks the signatures itself")
    if header and path is None:
        raise fail("--header is for bare payloads, with --path (a capture file brings its own headers)")
    try:  # else every file failed alike, exit 1
        bare_payload_headers(path, header)
    except InputError as exc:
        raise fail(str(exc)) from None


async def _replay_all(
    files: list[Path], config: Config | None, read: Callable[[Path], WebhookEvent | ReplayOutcome], printer: _Printer,
    *, verify: bool, to: str | None, watchdog: Watchdog | None,
) -> None:
    """Each file read (`read`: a capture, or a bare payload), replayed and printed in turn, then
    let go: a folder of 9,000 captures,
    all read first and every outcome kept to the end, took 500 MB (1.6 GB in JSON)."""
    seen: dict[tuple[str, str, bytes], str] = {}  # (path, delivery id, body digest) -> the file that carried it first
    # on a terminal, a progress line would tangle with the outcomes printed as they come
    with Progress(console=stderr(), transient=True, disable=len(files) < 2 or sys.stdout.isatty()) as progress:
        task = progress.add_task("replaying", total=len(files))
        async with contextlib.AsyncExitStack() as stack:
            if watchdog is not None:
                stack.enter_context(watchdog.running())
            if to:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            else:
                assert config is not None  # loaded whenever there is no --to
                runtime = replay_runtime(config, dry_run=printer.dry_run)
                stack.push_async_callback(runtime.close)
            for file in files:
                item = read(file)
                if isinstance(item, ReplayOutcome):
                    printer.add(item)
                elif to:
                    printer.add(await send_event(str(file), item, to, session))
                else:
                    printer.add(await replay_event(str(file), item, runtime.config, runtime, verify=verify, seen=seen))
                progress.advance(task)


class _Printer:
    """Each outcome printed as it comes (in JSON, one element of the array at a time); only
    the counts are kept. Output that fails (`| head`) stops the printing, not the replay: the
    files are applied all the same, and the failure is said at the end."""

    def __init__(self, output: Format, *, dry_run: bool) -> None:
        self.out, self.output, self.dry_run = stdout(), output, dry_run
        self.counts: Counter[str] = Counter()
        self.failed: OutputFailed | None = None

    def add(self, o: ReplayOutcome) -> None:
        self.counts[o.status] += 1
        if self.failed is None:
            try:
                self._print(o)
            except OutputFailed as exc:
                self.failed = exc

    def _print(self, o: ReplayOutcome) -> None:
        if self.output is Format.json:  # as json.dumps(list, indent=2) writes the whole array
            opening = "[\n" if sum(self.counts.values()) == 1 else ",\n"
            # split on "\n" alone: a payload's U+2028 is a character inside a JSON string
            element = "\n".join("  " + line for line in render.dumps(o.to_json()).split("\n"))
            self.out.print(opening + element, end="", markup=False, highlight=False)
            return
        render.print_outcome_header(self.out, o.file, o.status, o.detail())
        if o.result is not None:
            for change in o.result.changes:
                render.print_change(self.out, change)
            summary = o.result.summary()
            if self.dry_run or any(summary[k] for k in ("filtered", "skipped", "misconfigured")):
                self.out.print(render.escape_text(render.summary_line(summary)))
            render.print_misconfigured(self.out, o.misconfigured())

    def close(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self.output is Format.json:
            self.out.print("\n]" if self.counts else "[]", markup=False, highlight=False)
            return
        counts = {s: self.counts[s] for s in ("processed", "sent", "skipped", "failed")}
        if not counts["sent"]:
            counts.pop("sent")
        self.out.print(render.counts_table("replay" + (" (dry run)" if self.dry_run else ""), counts))
