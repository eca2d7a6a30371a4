"""`ocean-hook check`: validate the config and its mapping, list every problem, start nothing."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from ocean_hook import render
from ocean_hook.check import check
from ocean_hook.cli.common import fail, stderr, stdout, user_errors


class Format(StrEnum):
    text = "text"
    json = "json"


EPILOG = """
Examples:

  ocean-hook check                                   # ./ocean-hook.yaml and its mapping

  ocean-hook check --config mappings/github/ocean-hook.yaml

  ocean-hook check --no-env --format json            # in CI, where the webhook secrets are absent

Checks YAML and schema (file:line), jq in the mapping and the processors, processor kinds
against the mapping, environment variables, secrets and the target. Exit codes: 0 clean;
1 problems (all of them are listed).
"""


@user_errors
def command(
    config: Path = typer.Option(Path("ocean-hook.yaml"), "--config", "-c", help="The ocean-hook.yaml file."),
    output: Format = typer.Option(Format.text, "--format", "-f", help="text or json."),
    no_env: bool = typer.Option(
        False, "--no-env", help="Don't require environment variables and secrets (for CI)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print problems only: no warnings, no summary."),
) -> None:
    """[bold]Check[/] the config and its mapping without starting anything; list every problem."""
    if quiet and output is not Format.text:  # as test-mapping says it
        raise fail(f"--quiet is for text output; --format {output.value} prints its whole document")
    report = check(config, require_env=not no_env)
    if output is Format.json:
        stdout().print(render.dumps(report.to_json()), markup=False, highlight=False)
        raise typer.Exit(0 if report.ok else 1)
    out, err = stdout(), stderr()
    for problem in report.problems:
        out.print(f"[red]error:[/] {render.escape_text(problem)}")
    if not quiet:
        for warning in report.warnings:
            err.print(f"[yellow]warning:[/] {render.escape_text(warning)}")
        out.print(f"[{'green' if report.ok else 'red'}]{render.escape_text(report.summary())}[/]")
    raise typer.Exit(0 if report.ok else 1)
