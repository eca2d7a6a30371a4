"""`ocean-hook init`: starter files for each source that pass `check` and map real-shaped samples."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocean_hook.check import check
from ocean_hook.cli import app
from ocean_hook.config import load_config
from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.fetch import Fetcher
from ocean_hook.mapping.models import load_port_app_config
from ocean_hook.pipeline import admit, process
from ocean_hook.processors.presets import PRESETS
from ocean_hook.starter import STARTERS, template
from ocean_hook.targets import DryRunTarget

SAMPLES = Path(__file__).resolve().parent.parent / "mappings"
EXPORT = re.compile(r"^\s*export ([A-Z_]+)=(.+)$", re.MULTILINE)


def init(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["init", *args])


def test_every_source_has_a_starter_and_a_preset() -> None:
    assert set(STARTERS) == {"github", "gitlab", "jira", "pagerduty", "stripe"}
    for source, starter in STARTERS.items():
        assert PRESETS[source].path == starter.path
        assert f"${{{starter.secret_env}}}" in template(source, "ocean-hook.yaml")


@pytest.mark.parametrize("source", sorted(STARTERS))
def test_init_writes_a_config_that_checks_clean(tmp_path: Path, source: str) -> None:
    starter = STARTERS[source]
    result = init("--source", source, "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ocean-hook.yaml").read_text() == template(source, "ocean-hook.yaml")
    assert (tmp_path / "port-app-config.yml").read_text() == template(source, "port-app-config.yml")
    # the blueprints to create in Port: a pip install has no mappings/ folder to take them from
    assert json.loads((tmp_path / "blueprints.json").read_text()) == json.loads(
        (SAMPLES / source / "blueprints.json").read_text())
    assert "blueprints.json in Port" in result.stdout
    [(name, value)] = EXPORT.findall(result.stdout)
    assert name == starter.secret_env
    if starter.secret_from_sender is None:
        assert re.fullmatch(r"[0-9a-f]{64}", value)  # fresh for every init
        again = init("--source", source, "--dir", str(tmp_path), "--force")
        assert EXPORT.findall(again.stdout)[0][1] != value
    else:  # Stripe and PagerDuty make the secret themselves: say where to copy it from, quoted
        assert value.startswith("'<")  # pasted unquoted, `<...>` was read as a redirection
        assert shlex.split(value) == [f"<{starter.secret_from_sender}>"]
    config = tmp_path / "ocean-hook.yaml"
    assert f"http://<host>:8000/webhooks/{source}" in result.stdout
    assert f"ocean-hook serve --config {config} --port 8000" in result.stdout
    assert f"ocean-hook check --config {config}" in result.stdout
    report = check(config, env={name: "a-secret"})
    assert report.ok, report.problems
    assert report.warnings == []


@pytest.mark.parametrize("source", sorted(STARTERS))
async def test_starter_maps_the_sources_sample_deliveries(tmp_path: Path, source: str) -> None:
    """Each real-shaped sample is routed, and every kind of the starter gets entities from them."""
    init("--source", source, "--dir", str(tmp_path))
    config = load_config(tmp_path / "ocean-hook.yaml", env={STARTERS[source].secret_env: "s"})
    mapping = config.load_mapping()
    mapped: set[str] = set()
    for body_file in sorted((SAMPLES / source / "samples").glob("*.json")):
        if body_file.name.endswith(".headers.json"):
            continue
        headers = json.loads(body_file.with_name(body_file.stem + ".headers.json").read_text())
        event = WebhookEvent("POST", STARTERS[source].path, make_headers(headers), body_file.read_bytes())
        admission = admit(event, config.processors, now=None, verify=False)
        assert admission.status == 202, f"{body_file.name}: {admission.reason}"
        if admission.ignored:
            continue
        result = await process(admission.event, admission.processors, mapping, DryRunTarget(None), Fetcher())
        assert result.errors == [], body_file.name
        mapped |= {r.kind for r in result.results if r.batch.upserts}
    assert mapped == set(mapping.kinds)


async def test_the_jira_starter_deletes_a_project_moved_to_the_trash(tmp_path: Path) -> None:
    """The ready mapping deleted on project_soft_deleted, the starter only on project_deleted: a
    project in Jira's trash stayed in the catalog (found by probing)."""
    init("--source", "jira", "--dir", str(tmp_path))
    config = load_config(tmp_path / "ocean-hook.yaml", env={STARTERS["jira"].secret_env: "s"})
    payload = json.loads((SAMPLES / "jira" / "samples" / "project_created.json").read_text())
    payload["webhookEvent"] = "project_soft_deleted"
    headers = json.loads((SAMPLES / "jira" / "samples" / "project_created.headers.json").read_text())
    event = WebhookEvent("POST", STARTERS["jira"].path, make_headers(headers), json.dumps(payload).encode())
    admission = admit(event, config.processors, now=None, verify=False)
    assert admission.accepted, admission.reason
    result = await process(admission.event, admission.processors, config.load_mapping(), DryRunTarget(None),
                           Fetcher())
    assert [len(r.batch.deletes) for r in result.results] == [1]


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / "ocean-hook.yaml").write_text("mine\n")
    result = init("--dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {tmp_path / 'ocean-hook.yaml'} already exists; "
                                     "use --force to overwrite")
    assert (tmp_path / "ocean-hook.yaml").read_text() == "mine\n"
    assert not (tmp_path / "port-app-config.yml").exists()  # all or nothing
    assert init("--dir", str(tmp_path), "--force").exit_code == 0
    assert (tmp_path / "ocean-hook.yaml").read_text() == template("github", "ocean-hook.yaml")


def test_a_place_that_cannot_take_the_files_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = init("--dir", str(tmp_path / "afile" / "sub"))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: cannot write {tmp_path / 'afile' / 'sub'}: Not a directory\n"
    (tmp_path / "d" / "port-app-config.yml").mkdir(parents=True)
    result = init("--dir", str(tmp_path / "d"), "--force")
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'd' / 'port-app-config.yml'}: a directory is in the way of the file\n"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["port-app-config.yml"]  # no half-written config


def test_a_dangling_link_in_the_way_is_not_replaced_without_force(tmp_path: Path) -> None:
    """A symbolic link to a config not there yet (a mount, say) was replaced by a file (found by probing)."""
    (tmp_path / "ocean-hook.yaml").symlink_to(tmp_path / "elsewhere" / "cfg.yaml")
    result = init("--dir", str(tmp_path))
    assert (result.exit_code, result.stderr.strip()) == (
        1, f"error: {tmp_path / 'ocean-hook.yaml'} already exists; use --force to overwrite")
    assert (tmp_path / "ocean-hook.yaml").is_symlink()


def test_a_file_that_cannot_be_written_is_named_as_the_file_not_as_its_staging_copy(tmp_path: Path) -> None:
    """`cannot write dir/.ocean-hook.yaml.ocean-hook-init`: a file the user never asked for."""
    (tmp_path / ".ocean-hook.yaml.ocean-hook-init").mkdir()  # in the way of the staging copy
    result = init("--dir", str(tmp_path))
    assert (result.exit_code, result.stderr) == (2, f"error: cannot write {tmp_path / 'ocean-hook.yaml'}: "
                                                    "Is a directory\n")


def test_a_file_that_cannot_be_replaced_leaves_both_as_they_were(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The config was written and the mapping not, exit 2 naming a temp file (found by probing,
    with an immutable mapping file)."""
    (tmp_path / "ocean-hook.yaml").write_text("mine\n")
    (tmp_path / "port-app-config.yml").write_text("my mapping\n")
    real_replace = Path.replace

    def refuse_the_mapping(self: Path, target):  # type: ignore[no-untyped-def]
        if Path(target).name == "port-app-config.yml":
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", refuse_the_mapping)
    result = init("--dir", str(tmp_path), "--force")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: cannot write {tmp_path / 'port-app-config.yml'}: Operation not permitted "
                             "(nothing was changed)\n")
    assert (tmp_path / "ocean-hook.yaml").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ocean-hook.yaml", "port-app-config.yml"]


def test_next_steps_quote_a_directory_for_the_shell(tmp_path: Path) -> None:
    directory = tmp_path / "my hooks $(x)"
    result = init("--dir", str(directory))
    assert result.exit_code == 0
    assert f"ocean-hook check --config {shlex.quote(str(directory / 'ocean-hook.yaml'))}" in result.stdout


def test_in_the_current_directory_commands_need_no_config_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = init()
    assert result.exit_code == 0
    assert "ocean-hook serve --port 8000" in result.stdout
    assert "--config" not in result.stdout
    assert (tmp_path / "ocean-hook.yaml").is_file()


def test_quiet_prints_only_the_export_line(tmp_path: Path) -> None:
    result = init("--dir", str(tmp_path / "gh"), "--quiet")
    assert result.exit_code == 0
    assert re.fullmatch(r"export GITHUB_WEBHOOK_SECRET=[0-9a-f]{64}\n", result.output)
    stripe = init("--source", "stripe", "--dir", str(tmp_path / "st"), "-q")
    assert stripe.stdout == ""  # nothing to eval: Stripe makes the secret
    assert stripe.stderr == "export STRIPE_WEBHOOK_SECRET yourself: the secret is made by stripe\n"


def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    result = init("--source", "bitbucket", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert "bitbucket" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("source", sorted(STARTERS))
def test_starter_writes_only_what_the_sources_blueprints_declare(tmp_path: Path, source: str) -> None:
    """Port rejects unknown properties: the starter stays within mappings/<source>/blueprints.json."""
    blueprints = {b["identifier"]: b for b in json.loads((SAMPLES / source / "blueprints.json").read_text())}
    (tmp_path / "m.yml").write_text(template(source, "port-app-config.yml"))
    for resource in load_port_app_config(tmp_path / "m.yml").resources:
        blueprint = blueprints[json.loads(resource.mappings["blueprint"])]
        assert set(resource.mappings.get("properties", {})) <= set(blueprint["schema"]["properties"])
        assert set(resource.mappings.get("relations", {})) <= set(blueprint.get("relations", {}))


def test_a_blueprints_file_there_already_is_kept_and_stops_nothing(tmp_path: Path) -> None:
    """`init` in a folder with a blueprints.json of one's own refused to write the config (found by
    probing); it is kept unless --force."""
    (tmp_path / "blueprints.json").write_text("[]\n")
    result = init("--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ocean-hook.yaml").read_text() == template("github", "ocean-hook.yaml")
    assert (tmp_path / "blueprints.json").read_text() == "[]\n"
    assert f"kept {tmp_path / 'blueprints.json'} as it was" in " ".join(result.stdout.split())
    assert init("--dir", str(tmp_path), "--force").exit_code == 0  # the user's own: kept even then
    assert (tmp_path / "blueprints.json").read_text() == "[]\n"
    (tmp_path / "blueprints.json").write_text(template("github", "blueprints.json"))  # one init wrote
    assert init("--dir", str(tmp_path), "--force", "--source", "jira").exit_code == 0
    assert (tmp_path / "blueprints.json").read_text() == template("jira", "blueprints.json")
