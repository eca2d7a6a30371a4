"""The `ocean-hook` command: a thin Typer layer over the pipeline; rendering lives in render.py."""

from __future__ import annotations

import sys

import typer

from ocean_hook import __version__
from ocean_hook.cli import catalog, check, deliveries, init, replay, serve, test_mapping
from ocean_hook.cli.common import OutputFailed, output_failed, utf8_output

app = typer.Typer(
    name="ocean-hook",
    help="Keep a Port software catalog up to date from webhooks, and test jq mappings in CI.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    epilog="Examples:\n\n  ocean-hook init --source github\n\n  ocean-hook check\n\n  ocean-hook serve\n\n"
    "  ocean-hook test-mapping --mapping port-app-config.yml --data items.json",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ocean-hook {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Keep a Port software catalog up to date from webhooks, and test jq mappings in CI."""


app.command("test-mapping", epilog=test_mapping.EPILOG)(test_mapping.command)
app.command("serve", epilog=serve.EPILOG)(serve.command)
app.command("replay", epilog=replay.EPILOG)(replay.command)
app.command("init", epilog=init.EPILOG)(init.command)
app.command("check", epilog=check.EPILOG)(check.command)
app.add_typer(catalog.app, name="catalog")
app.add_typer(deliveries.app, name="deliveries")


def main() -> None:
    """The `ocean-hook` script and `python -m ocean_hook`."""
    utf8_output()
    try:
        app(prog_name="ocean-hook")
    except OSError as exc:  # --version or --help to a full disk: Click's own writes, outside the commands
        sys.exit(output_failed(OutputFailed(exc)).exit_code)
