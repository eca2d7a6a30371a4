"""`ocean-hook deliveries`: inspect, retry and purge journaled deliveries (SQLite or Redis)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import typer

from ocean_hook import render
from ocean_hook.cli.common import fail, run, stdout, user_errors
from ocean_hook.config import LONGEST_DURATION, load_config, parse_duration, say_duration
from ocean_hook.queue.base import Delivery, DeliveryState, Queue, QueueMissing, Requeued
from ocean_hook.runtime import journal_path, open_queue, queue_option_replaces, queue_spec_from_option
from ocean_hook.sqlitefiles import not_made_yet

T = TypeVar("T")
app = typer.Typer(
    help="Journaled deliveries: list, show, retry, purge.",
    no_args_is_help=True,
    epilog="Examples:\n\n  ocean-hook deliveries list --state dead\n\n  ocean-hook deliveries retry --all-dead",
)

CONFIG = typer.Option(Path("ocean-hook.yaml"), "--config", "-c", help="The ocean-hook.yaml file.")
QUEUE = typer.Option(None, "--queue", help="sqlite (default) or redis://host:6379/0.")


class ListFormat(StrEnum):
    text = "text"
    json = "json"


def _on_queue(config: Path, queue: str | None, work: Callable[[Queue], Awaitable[T]], *, looking: bool = False) -> T:
    loaded = load_config(config, inspection=True, needs=("state_dir", "queue"), overridden=queue_option_replaces(queue))
    spec = queue_spec_from_option(queue, loaded.queue)
    journal = journal_path(spec, loaded.state_dir)
    if journal is not None and not_made_yet(journal):  # looking must not make a journal
        raise fail(f"no journal at {journal} yet: serve creates it when it starts", 1)

    async def go() -> T:
        try:
            q = await open_queue(spec, loaded.state_dir, dedup_window_seconds=loaded.server.dedup_window_seconds,
                                 create=False, looking=looking)
        except QueueMissing as exc:
            raise fail(str(exc), 1) from None
        try:
            return await work(q)
        finally:
            await q.close()

    return run(go())


def _when(ts: Any) -> str:
    """A local time; a time no clock shows (a journal written before retry delays were capped)
    as it is, not an OverflowError."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""
    except (OverflowError, OSError, ValueError, TypeError):
        return str(ts)


@app.command("list", epilog="""
Examples:

  ocean-hook deliveries list

  ocean-hook deliveries list --state dead --limit 10

  ocean-hook deliveries list --queue redis://127.0.0.1:6379/0

  ocean-hook deliveries list --format json | jq -r '.deliveries[].delivery_id'
""")
@user_errors
def list_(
    state: DeliveryState | None = typer.Option(None, "--state", "-s", help="Only this state."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1_000_000, help="How many, newest first."),
    output: ListFormat = typer.Option(ListFormat.text, "--format", "-f",
                                      help="text (a table: long ids are cut), or json (everything, for scripts)."),
    config: Path = CONFIG,
    queue: str | None = QUEUE,
) -> None:
    """List deliveries, newest first, with their state, attempts and last error.

    A dead letter that a newer delivery of its resource replaced is shown as superseded, since
    `retry` leaves those dead: the reader sees why before asking."""
    async def work(q: Queue) -> tuple[list[Any], dict[str, str], dict[str, int]]:
        listed = await q.list(state, limit)
        any_dead = any(d.state is DeliveryState.DEAD for d in listed)
        return listed, await q.superseded() if any_dead else {}, await q.depth()

    deliveries, superseded, depth = _on_queue(config, queue, work, looking=True)
    if output is ListFormat.json:
        listed = [{**d.summary(), "superseded_by": superseded.get(d.id)} for d in deliveries]
        stdout().print(render.dumps({"deliveries": listed, "depth": depth}), markup=False, highlight=False)
        return
    rows = [
        (d.id, d.delivery_id, f"{d.state} (superseded by {superseded[d.id]})" if d.id in superseded else d.state,
         d.attempts, _when(d.received_at), _when(d.next_attempt_at), (d.last_error or "")[:80])
        for d in deliveries
    ]
    out = stdout()
    out.print(render.data_table(["id", "delivery id", "state", "attempts", "received", "next attempt", "last error"],
                                rows))
    out.print(", ".join(f"{count} {name}" for name, count in depth.items()))


@app.command("show", epilog="""
Examples:

  ocean-hook deliveries show 476193052:5f0c8a10-0863-11ef-9a3b-2e1d7c4b8f01

Exit code 1 when the delivery is not in the journal.
""")
@user_errors
def show(delivery: str = typer.Argument(..., help="Queue id or delivery id."), config: Path = CONFIG,
         queue: str | None = QUEUE) -> None:
    """One delivery's record as JSON (secret-bearing headers redacted, body size only)."""
    found = _on_queue(config, queue, lambda q: q.get(delivery), looking=True)
    if found is None:
        raise fail(f"no delivery {delivery!r} in the journal", 1)
    stdout().print(render.dumps(found.summary()), markup=False, highlight=False)


@app.command("retry", epilog="""
Examples:

  ocean-hook deliveries retry 476193052:5f0c8a10-0863-11ef-9a3b-2e1d7c4b8f01

  ocean-hook deliveries retry --all-dead

A dead letter after which a newer delivery of the same resource (order key) was applied is left
dead: retrying it would write its older content over the newer. --include-superseded retries
those too (right for processors that fetch the current state rather than use the payload).
Exit code 1 when the delivery is not dead or failed, or is superseded.
""")
@user_errors
def retry(
    delivery: str | None = typer.Argument(None, help="Queue id or delivery id."),
    all_dead: bool = typer.Option(False, "--all-dead", help="Every dead-lettered delivery."),
    include_superseded: bool = typer.Option(
        False, "--include-superseded", help="Also dead letters a newer delivery of the same resource has replaced."
    ),
    config: Path = CONFIG,
    queue: str | None = QUEUE,
) -> None:
    """Make dead (or failed) deliveries pending again, attempts reset; a running serve picks them up."""
    if all_dead == (delivery is not None):
        raise fail("give a delivery id or --all-dead (one of them)")

    async def work(q: Queue) -> tuple[Requeued, Delivery | None]:
        if delivery is None:
            return await q.requeue_dead(spare_superseded=not include_superseded), None
        requeued = await q.requeue(delivery, spare_superseded=not include_superseded)
        return requeued, (None if requeued.count or requeued.spared else await q.get(delivery))

    done, found = _on_queue(config, queue, work)
    out = stdout()
    if delivery is None:
        out.print(f"{done.count} dead deliveries are pending again")
        if done.spared:
            pairs = ", ".join(f"{old} (by {new})" for old, new in done.spared.items())
            out.print(f"{len(done.spared)} left dead, superseded by a newer delivery of the same resource: {pairs}; "
                      "--include-superseded retries them anyway", markup=False)
        return
    if done.spared:
        [newer] = done.spared.values()
        raise fail(f"delivery {delivery} was superseded by delivery {newer}, applied (or being applied) after it; "
                   "--include-superseded retries it anyway", 1)
    if not done.count and found is not None:  # there, but nothing to retry
        raise fail(f"delivery {delivery} is {found.state.value}, not dead or failed: nothing to retry", 1)
    if not done.count:
        raise fail(f"no dead or failed delivery {delivery!r} in the journal", 1)
    out.print(f"delivery {delivery} is pending again", markup=False)


@app.command("purge", epilog="""
Examples:

  ocean-hook deliveries purge --older-than 30d
""")
@user_errors
def purge(
    older_than: str = typer.Option(..., "--older-than", help="Age like 30d, 12h (done and dead only)."),
    config: Path = CONFIG,
    queue: str | None = QUEUE,
) -> None:
    """Forget done and dead deliveries older than this; pending work is never purged."""
    seconds = parse_duration(older_than)
    if seconds is None or seconds < 0:
        raise fail(f"--older-than must be a duration like 30d, 12h or 90m (at most {say_duration(LONGEST_DURATION)}), "
                   f"got {older_than!r}")
    count = _on_queue(config, queue, lambda q: q.purge(seconds))
    out = stdout()
    out.print(f"purged {count} deliveries")
    window = load_config(config, inspection=True).server.dedup_window_seconds
    if seconds < window:
        out.print(f"(what arrived in the last {say_duration(window)} still de-duplicates redeliveries: "
                  "server.dedup_window)", markup=False)
