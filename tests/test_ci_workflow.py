"""The example GitHub Actions workflow: its shell step, run for real on a small mappings folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from ocean_hook import render
from ocean_hook.cli import app
from ocean_hook.diff import Change, FieldChange

WORKFLOW = Path(__file__).resolve().parent.parent / "examples" / "github-actions" / "ocean-hook-mappings.yml"

MAPPING = """\
resources:
  - kind: pull-request
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .number | tostring
          title: .title
          blueprint: '"pr"'
"""

CONFIG = """\
mapping: port-app-config.yml
processors:
  - name: gh-pr
    preset: github
    events: [pull_request]
    kinds: [pull-request]
    auth: {secret: '${NOT_IN_CI}'}
"""


def step(workflow: dict, step_id: str) -> dict:  # type: ignore[type-arg]
    [found] = [s for s in workflow["jobs"]["mappings"]["steps"] if s.get("id") == step_id]
    return found


def folder(root: Path, name: str, *, title: str) -> Path:
    """A mappings folder whose expected result was made from items titled `title`."""
    path = root / "mappings" / name
    (path / "samples" / "items").mkdir(parents=True)
    (path / "port-app-config.yml").write_text(MAPPING)
    items = path / "samples" / "items" / "pull-request.json"
    items.write_text(f'[{{"number": 7, "title": "{title}"}}]')
    result = CliRunner().invoke(app, [
        "test-mapping", "--mapping", str(path / "port-app-config.yml"), "--kind", "pull-request",
        "--data", str(items), "--expect", str(path / "expected" / "pull-request.json"), "--update-expected",
    ])
    assert result.exit_code == 0, result.output
    return path


def test_workflow_gates_mapping_changes_and_reports_in_markdown(tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True]["pull_request"]["paths"]  # `on:` (YAML 1.1 reads the key as true)
    assert workflow["permissions"]["pull-requests"] == "write"
    good = folder(tmp_path, "good", title="as expected")
    (good / "ocean-hook.yaml").write_text(CONFIG)  # its secret is absent, as in CI: --no-env
    bad = folder(tmp_path, "bad", title="before the change")
    (bad / "samples" / "items" / "pull-request.json").write_text('[{"number": 7, "title": "after"}]')

    outputs, summary = tmp_path / "github_output", tmp_path / "step_summary"
    # FORCE_COLOR (set by some runners) coloured the mismatch line, and the verdict said "mapping errors"
    env = {**os.environ, **workflow["env"], "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "FORCE_COLOR": "1"}
    done = subprocess.run(["bash", "-e", "-c", step(workflow, "mappings")["run"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert outputs.read_text() == "status=1\n"  # the last step fails the job
    report = (tmp_path / workflow["env"]["REPORT"]).read_text()
    assert summary.read_text() == report
    assert report.startswith("<!-- ocean-hook-mappings -->\n## ocean-hook: mappings\n")
    assert "### `mappings/good` · `pull-request`: matches `mappings/good/expected/pull-request.json`" in report
    assert "`ocean-hook check` failed" not in report
    assert ("### `mappings/bad` · `pull-request`: **does not match `mappings/bad/expected/pull-request.json`**"
            in report)
    assert '-    "title": "before the change",\n+    "title": "after",' in report  # what differs
    assert "### ocean-hook plan" not in report  # each plan's heading names its folder and kind
    assert report.count("```diff") == 3  # two plans and one mismatch
    assert "\x1b" not in report


def test_workflow_refuses_to_install_from_its_placeholder(tmp_path: Path) -> None:
    """It installed `ocean-hook==0.1.0`, which is not on PyPI: the job failed at pip's message."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [install] = [s for s in workflow["jobs"]["mappings"]["steps"] if s.get("name") == "Install ocean-hook"]
    done = subprocess.run(["bash", "-e", "-c", install["run"]], cwd=tmp_path, env={**os.environ, **workflow["env"]},
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (
        1, "::error::set OCEAN_HOOK_PACKAGE in this workflow to where ocean-hook comes from\n")


def test_workflow_names_why_a_folder_failed_and_fences_what_a_payload_holds(tmp_path: Path) -> None:
    """Mapping errors and unreadable data were reported as "does not match", and a mismatch quoting
    a title with ``` closed the diff block and wrote into the comment (found by probing)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    fenced = folder(tmp_path, "fenced", title="plain")
    (fenced / "samples" / "items" / "pull-request.json").write_text('[{"number": 7, "title": "``` # injected"}]')
    broken = folder(tmp_path, "broken", title="x")
    (broken / "port-app-config.yml").write_text(MAPPING.replace(".number | tostring", ".number"))  # not a string
    CliRunner().invoke(app, ["test-mapping", "--mapping", str(broken / "port-app-config.yml"), "--data",
                             str(broken / "samples" / "items" / "pull-request.json"), "--expect",
                             str(broken / "expected" / "pull-request.json"), "--update-expected"])  # errors and all
    unreadable = folder(tmp_path, "unreadable", title="x")
    (unreadable / "samples" / "items" / "pull-request.json").write_text("[{not json")
    env = {**os.environ, **workflow["env"], "GITHUB_OUTPUT": str(tmp_path / "out"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-e", "-c", step(workflow, "mappings")["run"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = (tmp_path / workflow["env"]["REPORT"]).read_text()
    assert "### `mappings/broken` · `pull-request`: **mapping errors** (see the plan)" in report
    assert "### `mappings/unreadable` · `pull-request`: **could not run** (exit 2)" in report
    assert "### `mappings/fenced` · `pull-request`: **does not match `mappings/fenced/expected/pull-request.json`**" \
        in report
    said = report.split("### `mappings/fenced`")[1].split("\n### ")[0].split("<summary>ocean-hook said</summary>")[1]
    assert said.startswith("\n\n````diff\n") and "\n````\n\n</details>" in said  # longer than the ``` inside


def test_markdown_plan_fits_a_comment_whatever_the_payload_holds() -> None:
    changes = [
        Change("create", "pr", f"acme/api/pull/{n}", None, None, [FieldChange("title", None, "fix ``` in " * 20)],
               "pull-request")
        for n in range(3000)
    ]
    errors = ["kind 'pull-request', item 9: selector '.a' must give a boolean, got \"*bold*\""]
    misconfigured = [("pull-request", "properties.x", "`.x`", 2, "acme/api/pull/1")]
    text = render.plan_markdown(changes, {"create": 3000}, misconfigured=misconfigured, errors=errors)
    assert len(text) <= render.MARKDOWN_LIMIT
    lines = text.splitlines()
    assert lines[2] == "**3,000 to create, 0 to update, 0 to delete, 0 unchanged**"
    # the diff block's fence is longer than the backticks in the values, and closes
    assert lines[4] == "````diff" and lines.count("````") == 1
    assert re.search(r"^\.\.\. \d+ more lines not shown \(too long for a comment\)$", text, re.MULTILINE)
    # errors and misconfigurations survive the cut, as inline code that payload text cannot end
    assert f"- `{errors[0]}`" in lines
    assert "- `pull-request`: `properties.x` is null in 2 entities (jq: `` `.x` ``), e.g. `acme/api/pull/1`" in lines


def test_markdown_plan_spells_out_line_breaks_and_control_characters_from_payloads() -> None:
    forged = "a\n- delete thing/prod  (kind thing)\x1b]0;pwned\x07"
    changes = [Change("create", "thing", forged, None, None, [FieldChange("title", None, "x")], "k")]
    errors = ["kind 'k', item 0: selector '.x\n| .y' must give a boolean"]
    text = render.plan_markdown(changes, {"create": 1}, errors=errors)
    lines = text.splitlines()
    assert "- delete thing/prod  (kind thing)" not in lines  # no line of the plan comes from a payload
    assert "+ create thing/a\\x0a- delete thing/prod  (kind thing)\\x1b]0;pwned\\x07  (kind k)" in lines
    assert "- `kind 'k', item 0: selector '.x\\x0a| .y' must give a boolean`" in lines
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text)
