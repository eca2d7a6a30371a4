"""`ocean-hook replay`: captured deliveries through the listener's pipeline, or to a listener."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import aiohttp
import typer
from rich.progress import Progress

from ocean_hook import render
from ocean_hook.cli.common import run, stderr, stdout, user_errors
from ocean_hook.config import load_config
from ocean_hook.diff import summarize
from ocean_hook.replay import ReplayOutcome, expand_files, load_event, replay_event, send_event
from ocean_hook.runtime import Runtime


class Format(StrEnum):
    text = "text"
    json = "json"


EPILOG = """
Examples:

  ocean-hook replay captures/                       # every capture, applied to the target

  ocean-hook replay capture.json --dry-run          # print the plan, write nothing

  ocean-hook replay pr.json --path /webhooks/github --header 'X-GitHub-Event: pull_request' --dry-run

  ocean-hook replay captures/ --to http://127.0.0.1:8000   # send them to a running listener

Exit code 1 when any delivery failed.
"""


@user_errors
def command(
    files: list[Path] = typer.Argument(..., help="Capture files, bare JSON payloads, or directories of them."),
    config: Path = typer.Option(Path("ocean-hook.yaml"), "--config", "-c", help="The ocean-hook.yaml file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan of changes, write nothing."),
    output: Format = typer.Option(Format.text, "--format", "-f", help="text or json."),
    verify: bool = typer.Option(False, "--verify", help="Re-check signatures (timestamp age ignored)."),
    to: str | None = typer.Option(None, "--to", help="Send the captured requests to this listener URL instead."),
    path: str | None = typer.Option(None, "--path", help="For bare payloads: the listener path."),
    header: list[str] = typer.Option([], "--header", "-H", help="For bare payloads: 'Name: value' (repeatable)."),
) -> None:
    """[bold]Replay[/] captured deliveries through the same pipeline as the listener."""
    loaded = load_config(config)
    paths = expand_files(files)
    outcomes = run(_replay_all(paths, loaded, dry_run=dry_run, verify=verify, to=to, path=path, headers=header))
    _print(outcomes, output, dry_run=dry_run)
    raise typer.Exit(1 if any(o.status == "failed" for o in outcomes) else 0)


async def _replay_all(paths: list[Path], config, *, dry_run, verify, to, path, headers) -> list[ReplayOutcome]:  # type: ignore[no-untyped-def]
    events = [(str(p), load_event(p, path=path, headers=headers)) for p in paths]
    outcomes: list[ReplayOutcome] = []
    with Progress(console=stderr(), transient=True, disable=len(events) < 2) as progress:
        task = progress.add_task("replaying", total=len(events))
        if to:
            async with aiohttp.ClientSession() as session:
                for name, event in events:
                    outcomes.append(await send_event(name, event, to, session))
                    progress.advance(task)
            return outcomes
        runtime = Runtime.build(config, target="dry-run" if dry_run else None)
        try:
            for name, event in events:
                outcomes.append(await replay_event(name, event, config, runtime, verify=verify, dry_run=dry_run))
                progress.advance(task)
        finally:
            await runtime.close()
    return outcomes


def _print(outcomes: list[ReplayOutcome], output: Format, *, dry_run: bool) -> None:
    out = stdout()
    if output is Format.json:
        out.print(render.dumps([o.to_json() for o in outcomes]), markup=False, highlight=False)
        return
    for o in outcomes:
        detail = o.error or (o.admission.reason if o.admission and o.status == "skipped" else "")
        if o.sent_status is not None:
            detail = f"answered {o.sent_status}" + (f": {o.error}" if o.error else "")
        render.print_outcome_header(out, o.file, o.status, detail)
        if o.result is not None:
            for change in o.result.changes:
                render.print_change(out, change)
            if dry_run:
                out.print(render.escape_text(render.summary_line(summarize(o.result.changes))))
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("processed", "sent", "skipped", "failed")}
    if not counts["sent"]:
        counts.pop("sent")
    out.print(render.counts_table("replay" + (" (dry run)" if dry_run else ""), counts))
