"""The local SQLite catalog, on real files in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.errors import InputError
from ocean_hook.mapping.models import MappingFlags
from ocean_hook.targets import DryRunTarget, LocalCatalog, PortTarget, build_target
from ocean_hook.targets.base import TargetError
from ocean_hook.targets.local import SEARCH_QUERY_ERROR

MERGE = MappingFlags(enable_merge_entity=True, delete_dependent_entities=True)
REPLACE = MappingFlags(enable_merge_entity=False, delete_dependent_entities=False)


def svc(ident: str, **props) -> dict:
    return {"identifier": ident, "blueprint": "service", "title": ident.upper(), "properties": props}


@pytest.fixture
async def catalog(tmp_path: Path):
    cat = LocalCatalog(tmp_path / "state" / "catalog.db")
    yield cat
    await cat.close()


def updated_at(path: Path, blueprint: str, identifier: str) -> str | None:
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT updated_at FROM entities WHERE blueprint = ? AND identifier = ?",
            (blueprint, identifier),
        ).fetchone()
    return row and row[0]


async def test_create_then_read_back(catalog: LocalCatalog):
    outcomes = await catalog.upsert([svc("api", lang="py"), svc("web", lang="ts")], MERGE)
    assert [(o.key, o.ok) for o in outcomes] == [(("service", "api"), True), (("service", "web"), True)]
    found = await catalog.get_entities([("service", "api"), ("service", "nope"), ("team", "api")])
    assert found == {("service", "api"): svc("api", lang="py")}
    with sqlite3.connect(catalog.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_merge_keeps_other_properties_and_relations(catalog: LocalCatalog):
    first = {**svc("api", lang="py", tier=1), "relations": {"team": "core", "deps": ["db"]}}
    await catalog.upsert([first], MERGE)
    await catalog.upsert(
        [
            {
                "identifier": "api",
                "blueprint": "service",
                "properties": {"tier": 2},
                "relations": {"deps": ["db", "cache"]},
            }
        ],
        MERGE,
    )
    got = (await catalog.get_entities([("service", "api")]))[("service", "api")]
    assert got == {
        "identifier": "api",
        "blueprint": "service",
        "title": "API",
        "properties": {"lang": "py", "tier": 2},
        "relations": {"team": "core", "deps": ["db", "cache"]},
    }


async def test_replace_drops_what_the_new_entity_lacks(catalog: LocalCatalog):
    await catalog.upsert([{**svc("api", lang="py", tier=1), "relations": {"team": "core"}}], REPLACE)
    new = {"identifier": "api", "blueprint": "service", "properties": {"tier": 2}}
    await catalog.upsert([new], REPLACE)
    assert (await catalog.get_entities([("service", "api")]))[("service", "api")] == new


async def test_unchanged_upsert_writes_nothing(catalog: LocalCatalog):
    await catalog.upsert([svc("api", lang="py")], MERGE)
    stamp, writes = updated_at(catalog.path, "service", "api"), catalog.writes
    assert writes == 1
    await catalog.upsert([svc("api", lang="py")], MERGE)
    await catalog.upsert([{"identifier": "api", "blueprint": "service", "properties": {}}], MERGE)
    assert catalog.writes == writes
    assert updated_at(catalog.path, "service", "api") == stamp
    await catalog.upsert([svc("api", lang="go")], MERGE)
    assert catalog.writes == writes + 1
    assert updated_at(catalog.path, "service", "api") > stamp


async def test_a_property_that_turns_from_true_to_1_is_stored(catalog: LocalCatalog):
    await catalog.upsert([svc("api", on=True)], MERGE)
    await catalog.upsert([svc("api", on=1)], MERGE)
    stored = (await catalog.get_entities([("service", "api")]))[("service", "api")]["properties"]["on"]
    assert (stored, type(stored)) == (1, int)


async def test_search_query_identifier_is_refused_alone(catalog: LocalCatalog):
    query = {"combinator": "and", "rules": [{"property": "x", "operator": "=", "value": 1}]}
    outcomes = await catalog.upsert([{"identifier": query, "blueprint": "service"}, svc("api")], MERGE)
    assert not outcomes[0].ok and outcomes[0].error == SEARCH_QUERY_ERROR
    assert not outcomes[0].retryable
    assert outcomes[1].ok
    assert [e["identifier"] for e in catalog.list_entities()] == ["api"]


def _graph() -> list[dict]:
    """db ← api ← web (and `docs` relates to nothing); `job` depends on db through a list."""
    return [
        {"identifier": "db", "blueprint": "database"},
        {"identifier": "api", "blueprint": "service", "relations": {"database": "db"}},
        {"identifier": "web", "blueprint": "frontend", "relations": {"backend": "api"}},
        {"identifier": "job", "blueprint": "cron", "relations": {"uses": ["x", "db"]}},
        {"identifier": "docs", "blueprint": "site", "relations": {"about": None}},
    ]


@pytest.mark.parametrize("flags", [MERGE, REPLACE])
async def test_a_delete_removes_the_entity_alone_whatever_relates_to_it(catalog: LocalCatalog, flags):
    """With deleteDependentEntities every entity whose relation named the deleted identifier went
    too, of any blueprint (a pull request related to `acme/x` the repository went with `acme/x`
    the GitLab project), and no plan showed it (found by probing): the local catalog cannot tell
    which relations Port requires, nor which blueprint a relation points at."""
    await catalog.upsert(_graph(), MERGE)
    outcomes = await catalog.delete([("database", "db"), ("database", "gone")], flags)
    assert [(o.key, o.ok) for o in outcomes] == [(("database", "db"), True), (("database", "gone"), True)]
    assert sorted(e["identifier"] for e in catalog.list_entities()) == ["api", "docs", "job", "web"]


async def test_list_filter_and_export_import_round_trip(tmp_path: Path, catalog: LocalCatalog):
    await catalog.upsert(_graph(), MERGE)
    assert [e["identifier"] for e in catalog.list_entities("service")] == ["api"]
    exported = catalog.export()
    assert [(e["blueprint"], e["identifier"]) for e in exported] == [
        ("cron", "job"),
        ("database", "db"),
        ("frontend", "web"),
        ("service", "api"),
        ("site", "docs"),
    ]
    other = LocalCatalog(tmp_path / "other.db")
    try:
        await other.upsert([{**svc("api", stale=True), "relations": {"x": "y"}}], MERGE)
        assert other.import_entities(exported) == 5
        assert other.export() == exported  # replace semantics: the stale property is gone
        with pytest.raises(InputError, match="entity #1 needs a string 'identifier'"):
            other.import_entities([svc("ok"), {"blueprint": "service"}])
        assert other.export() == exported  # all or nothing
    finally:
        await other.close()


def test_catalog_import_names_the_file_and_the_entity_at_fault_and_imports_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ocean_hook.cli import app

    db = tmp_path / "catalog.db"
    lines = tmp_path / "entities.jsonl"
    lines.write_text('{"identifier": "a", "blueprint": "service"}\n{"blueprint": "service"}\n')
    result = CliRunner().invoke(app, ["catalog", "import", str(lines), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: {lines}: entity #1 needs a string 'identifier' and 'blueprint', "
                                     'got {"blueprint": "service"}')
    if db.exists():  # opened for the import, and left empty: all or nothing
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM entities").fetchone() == (0,)


@pytest.mark.parametrize(("entity", "problem"), [
    ({"identifier": "", "blueprint": "s"}, "entity #1 needs a string 'identifier' and 'blueprint'"),
    ({"identifier": "b", "blueprint": "s", "title": 5}, "entity #1 (s/b): 'title' must be a string, got 5"),
    ({"identifier": "b", "blueprint": "s", "properties": [1]}, "'properties' must be an object, got [1]"),
    ({"identifier": "b", "blueprint": "s", "relations": "x"}, "'relations' must be an object, got \"x\""),
])
def test_catalog_import_refuses_what_port_would_and_counts_what_it_stored(tmp_path: Path, entity: dict,
                                                                           problem: str) -> None:
    from typer.testing import CliRunner

    from ocean_hook.cli import app

    db = tmp_path / "catalog.db"
    given = tmp_path / "entities.json"
    given.write_text(json.dumps([{"identifier": "a", "blueprint": "s"}, entity]))
    result = CliRunner().invoke(app, ["catalog", "import", str(given), "--db", str(db)])
    assert result.exit_code == 2 and problem in result.stderr, result.output
    given.write_text(json.dumps([{"identifier": "a", "blueprint": "s", "title": "1"},
                                 {"identifier": "a", "blueprint": "s", "title": "2"}]))
    result = CliRunner().invoke(app, ["catalog", "import", str(given), "--db", str(db)])
    assert result.stdout == "imported 1 entity\n"  # given twice, stored once: the later one


def test_a_sqlite_file_of_something_else_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """A --db or target.path naming an application's database must not get catalog tables."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as app_db:
        app_db.execute("CREATE TABLE users (id INTEGER)")
        app_db.commit()
    before = path.read_bytes()
    with pytest.raises(InputError) as info:
        LocalCatalog(path)
    assert str(info.value) == (f"{path}: cannot open the local catalog: it holds the tables of something else "
                               "(users), not a local catalog; it was left as it was")
    assert path.read_bytes() == before and not Path(f"{path}-wal").exists()


async def test_another_process_reads_while_a_write_is_open(catalog: LocalCatalog):
    await catalog.upsert([svc("api", lang="py")], MERGE)
    writer = sqlite3.connect(catalog.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # e.g. `serve` in the middle of a write
    writer.execute("DELETE FROM entities")
    code = (
        "import sys; from ocean_hook.targets.local import LocalCatalog;"
        "print(len(LocalCatalog(sys.argv[1]).list_entities('service')))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(catalog.path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"  # WAL: the reader sees the last commit, not blocked
    writer.execute("ROLLBACK")
    writer.close()
    await catalog.upsert([svc("web")], MERGE)  # still writable afterwards
    assert len(catalog.list_entities()) == 2


async def test_a_failed_write_rolls_back_the_whole_call(catalog: LocalCatalog):
    await catalog.upsert([svc("api", lang="py")], MERGE)
    with pytest.raises(TypeError):
        await catalog.upsert([svc("api", lang="go"), svc("bad", blob=object())], MERGE)
    assert catalog.list_entities() == [svc("api", lang="py")]


async def test_checkpoints_run_on_the_helper_thread_and_keep_the_wal_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Never inside a commit on the event loop (SQLite's automatic checkpoint syncs the disk
    there): every CHECKPOINT_AFTER entity writes the helper thread copies the WAL back, so the
    WAL stays the size of a few hundred writes however much goes through it."""
    monkeypatch.setattr("ocean_hook.targets.local.CHECKPOINT_AFTER", 50)
    path = tmp_path / "catalog.db"
    cat = LocalCatalog(path)
    threads: list[str] = []
    checkpoint = cat._checkpoints.run

    def recorded() -> None:
        threads.append(threading.current_thread().name)
        checkpoint()

    cat._checkpoints.run = recorded  # type: ignore[method-assign]
    try:
        assert cat._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for n in range(2000):  # 2,000 entities of 4 KB: 8 MB through the WAL
            await cat.upsert([svc(f"s{n}", blob="x" * 4000)], MERGE)
        wal_bytes = os.path.getsize(f"{path}-wal")
        assert len(cat.list_entities("service")) == 2000
    finally:
        await cat.close()
    assert len(threads) == 40 and {name.split("_")[0] for name in threads} == {"ocean-hook-catalog"}
    assert wal_bytes < 2 * 2**20


async def test_a_write_waits_for_a_running_checkpoint_and_the_loop_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("ocean_hook.targets.local.CHECKPOINT_AFTER", 2)
    cat = LocalCatalog(tmp_path / "catalog.db")
    release = threading.Event()
    checkpoint = cat._checkpoints.run

    def held() -> None:
        release.wait(10)
        checkpoint()

    cat._checkpoints.run = held  # type: ignore[method-assign]
    try:
        await cat.upsert([svc("a"), svc("b")], MERGE)  # two writes: a checkpoint starts, held
        write = asyncio.create_task(cat.upsert([svc("c")], MERGE))
        ticks = 0
        for _ in range(20):  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not write.done()
        assert len(cat.list_entities()) == 2
        release.set()
        assert [o.ok for o in await write] == [True]
        assert len(cat.list_entities()) == 3
    finally:
        release.set()
        await cat.close()


async def test_a_failing_checkpoint_is_logged_and_fails_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr("ocean_hook.targets.local.CHECKPOINT_AFTER", 3)
    cat = LocalCatalog(tmp_path / "catalog.db")

    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr("ocean_hook.checkpoints.sqlite3.connect", refuse)  # the checkpoint's connection
    try:
        for n in range(10):
            assert [o.ok for o in await cat.upsert([svc(f"s{n}")], MERGE)] == [True]
        assert len(cat.list_entities()) == 10
    finally:
        await cat.close()
    assert "local catalog" in caplog.text
    assert "checkpoint failed, the WAL keeps growing until one succeeds: unable to open database file" in caplog.text


async def test_sync_writes_fsyncs_the_wal_only_when_something_was_committed_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    synced: list[str] = []

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr("ocean_hook.targets.local.os.fsync", record)
    cat = LocalCatalog(tmp_path / "catalog.db")
    try:
        cat.sync_writes()
        assert synced == []  # nothing written yet
        await cat.upsert([svc("api", lang="py")], MERGE)
        await cat.upsert([svc("web")], MERGE)
        cat.sync_writes()
        assert synced == [f"{cat.path}-wal"]  # one fsync for both
        await cat.upsert([svc("api", lang="py")], MERGE)  # unchanged: nothing committed
        cat.sync_writes()
        await cat.delete([("service", "web")], MERGE)
        cat.sync_writes()
        assert synced == [f"{cat.path}-wal"] * 2
    finally:
        await cat.close()
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("ocean_hook.targets.local.os.fsync", broken)
    cat = LocalCatalog(tmp_path / "catalog.db")
    try:
        await cat.upsert([svc("db")], MERGE)
        with pytest.raises(OSError, match=r"cannot sync the local catalog .*catalog\.db: Input/output error"):
            cat.sync_writes()
    finally:
        await cat.close()
    in_memory = LocalCatalog(":memory:")  # `check` uses one: there is no file to sync
    await in_memory.upsert([svc("api")], MERGE)
    in_memory.sync_writes()
    await in_memory.close()
    assert len(synced) == 2


OPEN_AT = """
import sys, time
from ocean_hook.targets.local import LocalCatalog
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time() - 0.05))
while time.time() < start:
    pass
LocalCatalog(sys.argv[1])
"""


def test_processes_opening_one_new_catalog_at_once_all_succeed(tmp_path: Path):
    """Two `serve`s starting on one new catalog (tests/test_redis_scaleout.py) collided: SQLite's
    switch of a new file to WAL does not wait on the busy handler. A race, so this test caught
    the old code in most runs, not all; the fixed code never fails it."""
    failures = []
    for trial in range(6):
        path = tmp_path / str(trial) / "catalog.db"
        start = time.time() + 0.8  # every process has imported ocean-hook by then
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(path), str(start)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            if proc.returncode:
                failures.append(err.strip().splitlines()[-1])
    assert failures == []


def test_not_a_database_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "catalog.db"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(InputError, match=r"catalog\.db: cannot open the local catalog"):
        LocalCatalog(bad)


def test_a_busy_catalog_is_one_line_for_catalog_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """It was a traceback (TargetError is no OceanHookError), found by probing."""
    path, entities = tmp_path / "catalog.db", tmp_path / "one.json"
    LocalCatalog(path).import_entities([], source="t")
    entities.write_text('{"identifier": "x", "blueprint": "b"}')
    monkeypatch.setattr("ocean_hook.targets.local.BUSY_SECONDS", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = CliRunner().invoke(app, ["catalog", "import", str(entities), "--db", str(path)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (result.exit_code, result.stderr) == (2, f"error: {path}: local catalog is busy: database is locked\n")
    assert CliRunner().invoke(app, ["catalog", "import", str(entities), "--db", str(path)]).exit_code == 0


def test_a_damaged_catalog_row_is_one_line_naming_it(tmp_path: Path):
    """`catalog list`, `get` and `export` printed a JSONDecodeError traceback."""
    path = tmp_path / "catalog.db"
    LocalCatalog(path).import_entities([svc("api")], source="t")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO entities VALUES ('b', 'bad', '{not json', 'x')")
    message = f"error: {path}: the row of b/bad is damaged (not an entity in JSON); it was changed outside ocean-hook\n"
    for command in (["list"], ["get", "b", "bad"], ["export"]):
        result = CliRunner().invoke(app, ["catalog", *command, "--db", str(path)])
        assert (command, result.exit_code, result.stderr) == (command, 2, message)
    with pytest.raises(TargetError, match="the row of b/bad is damaged") as raised:
        asyncio.run(LocalCatalog(path).get_entities([("b", "bad")]))
    assert not raised.value.retryable


# -- build_target and dry-run ----------------------------------------------------------------

ENV = {"PORT_CLIENT_ID": "id", "PORT_CLIENT_SECRET": "secret"}


async def test_build_target_kinds(tmp_path: Path):
    local = build_target({"type": "local"}, tmp_path, env={})
    assert isinstance(local, LocalCatalog) and local.path == tmp_path / "catalog.db"
    await local.close()
    port = build_target({"type": "port", "region": "us", "integration_name": "hook"}, tmp_path, env=ENV)
    assert isinstance(port, PortTarget)
    assert port.base_url == "https://api.us.getport.io"
    assert port.user_agent.startswith("ocean-hook/") and port.user_agent.endswith("/hook")
    eu = build_target({"type": "port"}, tmp_path, env=ENV)
    assert isinstance(eu, PortTarget) and eu.base_url == "https://api.getport.io"
    dry = build_target({"type": "dry-run", "read_from": "none"}, tmp_path, env={})
    assert isinstance(dry, DryRunTarget) and dry.reader is None
    dry_port = build_target({"type": "dry-run", "read_from": "port", "region": "us"}, tmp_path, env=ENV)
    assert isinstance(dry_port, DryRunTarget) and isinstance(dry_port.reader, PortTarget)
    assert dry_port.reader.base_url == "https://api.us.getport.io"
    dry_local = build_target({"type": "dry-run", "path": str(tmp_path / "x.db")}, tmp_path, env={})
    assert isinstance(dry_local, DryRunTarget) and dry_local.reader is None  # nothing to read yet:
    assert not (tmp_path / "x.db").exists() and not dry_local.resolves_search_queries  # and none made
    await (await _made(tmp_path / "x.db")).close()
    dry_local = build_target({"type": "dry-run", "path": str(tmp_path / "x.db")}, tmp_path, env={})
    assert isinstance(dry_local, DryRunTarget) and isinstance(dry_local.reader, LocalCatalog)
    assert not dry_local.resolves_search_queries
    await dry_local.close()


async def _made(path: Path) -> LocalCatalog:
    catalog = LocalCatalog(path)
    await catalog.upsert([svc("api")], MERGE)
    return catalog


@pytest.mark.parametrize(
    ("spec", "env", "message"),
    [
        ({"type": "ftp"}, {}, "target.type must be local, port or dry-run, got 'ftp'"),
        ({"type": "local", "url": "x"}, {}, "unknown key(s) 'url' for type local"),
        ({"type": "port"}, {"PORT_CLIENT_SECRET": "s"}, "environment variable PORT_CLIENT_ID (the Port client id) is "
                                                         "not set"),
        (
            {"type": "port", "client_secret_env": "MY_SECRET"},
            {"PORT_CLIENT_ID": "i"},
            "environment variable MY_SECRET (the Port client secret) is not set",
        ),
        ({"type": "port", "region": "asia"}, ENV, "target.region must be 'eu' or 'us'"),
        ({"type": "port", "max_in_flight": 0}, ENV, "target.max_in_flight must be a positive number"),
        ({"type": "port", "request_timeout": "30s"}, ENV, "target.request_timeout must be a positive number"),
        ({"type": "port", "base_url": "api.getport.io"}, ENV,
         "target.base_url must be an http(s) URL like https://api.getport.io, got 'api.getport.io'"),
        ({"type": "port", "base_url": "https://"}, ENV, "target.base_url must be an http(s) URL"),
        # its password was in the "unreachable" error, then a ValueError traceback (found by probing)
        ({"type": "port", "base_url": "http://proxyuser:PROXYPASS@127.0.0.1:9"}, ENV,
         "target.base_url must not hold a user or password (user@host): Port takes the client id and secret"),
        ({"type": "dry-run", "read_from": "s3"}, {}, "target.read_from must be one of local, port, none"),
        ({"type": "dry-run", "read_from": "none", "path": "x"}, {}, "unknown key(s) 'path'"),
        ("local", {}, "target must be a mapping"),
    ],
)
def test_build_target_rejects_bad_specs(tmp_path: Path, spec, env, message):
    with pytest.raises(ValueError) as info:
        build_target(spec, tmp_path, env=env)
    assert message in str(info.value)


async def test_dry_run_reads_through_and_writes_nothing(catalog: LocalCatalog):
    await catalog.upsert([svc("api", lang="py")], MERGE)
    dry = DryRunTarget(catalog)
    assert await dry.get_entities([("service", "api")]) == {("service", "api"): svc("api", lang="py")}
    outcomes = await dry.upsert([svc("api", lang="go"), svc("web")], MERGE)
    outcomes += await dry.delete([("service", "api")], MERGE)
    assert all(o.ok for o in outcomes)
    assert catalog.list_entities() == [svc("api", lang="py")]
    assert await DryRunTarget(None).get_entities([("service", "api")]) == {}


async def test_a_dry_run_reads_back_what_its_writes_would_have_left(catalog: LocalCatalog):
    """`replay DIR --dry-run` planned each capture against the catalog as it is, not as the
    captures before would have left it: its plans differed from the real run's (found by probing)."""
    await catalog.upsert([svc("api", lang="py", tier=1), svc("db")], MERGE)
    dry = DryRunTarget(catalog)
    await dry.upsert([svc("api", lang="go"), svc("web")], MERGE)
    await dry.delete([["service", "db"]], MERGE)
    keys = [("service", "api"), ("service", "web"), ("service", "db")]
    assert await dry.get_entities(keys) == {("service", "api"): svc("api", lang="go", tier=1),
                                            ("service", "web"): svc("web")}
    await dry.upsert([svc("api", lang="rust")], REPLACE)
    assert (await dry.get_entities(keys))[("service", "api")] == svc("api", lang="rust")
    assert catalog.list_entities() == [svc("api", lang="py", tier=1), svc("db")]  # written: nothing
    await dry.close()


def test_a_catalog_path_of_a_user_no_one_is_is_read_as_written(tmp_path: Path) -> None:
    """`path: ~nosuchuser/cat.db` was a RuntimeError traceback from check and catalog list (found by probing)."""
    from ocean_hook.targets import catalog_path

    assert catalog_path({"type": "local", "path": "~no-such-user-here/cat.db"}, tmp_path) == Path(
        "~no-such-user-here/cat.db")
