"""`ocean-hook serve`: the webhook listener with its workers."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from ocean_hook.cli.common import fail, listening_line, run, setup_logging, user_errors
from ocean_hook.config import load_config
from ocean_hook.runtime import queue_option_replaces
from ocean_hook.service import ServeOptions, serve, tune_gc_for_serving
from ocean_hook.watchdog import STALLS_FILE, Watchdog


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class TargetChoice(StrEnum):
    local = "local"
    port = "port"
    dry_run = "dry-run"


EPILOG = """
Examples:

  ocean-hook serve --config ocean-hook.yaml

  ocean-hook serve --port 9000 --workers 8 --capture captures/ --log-format json

  ocean-hook serve --target dry-run          # log the plan of every delivery, write nothing

Exit codes: 0 stopped (SIGTERM or SIGINT) after draining; 1 cannot listen or capture where told
(a port in use, an address this machine lacks, a capture directory that cannot be made); 2 the
config, journal, queue or target cannot be used.
"""


@user_errors
def command(
    config: Path = typer.Option(Path("ocean-hook.yaml"), "--config", "-c", help="The ocean-hook.yaml file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port)."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Deliveries processed at once."),
    capture: Path | None = typer.Option(
        None, "--capture", help="Write each accepted delivery here as a capture file for replay."
    ),
    queue: str | None = typer.Option(None, "--queue", help="sqlite (default) or redis://host:6379/0."),
    target: TargetChoice | None = typer.Option(None, "--target", help="Override the config's target."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", help="text or json."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    """Run the webhook [bold]listener[/]: authenticate, journal, then map and apply each delivery."""
    if not host.strip():  # aiohttp would listen on every interface, and say http://:8000
        raise fail("--host is empty: give an address (0.0.0.0 or :: for every interface)")
    if verbose and quiet:
        raise fail("give --verbose or --quiet, not both")
    setup_logging(verbose=verbose, quiet=quiet, fmt=log_format.value)
    # what --queue or --target replaces is not read: its variables may be unset
    replaced = queue_option_replaces(queue) + ([("target",)] if target not in (None, TargetChoice.dry_run) else [])
    loaded = load_config(config, overridden=replaced)

    def ready(url: str) -> None:
        tune_gc_for_serving()  # this process now only serves: everything long-lived is loaded
        print(listening_line(url, log_format.value), file=sys.stderr, flush=True)

    stall = loaded.server.stall_timeout_seconds
    watchdog = Watchdog(stall, log_format.value, loaded.state_dir / STALLS_FILE) if stall > 0 else None
    options = ServeOptions(host, port, workers, capture, queue, target.value if target else None, watchdog=watchdog)
    run(serve(loaded, options, on_ready=ready))

