"""CI gate for mappings/: every (source, kind) maps its sample items to the checked-in expected
result (`test-mapping --expect`), and every source's ocean-hook.yaml loads and feeds only kinds
its mapping has."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocean_hook.cli import app
from ocean_hook.config import load_config
from ocean_hook.processors.declarative import DeclarativeProcessor

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
SOURCES = sorted(p.name for p in MAPPINGS.iterdir() if (p / "port-app-config.yml").is_file())
PAIRS = [(source, p.stem) for source in SOURCES
         for p in sorted((MAPPINGS / source / "samples" / "items").glob("*.json"))]
#: webhook events that remove the resource, per source: each must be a delete_when of some processor
DELETIONS = {
    "github": ({"action": "deleted", "repository": {"full_name": "acme/x"}}, "repository"),
    "gitlab": ({"event_name": "project_destroy", "path_with_namespace": "acme/x"}, "project"),
    "jira": ({"webhookEvent": "jira:issue_deleted", "issue": {"key": "PLAT-1"}}, "issue"),
    "pagerduty": ({"event": {"event_type": "service.deleted", "data": {"id": "P1"}}}, "service"),
    "stripe": ({"type": "customer.deleted", "data": {"object": {"id": "cus_1"}}}, "customer"),
}


def secrets_env(config_file: Path) -> dict[str, str]:
    names = set(re.findall(r"\$\{([A-Z0-9_]+)\}", config_file.read_text()))
    return {name: "test-secret" for name in names}


def test_every_source_and_kind_is_covered() -> None:
    assert {"github", "gitlab", "jira", "pagerduty", "stripe"} <= set(SOURCES)
    assert len(PAIRS) >= 16
    for source, kind in PAIRS:
        assert (MAPPINGS / source / "expected" / f"{kind}.json").is_file(), f"{source}/expected/{kind}.json missing"


@pytest.mark.parametrize(("source", "kind"), PAIRS)
def test_mapping_gives_the_expected_result(source: str, kind: str) -> None:
    folder = MAPPINGS / source
    result = CliRunner().invoke(app, [
        "test-mapping", "--mapping", str(folder / "port-app-config.yml"), "--kind", kind,
        "--data", str(folder / "samples" / "items" / f"{kind}.json"),
        "--expect", str(folder / "expected" / f"{kind}.json"), "--format", "json",
    ])
    assert result.exit_code == 0, result.output
    expected = json.loads((folder / "expected" / f"{kind}.json").read_text())
    assert expected["errors"] == [] and expected["entities"], f"{source}/{kind}: expected file has no entities"
    assert all(change["action"] == "create" for change in expected["changes"])


def test_expect_fails_when_the_result_differs(tmp_path: Path) -> None:
    folder = MAPPINGS / "github"
    expected = json.loads((folder / "expected" / "release.json").read_text())
    expected["entities"][0]["entity"]["properties"]["tag"] = "v0.0.1"
    changed = tmp_path / "release.json"
    changed.write_text(json.dumps(expected))
    result = CliRunner().invoke(app, [
        "test-mapping", "--mapping", str(folder / "port-app-config.yml"), "--kind", "release",
        "--data", str(folder / "samples" / "items" / "release.json"), "--expect", str(changed),
    ])
    assert result.exit_code == 1
    assert "v0.0.1" in result.output


@pytest.mark.parametrize("source", SOURCES)
def test_ocean_hook_yaml_loads_and_feeds_mapped_kinds(source: str) -> None:
    config_file = MAPPINGS / source / "ocean-hook.yaml"
    config = load_config(config_file, env=secrets_env(config_file))
    kinds = set(config.load_mapping().kinds)
    fed = {kind for p in config.processors for kind in p.settings.kinds}
    assert fed == kinds, f"{source}: processors feed {sorted(fed)}, the mapping has {sorted(kinds)}"
    assert config.paths == [f"/webhooks/{source}" if source != "custom" else "/webhooks/deploybot"]
    assert all(p.settings.verifier.scheme != "none" for p in config.processors)
    assert str(MAPPINGS / source) not in sys.path


def test_ocean_hook_yaml_needs_its_secret() -> None:
    with pytest.raises(Exception, match="GITHUB_WEBHOOK_SECRET is not set"):
        load_config(MAPPINGS / "github" / "ocean-hook.yaml", env={})


@pytest.mark.parametrize("source", sorted(DELETIONS))
def test_deletion_events_are_deletions(source: str) -> None:
    config_file = MAPPINGS / source / "ocean-hook.yaml"
    config = load_config(config_file, env=secrets_env(config_file))
    payload, kind = DELETIONS[source]
    deleting = [p for p in config.processors if isinstance(p, DeclarativeProcessor)
                and kind in p.settings.kinds and p.is_deletion(payload)]
    assert deleting, f"{source}: no processor treats {payload} as a deletion of {kind}"
