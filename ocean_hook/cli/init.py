"""`ocean-hook init`: write a starter config and mapping, then say what to do next."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from ocean_hook.cli.common import stderr, stdout, user_errors
from ocean_hook.render import escape_text
from ocean_hook.starter import BLUEPRINTS_FILE, STARTERS, new_secret, next_steps, write_starter

Source = StrEnum("Source", {name: name for name in STARTERS})  # type: ignore[misc]

EPILOG = """
Examples:

  ocean-hook init                                # GitHub, into the current directory

  ocean-hook init --source stripe --dir hooks/

  ocean-hook init --force                        # overwrite the three files it writes

  secret="$(ocean-hook init --quiet)" && eval "$secret"   # write the files, export the fresh secret

Exit codes: 0 written; 1 a file already exists (nothing is written without --force); 2 a file
cannot be written there (nothing is written).
"""


@user_errors
def command(
    source: Source = typer.Option(Source("github"), "--source", "-s", help="Where the webhooks come from."),  # type: ignore[valid-type]
    directory: Path = typer.Option(Path("."), "--dir", "-d", help="Where to write the files.", file_okay=False),
    force: bool = typer.Option(False, "--force", help="Overwrite files that already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the 'export SECRET=...' line."),
) -> None:
    """[bold]Start[/] here: write ocean-hook.yaml, a mapping and its blueprints for one source, print the next
    steps."""
    starter = STARTERS[str(source)]
    written = write_starter(starter.source, directory, force=force)
    secret = new_secret() if starter.secret_from_sender is None else None
    out = stdout()
    if quiet:
        if secret is not None:
            print(f"export {starter.secret_env}={secret}")
        else:  # on stderr: standard output is for `eval`
            stderr().print(f"export {starter.secret_env} yourself: the secret is made by {starter.source}",
                           markup=False)
        return
    for path in written:
        out.print(f"[green]wrote[/] {escape_text(str(path))}")
    if (kept := directory / BLUEPRINTS_FILE) not in written:
        out.print(f"kept {escape_text(str(kept))} as it was: not one init wrote (the {starter.source} blueprints are "
                  "in ocean-hook's mappings/ and in its init templates)")
    out.print()
    for line in next_steps(starter, directory, secret):
        out.print(escape_text(line))
