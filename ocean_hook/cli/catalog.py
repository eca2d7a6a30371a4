"""`ocean-hook catalog`: look into, export and import the embedded local catalog."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from ocean_hook import render
from ocean_hook.cli.common import fail, run, stdout, user_errors, write_stdout
from ocean_hook.config import load_config
from ocean_hook.datafiles import iter_items
from ocean_hook.sqlitefiles import not_made_yet
from ocean_hook.targets import catalog_path
from ocean_hook.targets.base import TargetError
from ocean_hook.targets.local import LocalCatalog

app = typer.Typer(
    help="The embedded local catalog (the default target).",
    no_args_is_help=True,
    epilog="Examples:\n\n  ocean-hook catalog list\n\n  ocean-hook catalog get githubRepository acme/api\n\n"
    "  ocean-hook catalog export > state.json",
)


class ExportFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"


def _catalog(config: Path | None, db: Path | None, *, create: bool = False) -> LocalCatalog:
    """The catalog to look into; only `import` may create one (a mistyped --db would otherwise
    leave an empty catalog file behind and list nothing, successfully)."""
    if db is not None and config is not None:  # one of them would be ignored
        raise fail("give --db or --config, not both")
    path = db if db is not None else _configured_catalog(config or DEFAULT_CONFIG)
    if not create and not_made_yet(path):
        raise fail(f"no local catalog at {path} yet: serve creates it when it starts (replay and import too)", 1)
    return LocalCatalog(path, looking=not create)


def _configured_catalog(config: Path) -> Path:
    loaded = load_config(config, inspection=True, needs=("state_dir", "target"))
    spec = loaded.target
    if spec.get("type", "local") != "local" and spec.get("read_from") != "local":
        raise fail(f"{config}: the target is '{spec.get('type')}', not the local catalog (use --db PATH)")
    try:
        return catalog_path(spec, loaded.state_dir)
    except ValueError as exc:
        raise fail(f"{loaded.where('target')}: {exc}") from None


DEFAULT_CONFIG = Path("ocean-hook.yaml")
CONFIG = typer.Option(None, "--config", "-c", help="The ocean-hook.yaml file (default: ocean-hook.yaml).")
DB = typer.Option(None, "--db", help="The catalog file itself, instead of the config's.")


async def _with(catalog: LocalCatalog, fn):  # type: ignore[no-untyped-def]
    """`fn(catalog)`; a catalog that is busy or damaged is one line (exit 2), never a traceback."""
    try:
        return fn(catalog)
    except TargetError as exc:
        raise fail(str(exc)) from None
    finally:
        await catalog.close()


@app.command("list", epilog="""
Examples:

  ocean-hook catalog list

  ocean-hook catalog list --blueprint githubPullRequest --config hooks/ocean-hook.yaml
""")
@user_errors
def list_(
    blueprint: str | None = typer.Option(None, "--blueprint", "-b", help="Only this blueprint."),
    config: Path | None = CONFIG,
    db: Path | None = DB,
) -> None:
    """List entities (blueprint, identifier, title)."""
    entities = run(_with(_catalog(config, db), lambda c: c.list_entities(blueprint)))
    rows = [(e.get("blueprint"), e.get("identifier"), e.get("title") or "") for e in entities]
    stdout().print(render.data_table(["blueprint", "identifier", "title"], rows, whole=["blueprint", "identifier"]))
    stdout().print(render.entities_text(len(entities)))


@app.command("get", epilog="""
Examples:

  ocean-hook catalog get githubPullRequest acme/api/pull/42

  ocean-hook catalog get githubRepository acme/api --db .ocean-hook/catalog.db

Exit code 1 when the entity is not in the catalog.
""")
@user_errors
def get(blueprint: str, identifier: str, config: Path | None = CONFIG, db: Path | None = DB) -> None:
    """Print one entity as JSON."""
    found = run(_with(_catalog(config, db), lambda c: c.list_entities(blueprint)))
    entity = next((e for e in found if e.get("identifier") == identifier), None)
    if entity is None:
        raise fail(f"no entity {blueprint}/{identifier} in the catalog", 1)
    stdout().print(render.dumps(entity), markup=False, highlight=False)


@app.command("export", epilog="""
Examples:

  ocean-hook catalog export > state.json            # then: test-mapping --state state.json

  ocean-hook catalog export --format jsonl | jq -r .identifier
""")
@user_errors
def export(
    output: ExportFormat = typer.Option(ExportFormat.json, "--format", "-f", help="json (a list) or jsonl."),
    config: Path | None = CONFIG,
    db: Path | None = DB,
) -> None:
    """Print every entity: a JSON list usable as `test-mapping --state`, or JSON Lines."""
    entities = run(_with(_catalog(config, db), lambda c: c.export()))
    if output is ExportFormat.jsonl:
        write_stdout("".join(json.dumps(entity, ensure_ascii=False) + "\n" for entity in entities))
    else:
        write_stdout(render.dumps(entities) + "\n")


@app.command("import", epilog="""
Examples:

  ocean-hook catalog import state.json

  ocean-hook catalog import entities.jsonl --db /tmp/catalog.db
""")
@user_errors
def import_(file: Path, config: Path | None = CONFIG, db: Path | None = DB) -> None:
    """Load entities from a JSON list or JSON Lines file (replacing those with the same key)."""
    entities = list(iter_items(file))
    count = run(_with(_catalog(config, db, create=True), lambda c: c.import_entities(entities, source=str(file))))
    stdout().print(f"imported {render.entities_text(count)}")
