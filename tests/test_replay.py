"""`ocean-hook replay` end to end: real-shaped sample deliveries of GitHub, GitLab, Jira,
PagerDuty and Stripe, signed with each provider's scheme, through each source's ready
ocean-hook.yaml (copied to tmp_path, so the local catalog lands there).

Every test asserts the exact changes (action, blueprint, identifier) and what the catalog holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from proof_helpers import slack_headers
from serve_helpers import serve_in_process, wait_for_entity, wait_until_settled, write_config
from typer.testing import CliRunner
from webhook_samples import (
    capture,
    catalog,
    catalog_path,
    changes,
    replay,
    replay_json,
    sample,
    sample_payload,
    secrets_env,
    sign,
    source_config,
    write_captures,
)

from ocean_hook import replay as replay_module
from ocean_hook.cli import app
from ocean_hook.events import WebhookEvent, event_from_capture, make_headers, write_capture
from ocean_hook.targets.local import LocalCatalog

PR = ("githubPullRequest", "acme/payments-api/pull/42")


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in secrets_env().items():
        monkeypatch.setenv(name, value)


# ----------------------------------------------------------------------------- each source


def test_github_samples_give_the_expected_changes(tmp_path: Path) -> None:
    config = source_config(tmp_path, "github")
    deleted = sample_payload("github", "repository.created") | {"action": "deleted"}
    write_captures(tmp_path / "caps", [
        capture("github", "repository.created"),
        capture("github", "pull_request.opened"),
        capture("github", "pull_request.closed"),
        capture("github", "issues.opened"),
        capture("github", "release.published"),
        capture("github", "workflow_run.completed"),
        capture("github", "push.feature-branch"),
        capture("github", "push"),
        capture("github", "repository.created", payload=deleted),
    ])
    out = replay_json(tmp_path / "caps", "--config", config, "--verify")
    assert [d["status"] for d in out] == ["processed"] * 9
    assert all(d["auth"] == "passed" and d["validation"] == "passed" for d in out)
    assert [changes(d) for d in out] == [
        [("create", "githubRepository", "acme/ledger-service")],
        [("create", *PR)],
        [("update", *PR)],
        [("create", "githubIssue", "acme/payments-api/issues/57")],
        [("create", "githubRelease", "acme/payments-api@v1.8.0")],
        [("create", "githubWorkflowRun", "acme/payments-api/actions/runs/9012345678")],
        # a push to a feature branch: the repository, no commit (the push selector filters it)
        [("create", "githubRepository", "acme/payments-api")],
        [("create", "githubCommit", "4b1e9d07c2f35a8e61d0b9c7a2e4f6d8c0b1a3e5"),
         ("create", "githubCommit", "e8d1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8")],
        [("delete", "githubRepository", "acme/ledger-service")],
    ]
    assert out[1]["processors"] == ["github-pull-request"] and out[1]["kinds"] == ["pull-request"]
    assert out[6]["processors"] == ["github-push-repository", "github-push"]
    assert out[1]["delivery_id"] == "476193052:5f0c8a10-0863-11ef-9a3b-2e1d7c4b8f01"
    merged = {f["path"]: (f["before"], f["after"]) for f in out[2]["changes"][0]["fields"]}
    assert merged["properties.status"] == ("open", "merged")
    entities = catalog(config)
    assert entities[PR]["properties"]["status"] == "merged"
    assert ("githubRepository", "acme/ledger-service") not in entities
    assert len(entities) == 7


def test_gitlab_samples_give_the_expected_changes(tmp_path: Path) -> None:
    config = source_config(tmp_path, "gitlab")
    destroyed = sample_payload("gitlab", "project_create") | {"event_name": "project_destroy"}
    write_captures(tmp_path / "caps", [
        capture("gitlab", "project_create"),
        capture("gitlab", "merge_request.open"),
        capture("gitlab", "issue.open"),
        capture("gitlab", "issue.confidential"),
        capture("gitlab", "pipeline.success"),
        capture("gitlab", "project_create", payload=destroyed),
    ])
    out = replay_json(tmp_path / "caps", "--config", config, "--verify")
    assert [d["status"] for d in out] == ["processed"] * 6
    assert [changes(d) for d in out] == [
        [("create", "gitlabProject", "acme/ledger-service")],
        [("create", "gitlabProject", "acme/payments-api"),
         ("create", "gitlabMergeRequest", "acme/payments-api/merge_requests/17")],
        [("create", "gitlabIssue", "acme/payments-api/issues/23")],
        [],  # a confidential issue stays out of the catalog
        [("create", "gitlabPipeline", "acme/payments-api/pipelines/1288")],
        [("delete", "gitlabProject", "acme/ledger-service")],
    ]
    assert out[3]["processors"] == ["gitlab-project", "gitlab-issue"]
    assert out[0]["delivery_id"] == "9e1b3d5f-7a9c-4b30-a2e4-6c8e0a2b4d96"  # Idempotency-Key
    assert sorted(catalog(config)) == [
        ("gitlabIssue", "acme/payments-api/issues/23"),
        ("gitlabMergeRequest", "acme/payments-api/merge_requests/17"),
        ("gitlabPipeline", "acme/payments-api/pipelines/1288"),
        ("gitlabProject", "acme/payments-api"),
    ]


def test_jira_issue_deleted_deletes_the_issue_created_before(tmp_path: Path) -> None:
    config = source_config(tmp_path, "jira")
    created = sample_payload("jira", "issue_created")
    deleted = sample_payload("jira", "issue_deleted") | {"issue": created["issue"]}
    write_captures(tmp_path / "caps", [
        capture("jira", "issue_created"),
        capture("jira", "issue_updated"),
        capture("jira", "project_created"),
        capture("jira", "issue_deleted", payload=deleted),
    ])
    out = replay_json(tmp_path / "caps", "--config", config, "--verify")
    assert [changes(d) for d in out] == [
        [("create", "jiraIssue", "PLAT-124")],
        [("create", "jiraIssue", "PLAT-123")],
        [("create", "jiraProject", "LEDG")],
        [("delete", "jiraIssue", "PLAT-124")],
    ]
    assert out[3]["changes"][0]["before"]["title"] == "Add retry metrics to the charge client"
    assert sorted(catalog(config)) == [("jiraIssue", "PLAT-123"), ("jiraProject", "LEDG")]


def test_jira_deletion_of_an_item_the_selector_filters_still_deletes(tmp_path: Path) -> None:
    """The sample deletes an epic, which the mapping's selector filters: it must still leave."""
    config = source_config(tmp_path, "jira")
    epic = {"identifier": "PLAT-87", "blueprint": "jiraIssue", "title": "Payments reliability", "properties": {}}
    store = LocalCatalog(catalog_path(config))
    store.import_entities([epic])
    asyncio.run(store.close())
    write_captures(tmp_path / "caps", [capture("jira", "issue_deleted")])
    (delivery,) = replay_json(tmp_path / "caps", "--config", config, "--verify")
    assert changes(delivery) == [("delete", "jiraIssue", "PLAT-87")]
    assert catalog(config) == {}


def test_pagerduty_samples_give_the_expected_changes(tmp_path: Path) -> None:
    config = source_config(tmp_path, "pagerduty")
    write_captures(tmp_path / "caps", [
        capture("pagerduty", "incident.triggered"),
        capture("pagerduty", "incident.triggered.low-urgency"),
        capture("pagerduty", "incident.resolved"),
        capture("pagerduty", "service.updated"),
    ])
    out = replay_json(tmp_path / "caps", "--config", config, "--verify")
    incident = ("pagerdutyIncident", "Q2NKD3V8H6TJ0L")
    assert [changes(d) for d in out] == [
        [("create", *incident)],
        [],  # low urgency: filtered by the selector
        [("update", *incident)],
        [("create", "pagerdutyService", "PIJ90N7")],
    ]
    fields = {f["path"]: (f["before"], f["after"]) for f in out[2]["changes"][0]["fields"]}
    assert fields == {"properties.status": ("triggered", "resolved"), "properties.assignees": (["Alice Chen"], [])}
    assert out[0]["delivery_id"] == "5ac64822-4adc-4fda-ade0-410becf0de4f"  # X-Webhook-Id
    assert catalog(config)[incident]["properties"]["status"] == "resolved"


def test_stripe_customer_deleted_deletes_the_customer(tmp_path: Path) -> None:
    config = source_config(tmp_path, "stripe")
    created = sample_payload("stripe", "customer.created")
    deleted = sample_payload("stripe", "customer.deleted") | {"data": created["data"]}
    write_captures(tmp_path / "caps", [
        capture("stripe", "customer.created"),
        capture("stripe", "customer.subscription.updated"),
        capture("stripe", "customer.deleted"),  # an internal account never in the catalog: nothing
        capture("stripe", "customer.deleted", payload=deleted),
    ])
    out = replay_json(tmp_path / "caps", "--config", config, "--verify")
    assert [changes(d) for d in out] == [
        [("create", "stripeCustomer", "cus_Q3kXz8VbN1rT5w")],
        [("create", "stripeSubscription", "sub_1PCy7tHx2Kq7Ra3UQm5Zp0Ye")],
        [],
        [("delete", "stripeCustomer", "cus_Q3kXz8VbN1rT5w")],
    ]
    assert out[0]["delivery_id"] == created["id"]
    # the local catalog deletes the customer alone (Port, where the subscription's relation to it
    # is required, would delete the subscription too: deleteDependentEntities is true)
    assert list(catalog(config)) == [("stripeSubscription", "sub_1PCy7tHx2Kq7Ra3UQm5Zp0Ye")]


def test_gitlab_project_updates_from_the_system_hook_leave_the_project_as_it_is(tmp_path: Path) -> None:
    """project_update's payload lacks the url, description and default branch, and wrote nulls
    over them (found by probing): only project_create and project_destroy are taken."""
    config = source_config(tmp_path, "gitlab")
    created = sample_payload("gitlab", "project_create")
    updated = created | {"event_name": "project_update"}
    write_captures(tmp_path / "caps", [capture("gitlab", "merge_request.open"),
                                       capture("gitlab", "project_create", payload=updated)])
    opened, after = replay_json(tmp_path / "caps", "--config", config)
    assert opened["status"] == "processed"
    assert after["status"] == "skipped" and after["answer"]["status"] == 202
    project = next(e for key, e in catalog(config).items() if key[0] == "gitlabProject")
    assert project["properties"]["url"] and project["properties"]["defaultBranch"]


def test_pagerduty_incident_events_that_carry_no_incident_are_ignored(tmp_path: Path) -> None:
    """incident.annotated carries a note (its own id): it made an incident of nulls; one with no
    id at all was refused 422, and PagerDuty sent it again and again (found by probing)."""
    config = source_config(tmp_path, "pagerduty")
    note = sample_payload("pagerduty", "incident.triggered")
    note["event"] = note["event"] | {"event_type": "incident.annotated",
                                     "data": {"id": "PWL7QXS", "type": "incident_note", "content": "rebooted"}}
    responder = note | {"event": note["event"] | {"event_type": "incident.responder.added",
                                                  "data": {"type": "incident_responder"}}}
    files = write_captures(tmp_path / "caps", [capture("pagerduty", "incident.triggered", payload=p)
                                               for p in (note, responder)])
    assert [(d["status"], d["answer"]["status"]) for d in replay_json(*files, "--config", config)] == [
        ("skipped", 202), ("skipped", 202)]
    assert catalog(config) == {}


# ----------------------------------------------------------------------------- options


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    config = source_config(tmp_path, "github")
    state = tmp_path / "github" / ".ocean-hook"
    files = write_captures(tmp_path / "caps", [capture("github", "pull_request.opened"),
                                               capture("github", "pull_request.closed")])
    result = replay(files[0], "--config", config, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "+ create githubPullRequest/acme/payments-api/pull/42" in result.stdout
    assert "1 to create, 0 to update, 0 to delete, 0 unchanged" in result.stdout
    assert not state.exists()  # not even an empty catalog

    assert replay(files[0], "--config", config).exit_code == 0
    before = catalog(config)
    (delivery,) = replay_json(files[1], "--config", config, "--dry-run")
    assert changes(delivery) == [("update", *PR)]  # planned against the catalog...
    assert catalog(config) == before  # ...and not written
    assert before[PR]["properties"]["status"] == "open"


async def test_each_file_is_replayed_and_printed_before_the_next_is_read(tmp_path: Path) -> None:
    """Every file was read first and every outcome kept to the end: a folder of 9,000 captures
    took 500 MB, 1.6 GB in JSON (found by probing). The second file here is a pipe, written
    only once the first file's outcome is out."""
    config = source_config(tmp_path, "github")
    [first, second] = write_captures(tmp_path / "caps", [capture("github", "pull_request.opened"),
                                                         capture("github", "pull_request.closed")])
    later = tmp_path / "later.json"
    os.mkfifo(later)
    for fmt, shown in (("text", f"processed {first}"), ("json", f'"file": "{first}"')):
        replaying = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ocean_hook", "replay", str(first), str(later), "--config", str(config),
            "--dry-run", "--format", fmt, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **secrets_env(), "PYTHONUNBUFFERED": "1", "COLUMNS": "300"})
        assert replaying.stdout is not None
        said = b""
        while shown.encode() not in said:
            line = await asyncio.wait_for(replaying.stdout.readline(), 30)
            assert line, said
            said += line
        await asyncio.to_thread(later.write_bytes, second.read_bytes())
        out, err = await asyncio.wait_for(replaying.communicate(), 30)
        assert replaying.returncode == 0, err
        if fmt == "json":
            assert [o["status"] for o in json.loads(said + out)] == ["processed", "processed"]


def pr_capture(number: int, title: str) -> dict[str, object]:
    payload = sample_payload("github", "pull_request.opened")
    url = f"https://github.com/acme/payments-api/pull/{number}"
    payload["pull_request"] = {**payload["pull_request"], "number": number, "title": title, "html_url": url}
    payload["number"] = number
    return capture("github", "pull_request.opened", payload=payload, headers={"X-GitHub-Delivery": f"d-{number}"})


def test_a_reader_that_goes_away_stops_the_printing_not_the_replay(tmp_path: Path) -> None:
    """Printing as it goes, `replay DIR | head -2` stopped applying at the second file (found
    by probing); every file is applied, and the exit is a SIGPIPE's, 141."""
    config = source_config(tmp_path, "github")
    write_captures(tmp_path / "caps", [pr_capture(n, f"PR {n}") for n in range(1, 41)])
    for fmt in ("text", "json"):
        reading = subprocess.Popen([sys.executable, "-m", "ocean_hook", "replay", str(tmp_path / "caps"),
                                    "--config", str(config), "--format", fmt],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **secrets_env()})
        assert reading.stdout is not None
        reading.stdout.readline()
        reading.stdout.close()
        assert reading.wait(timeout=120) == 141
        assert len([key for key in catalog(config) if key[0] == "githubPullRequest"]) == 40
        catalog_path(config).unlink()


def test_json_output_keeps_a_line_separator_inside_a_string_as_it_is(tmp_path: Path) -> None:
    """Each element was indented by splitting its text on what Python calls a line break, U+2028
    included: a title came out with two spaces after each (found by probing)."""
    config = source_config(tmp_path, "github")
    title = "x\u2028y\u0085z\u2029w"
    [file] = write_captures(tmp_path / "caps", [pr_capture(7, title)])
    [outcome] = replay_json(file, "--config", config, "--dry-run")
    assert [c["after"]["title"] for c in outcome["changes"]] == [title]


def test_a_replay_that_verifies_nothing_needs_no_webhook_secret(tmp_path: Path) -> None:
    """`replay --dry-run` (or a plain replay) refused to run without the secrets, which only
    `--verify` uses (found by probing)."""
    config = source_config(tmp_path, "github")
    [file] = write_captures(tmp_path / "caps", [capture("github", "pull_request.opened")])
    unset = {"GITHUB_WEBHOOK_SECRET": None}
    result = CliRunner().invoke(app, ["replay", str(file), "--config", str(config), "--dry-run"], env=unset)
    assert result.exit_code == 0, result.output
    assert "+ create githubPullRequest/acme/payments-api/pull/42" in result.stdout
    result = CliRunner().invoke(app, ["replay", str(file), "--config", str(config), "--verify"], env=unset)
    assert result.exit_code == 2
    assert "(key processors[0].auth.secret): environment variable GITHUB_WEBHOOK_SECRET is not set" in result.stderr
    # a processor with no secret written at all is a config that never serves: refused still
    no_secret = config.read_text().replace("auth: {secret: '${GITHUB_WEBHOOK_SECRET}'}", "auth: {scheme: github}", 1)
    assert no_secret != config.read_text()
    config.write_text(no_secret)
    result = CliRunner().invoke(app, ["replay", str(file), "--config", str(config), "--dry-run"], env=unset)
    assert result.exit_code == 2 and "auth scheme 'github' needs a secret" in result.stderr, result.output


def test_a_dry_run_plans_each_capture_after_the_ones_before_as_the_real_run_applies_them(tmp_path: Path) -> None:
    """Each capture was planned against the catalog as it was, not as the captures before would
    have left it: the dry run of a folder said `1 unchanged` where the real run updated (found by
    probing)."""
    config = source_config(tmp_path, "github")
    reopened = sample_payload("github", "pull_request.opened") | {"action": "reopened"}
    files = write_captures(tmp_path / "caps", [capture("github", "pull_request.opened"),
                                               capture("github", "pull_request.closed"),
                                               capture("github", "pull_request.opened", payload=reopened)])
    planned = [changes(d) for d in replay_json(*files, "--config", config, "--dry-run")]
    assert planned == [[("create", *PR)], [("update", *PR)], [("update", *PR)]]
    assert not (tmp_path / "github" / ".ocean-hook").exists()
    assert [changes(d) for d in replay_json(*files, "--config", config)] == planned


def test_a_redelivery_in_the_folder_is_skipped_as_the_listener_answers_it(tmp_path: Path) -> None:
    """The same delivery twice (a sender's retry, captured twice) was processed twice, the PR left
    open again, where the listener answers the second `duplicate` (found by probing)."""
    config = source_config(tmp_path, "github")
    files = write_captures(tmp_path / "caps", [capture("github", "pull_request.opened"),
                                               capture("github", "pull_request.closed"),
                                               capture("github", "pull_request.opened")])
    out = replay_json(*files, "--config", config)
    assert [(d["status"], d.get("duplicate_of")) for d in out] == [
        ("processed", None), ("processed", None), ("skipped", str(files[0]))]
    assert catalog(config)[PR]["properties"]["status"] == "merged"  # as the closed (merged) one left it
    text = replay(*files, "--config", config, "--dry-run")
    assert f"duplicate of {files[0]}: the listener answers it 200 duplicate and processes it no more" in text.stdout


def test_verify_passes_good_signatures_and_fails_bad_ones(tmp_path: Path) -> None:
    config = source_config(tmp_path, "github")
    good = capture("github", "issues.opened")
    flipped_body = dict(good, body=good["body"].replace('"open"', '"opem"', 1))
    wrong_secret = capture("github", "issues.opened", secret="not-the-secret")
    files = write_captures(tmp_path / "caps", [good, flipped_body, wrong_secret])

    out = replay_json(*files, "--config", config, "--verify", exit_code=1)
    assert [(d["status"], d["auth"]) for d in out] == [
        ("processed", "passed"),
        ("failed", "failed: signature mismatch in header X-Hub-Signature-256"),
        ("failed", "failed: signature mismatch in header X-Hub-Signature-256"),
    ]
    assert [d["answer"]["status"] for d in out] == [202, 401, 401]
    assert out[1]["changes"] == [] and out[1]["errors"] == ["signature mismatch in header X-Hub-Signature-256"]

    # without --verify the signature is not looked at: the tampered body is processed
    (unverified,) = replay_json(files[1], "--config", config)
    assert unverified["auth"] == "skipped (use --verify)"
    assert unverified["status"] == "processed"


def test_stripe_verify_ignores_the_age_of_the_timestamp(tmp_path: Path) -> None:
    config = source_config(tmp_path, "stripe")
    body, headers = sample("stripe", "customer.created")
    old = sign("stripe", body, headers, now=1_000_000_000)  # 2001: far outside the 300 s window
    event = WebhookEvent("POST", "/webhooks/stripe", make_headers(old), body)
    file = write_capture(tmp_path / "caps", event)
    (delivery,) = replay_json(file, "--config", config, "--verify")
    assert (delivery["status"], delivery["auth"]) == ("processed", "passed")


def test_capture_round_trip(tmp_path: Path) -> None:
    """What the listener writes with --capture replays byte for byte: the signature still verifies."""
    config = source_config(tmp_path, "github")
    body, headers = sample("github", "release.published")
    assert "—".encode() in body  # non-ASCII text survives the round trip
    event = WebhookEvent("POST", "/webhooks/github", make_headers(sign("github", body, headers)), body,
                         received_at=1714809820.5, delivery_id="476193052:7d3a5c90-09e4-11ef-8a77-5f2b1c9e4d08")
    file = write_capture(tmp_path / "caps", event)
    (delivery,) = replay_json(file, "--config", config, "--verify")
    assert delivery["delivery_id"] == event.delivery_id
    assert (delivery["status"], delivery["auth"]) == ("processed", "passed")
    assert changes(delivery) == [("create", "githubRelease", "acme/payments-api@v1.8.0")]
    assert catalog(config)[("githubRelease", "acme/payments-api@v1.8.0")]["title"] == "v1.8.0 — charge retries"


def test_captures_of_ids_that_clean_up_alike_in_one_millisecond_are_all_kept(tmp_path: Path) -> None:
    """`a?`, `a!` and `a#` all became `a_` and overwrote each other; a 90-character CJK id made a
    name over 255 bytes, and no capture at all."""
    ids = ["p1?", "p1!", "p1#", "\U00020000" * 90]
    for delivery_id in ids:
        write_capture(tmp_path, WebhookEvent("POST", "/h", make_headers({}), b"{}", received_at=1714809820.5,
                                             delivery_id=delivery_id))
    written = sorted(tmp_path.iterdir())
    assert len(written) == 4
    assert sorted(json.loads(f.read_text())["delivery_id"] for f in written) == sorted(ids)
    assert all(len(f.name.encode()) < 255 and f.name.startswith("1714809820500-") for f in written)


def test_redacted_gitlab_token_fails_verify_and_says_so(tmp_path: Path) -> None:
    config = source_config(tmp_path, "gitlab")
    file, = write_captures(tmp_path / "caps", [capture("gitlab", "issue.open", redact=True)])
    assert json.loads(file.read_text())["headers"].count(["X-Gitlab-Token", "[redacted]"]) == 1
    (delivery,) = replay_json(file, "--config", config, "--verify", exit_code=1)
    assert delivery["auth"] == "failed: token mismatch in header X-Gitlab-Token"


def test_bare_payload_with_path_and_headers(tmp_path: Path) -> None:
    config = source_config(tmp_path, "github")
    payload_file = tmp_path / "issue.json"
    body, _ = sample("github", "issues.opened")
    payload_file.write_bytes(body)
    signature = sign("github", body, {})["X-Hub-Signature-256"]
    result = replay(payload_file, "--config", config, "--verify", "--path", "/webhooks/github",
                    "--header", "X-GitHub-Event: issues", "-H", f"X-Hub-Signature-256: {signature}",
                    "-H", "X-GitHub-Delivery: d-1", "-H", "X-GitHub-Hook-ID: 7")
    assert result.exit_code == 0, result.output
    assert "processed" in result.stdout and "delivery 7:d-1: github-issue → issue" in result.stdout
    assert "+ create githubIssue/acme/payments-api/issues/57" in result.stdout
    assert ("githubIssue", "acme/payments-api/issues/57") in catalog(config)

    without_path = replay(payload_file, "--config", config)
    assert without_path.exit_code == 1
    assert "a bare payload needs --path" in without_path.stdout
    # once, up front, as a usage error: it failed every file alike, exit 1 (found by probing)
    bad_header = replay(payload_file, "--config", config, "--path", "/webhooks/github", "-H", "no colon")
    assert (bad_header.exit_code, bad_header.stdout) == (2, "")
    assert bad_header.stderr == "error: --header must look like 'Name: value', got 'no colon'\n"
    bad_path = replay(payload_file, payload_file, "--config", config, "--path", "webhooks/github")
    assert (bad_path.exit_code, bad_path.stdout) == (2, "")
    assert bad_path.stderr == "error: --path must start with '/', got 'webhooks/github'\n"


def test_directory_of_captures_summary_and_exit_code(tmp_path: Path) -> None:
    config = source_config(tmp_path, "github")
    folder = tmp_path / "caps"
    write_captures(folder, [
        capture("github", "pull_request.opened"),
        capture("github", "issues.opened", headers={"X-GitHub-Event": "star"}),  # nobody listens: skipped
        capture("github", "release.published", secret="wrong"),
    ])
    (folder / "04.json").write_text('{"path": "/webhooks/github", "body": ')  # unreadable
    result = replay(folder, "--config", config, "--verify")
    assert result.exit_code == 1
    statuses = (["processed"], ["skipped"], ["failed"])
    lines = [line for line in result.stdout.splitlines() if line.split()[:1] in statuses]
    assert [line.split()[:2] for line in lines] == [
        ["processed", str(folder / "01.json")], ["skipped", str(folder / "02.json")],
        ["failed", str(folder / "03.json")], ["failed", str(folder / "04.json")],
    ]
    assert "ignored: no processor on /webhooks/github matches this event" in lines[1]
    assert "401 unauthorized: signature mismatch in header X-Hub-Signature-256 (processor github-release)" in lines[2]
    assert f"{folder / '04.json'}:1:" in lines[3] and "invalid JSON" in lines[3]
    table = result.stdout[result.stdout.index("replay"):]
    assert [line.split("│")[1:4] for line in table.splitlines() if line.startswith("│")] == [
        [" 1 ".rjust(11), " 1 ".rjust(9), " 2 ".rjust(8)]
    ]
    assert "processed" in table and "skipped" in table and "failed" in table

    clean = tmp_path / "clean"
    write_captures(clean, [capture("github", "pull_request.opened"), capture("github", "push")])
    assert replay(clean, "--config", config, "--verify").exit_code == 0

    nothing = tmp_path / "nothing"
    (nothing / "below").mkdir(parents=True)
    write_captures(nothing / "below", [capture("github", "push")])
    empty = replay(nothing, "--config", config)
    assert empty.exit_code == 2
    assert empty.stderr == (f"error: {nothing}: no .json files in this directory "
                            "(captures are read from it, not below)\n")


async def test_to_url_sends_captures_to_a_running_listener(tmp_path: Path) -> None:
    """A real `ocean-hook replay --to` subprocess sends captures to the in-process listener."""
    config = source_config(tmp_path, "github")
    folder = tmp_path / "caps"
    write_captures(folder, [
        capture("github", "pull_request.opened"),
        capture("github", "issues.opened"),
        capture("github", "release.published", secret="wrong"),
        capture("github", "issues.opened", headers={"X-Note": "a\r\nX-Injected: b"}),  # hand-edited
        # as received: chunked, and compressed (the capture holds the body aiohttp decoded); these
        # describe that one connection's bytes, not the delivery, and are not sent again
        capture("github", "issues.opened", headers={"X-GitHub-Delivery": "6e0c1f00-0000-4000-8000-000000000001",
                                                    "Transfer-Encoding": "chunked", "Content-Encoding": "gzip",
                                                    "Connection": "keep-alive", "Keep-Alive": "timeout=5"}),
    ])
    async with serve_in_process(config, env=secrets_env()) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ocean_hook", "replay", str(folder), "--to", server.url,
            "--config", str(config), "--format", "json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **secrets_env()},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 1, stderr.decode()
        out = json.loads(stdout)
        assert [(d["status"], d.get("sent_status")) for d in out] == [
            ("sent", 202), ("sent", 202), ("failed", 401), ("failed", None), ("sent", 202)]
        [refused] = out[3]["errors"]
        assert refused.startswith(f"cannot send to {server.url}/webhooks/github: ") and "control character" in refused
        delivery_id = "476193052:5f0c8a10-0863-11ef-9a3b-2e1d7c4b8f01"
        assert out[0]["listener_answer"] == {"status": "accepted", "delivery_id": delivery_id}
        assert out[0]["delivery_id"] == delivery_id
        assert out[2]["listener_answer"]["reason"] == "signature mismatch in header X-Hub-Signature-256"
        await wait_until_settled(server.state_dir, 3)
        # the listener has its config: sending needs none here, nor its secrets (both were asked for)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        again = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ocean_hook", "replay", str(folder / sorted(os.listdir(folder))[0]),
            "--to", server.url, "--format", "json", cwd=elsewhere,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k not in secrets_env()},
        )
        resent, problems = await asyncio.wait_for(again.communicate(), 30)
        assert again.returncode == 0, problems.decode()
        assert [(d["status"], d["sent_status"]) for d in json.loads(resent)] == [("sent", 200)]  # a duplicate
        pr = await wait_for_entity(server.catalog_path, *PR)
    assert pr["properties"]["status"] == "open"
    assert ("githubIssue", "acme/payments-api/issues/57") in catalog(config)
    assert ("githubRelease", "acme/payments-api@v1.8.0") not in catalog(config)


@pytest.mark.parametrize("to", ["notaurl", "ftp://127.0.0.1:8000", "http://", "http://[::1", "http://h:99999"])
def test_a_to_that_is_not_a_listener_url_is_refused_once_before_anything_is_sent(tmp_path: Path, to: str) -> None:
    config = source_config(tmp_path, "github")
    files = write_captures(tmp_path / "caps", [capture("github", "issues.opened"), capture("github", "issues.opened")])
    result = replay(*files, "--config", config, "--to", to)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: --to must be the http:// or https:// URL of a running listener, got {to!r}"
    assert result.stdout == ""


@pytest.mark.parametrize(("options", "problem"), [
    (["--to", "http://127.0.0.1:9", "--dry-run"], "--dry-run cannot go with --to: the listener applies what it"),
    (["--to", "http://127.0.0.1:9", "--verify"], "--verify cannot go with --to: the listener checks the signatures"),
    (["-H", "X-GitHub-Event: issues"], "--header is for bare payloads, with --path"),
])
def test_options_that_cannot_apply_together_are_refused_before_anything_is_sent(
    tmp_path: Path, options: list[str], problem: str
) -> None:
    """`--to --dry-run` sent the deliveries, and the listener applied them under a "dry run" table."""
    config = source_config(tmp_path, "github")
    files = write_captures(tmp_path / "caps", [capture("github", "issues.opened")])
    result = replay(*files, "--config", config, *options)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {problem}") and result.stdout == ""


async def test_to_a_port_nobody_listens_on_says_the_connection_was_refused(tmp_path: Path) -> None:
    """aiohttp's own text said "ssl:default" of a plain http:// URL (found by probing)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    event = event_from_capture(capture("github", "issues.opened"), where="capture")
    async with aiohttp.ClientSession() as session:
        outcome = await replay_module.send_event("x.json", event, f"http://127.0.0.1:{port}", session)
    assert outcome.status == "failed"
    assert outcome.error == (f"cannot send to http://127.0.0.1:{port}{event.path}: "
                             f"Connect call failed ('127.0.0.1', {port})")


async def test_to_a_listener_that_never_answers_fails_the_file_after_the_timeout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(replay_module, "SEND_TIMEOUT_SECONDS", 0.5)
    # the writers held: from 3.13 asyncio no longer does, and a StreamWriter collected closes its connection
    writers: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda reader, writer: writers.append(writer), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    event = event_from_capture(capture("github", "issues.opened"), where="capture")
    async with silent, aiohttp.ClientSession() as session:
        outcome = await replay_module.send_event("x.json", event, url, session)
        for writer in writers:
            writer.close()
    assert outcome.status == "failed"
    assert outcome.error == f"{url}{event.path} did not answer within 0.5 s"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"body": 5}, "'body' must be a string, got 5"),
        ({"path": 5}, "'path' must be a string, got 5"),
        ({"method": 7}, "'method' must be a string, got 7"),
        ({"received_at": "yesterday"}, "'received_at' must be a Unix time in seconds, got \"yesterday\""),
        ({"received_at": True}, "'received_at' must be a Unix time in seconds, got true"),
        ({"delivery_id": ["x"]}, "'delivery_id' must be a string, got [\"x\"]"),
        # these were sent as the text "None", "['application/json']", and not at all
        ({"headers": [["X-GitHub-Event", None]]}, "'headers' entry 0 must be a [name, value] pair of text, got "
                                                  '["X-GitHub-Event", null]'),
        ({"headers": {"Content-Type": ["application/json"]}}, "'headers' entry 0 must be a [name, value] pair of "
                                                              'text, got ["Content-Type", ["application/json"]]'),
        ({"headers": [{"name": "Content-Type", "value": "application/json"}]},
         "'headers' entry 0 must be a [name, value] pair of text, got {\"name\": \"Content-Type\", \"value\": "
         "\"application/json\"}"),
        ({"headers": "Content-Type: application/json"}, "'headers' must be a list of [name, value] pairs, got "
                                                         '"Content-Type: application/json"'),
    ],
)
def test_a_hand_edited_capture_with_a_wrong_field_fails_alone_naming_it(
    tmp_path: Path, fields: dict, problem: str
) -> None:
    config = source_config(tmp_path, "github")
    folder = tmp_path / "caps"
    good, = write_captures(folder, [capture("github", "pull_request.opened")])
    bad = folder / "zz-edited.json"
    bad.write_text(json.dumps({**json.loads(good.read_text()), **fields}))
    result = replay(folder, "--config", config)
    assert result.exit_code == 1, result.output
    outcomes = (["processed"], ["failed"])
    lines = [line.split(None, 2) for line in result.stdout.splitlines() if line.split()[:1] in outcomes]
    assert lines == [["processed", str(good), lines[0][2]], ["failed", str(bad), f"{bad}: {problem}"]]


# ----------------------------------------------------------------------------- rejections


def _pr_without_number() -> dict:
    payload = sample_payload("github", "pull_request.opened")
    payload["pull_request"]["number"] = None
    return payload


REJECTIONS = {
    "missing-signature": (
        dict(signed=False), 1, 401, "401 unauthorized: missing header X-Hub-Signature-256 (processor github-issue)",
        {"auth": "failed: missing header X-Hub-Signature-256", "rejected_by": "github-issue"},
    ),
    "invalid": (
        dict(name="pull_request.opened", payload=_pr_without_number()), 1, 422,
        "422 invalid: payload fails validation '.pull_request.number != null' (processor github-pull-request)",
        {"auth": "passed", "validation": "failed: payload fails validation '.pull_request.number != null'",
         "rejected_by": "github-pull-request"},
    ),
    "ignored": (
        dict(headers={"X-GitHub-Event": "star"}), 0, 202,
        "ignored: no processor on /webhooks/github matches this event",
        {"status": "skipped", "auth": "passed", "validation": "not checked", "processors": []},
    ),
    "bad-json": (
        dict(body=b'{"action": "opened",'), 1, 400,
        "400 bad_json: malformed JSON at line 1 column 21",
        {"auth": "passed", "validation": "not checked"},
    ),
    "unsupported-media-type": (
        dict(headers={"Content-Type": "text/plain"}), 1, 415,
        "415 unsupported_media_type: unsupported Content-Type text/plain: send application/json",
        {"auth": "not checked", "validation": "not checked"},
    ),
    "unknown-path": (
        dict(path="/webhooks/nowhere"), 1, 404, "404 unknown_path: no processor listens on /webhooks/nowhere",
        {"auth": "not checked"},
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_each_rejection_reason_is_reported(tmp_path: Path, case: str) -> None:
    options, exit_code, status, text, fields = REJECTIONS[case]
    options = {"name": "issues.opened", **options}
    config = source_config(tmp_path, "github")
    file, = write_captures(tmp_path / "caps", [capture("github", options.pop("name"), **options)])

    result = replay(file, "--config", config, "--verify")
    assert result.exit_code == exit_code, result.output
    assert text in result.stdout.splitlines()[0]

    (delivery,) = replay_json(file, "--config", config, "--verify", exit_code=exit_code)
    assert delivery["answer"]["status"] == status
    assert text.split(": ", 1)[1].split(" (processor")[0] in delivery["answer"]["reason"]
    assert {k: delivery[k] for k in fields} == fields
    assert delivery["changes"] == []
    assert catalog(config) == {}


def test_a_capture_that_is_not_a_post_is_405_as_the_listener_answers_it(tmp_path: Path) -> None:
    """A hand-edited GET capture was processed and applied, where the listener answers 405."""
    config = source_config(tmp_path, "github")
    file, = write_captures(tmp_path / "caps", [capture("github", "issues.opened")])
    file.write_text(json.dumps({**json.loads(file.read_text()), "method": "GET"}))
    result = replay(file, "--config", config)
    assert result.exit_code == 1, result.output
    assert "405 method_not_allowed: method GET not allowed; use POST" in result.stdout.splitlines()[0]
    assert catalog(config) == {}


def test_a_slack_url_verification_capture_is_skipped_not_failed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OH_SLACK_SECRET", "slack-signing-secret")
    config = write_config(tmp_path, processors=[{"name": "slack", "preset": "slack", "kinds": ["pull-request"],
                                                 "auth": {"secret": "${OH_SLACK_SECRET}"}}])
    body = json.dumps({"token": "t", "challenge": "abc", "type": "url_verification"}).encode()
    event = WebhookEvent("POST", "/webhooks/slack", make_headers(slack_headers(body, "slack-signing-secret")), body)
    capture_file = write_capture(tmp_path / "caps", event)
    (delivery,) = replay_json(capture_file, "--config", config, "--verify")
    assert (delivery["status"], delivery["answer"]["status"]) == ("skipped", 200)
    assert delivery["answer"]["reason"] == "URL verification answered"


def test_an_entity_the_local_catalog_cannot_write_fails_the_delivery_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A search-query identifier (Port resolves it, the local catalog cannot) failed the delivery
    after the kinds before it were written, reporting no change; the dry run passed it (found by
    probing). Now neither writes anything, and both say why."""
    (tmp_path / "mapping.yml").write_text(textwrap.dedent("""\
        resources:
          - kind: plain
            port:
              entity:
                mappings: {identifier: .name, blueprint: '"svc"'}
          - kind: sq
            port:
              entity:
                mappings:
                  identifier:
                    combinator: '"and"'
                    rules:
                      - {property: '"$title"', operator: '"="', value: .name}
                  blueprint: '"svc"'
        """))
    (tmp_path / "ocean-hook.yaml").write_text(
        "mapping: mapping.yml\nprocessors:\n"
        "  - {name: x, path: /webhooks/x, kinds: [plain, sq], auth: {scheme: none}}\n")
    (tmp_path / "one.json").write_text(json.dumps({"name": "n1"}))
    config = tmp_path / "ocean-hook.yaml"
    for dry_run in (["--dry-run"], []):
        [delivery] = replay_json(tmp_path / "one.json", "--config", config, "--path", "/webhooks/x", *dry_run,
                                 exit_code=1)
        assert delivery["status"] == "failed", dry_run
        assert delivery["errors"] == ["svc: search-query identifiers are resolved by Port; the local catalog cannot "
                                      "resolve them (kind sq) (not retryable)"]
    assert catalog(config) == {}


def test_what_the_mapping_left_out_is_counted_not_silent(tmp_path: Path) -> None:
    """A payload without an id was `processed` with no changes and not a word (found by probing):
    skipped, filtered and misconfigured are counted as test-mapping counts them."""
    (tmp_path / "mapping.yml").write_text(
        "resources:\n  - kind: repo\n    selector: {query: '.type == \"repo\"'}\n    port:\n      entity:\n"
        "        mappings: {identifier: .id, title: .name, blueprint: '\"service\"'}\n")
    (tmp_path / "ocean-hook.yaml").write_text(
        "mapping: mapping.yml\nprocessors:\n  - {name: x, path: /webhooks/x, kinds: [repo], auth: {scheme: none}}\n")
    payloads = {"no-id.json": {"type": "repo", "name": "A"}, "user.json": {"type": "user", "id": "u"},
                "untitled.json": {"type": "repo", "id": "b"}}
    for name, payload in payloads.items():
        (tmp_path / name).write_text(json.dumps(payload))
    files = [tmp_path / name for name in payloads]
    config = tmp_path / "ocean-hook.yaml"
    out = replay_json(*files, "--config", config, "--path", "/webhooks/x", "--dry-run")
    assert [(d["status"], d["summary"]) for d in out] == [
        ("processed", {"create": 0, "update": 0, "delete": 0, "unchanged": 0, "filtered": 0, "skipped": 1,
                       "misconfigured": 1}),  # its identifier is null: both, as in test-mapping
        ("processed", {"create": 0, "update": 0, "delete": 0, "unchanged": 0, "filtered": 1, "skipped": 0,
                       "misconfigured": 0}),
        ("processed", {"create": 1, "update": 0, "delete": 0, "unchanged": 0, "filtered": 0, "skipped": 0,
                       "misconfigured": 1}),
    ]
    # and named, as test-mapping names them: counted alone, they told nothing of which field
    assert [d["misconfigured"] for d in out] == [
        [{"kind": "repo", "field": "identifier", "jq": ".id", "entities": 1, "example": "item 0"}], [],
        [{"kind": "repo", "field": "title", "jq": ".name", "entities": 1, "example": "b"}]]
    applied = replay(files[0], "--config", config, "--path", "/webhooks/x")
    assert applied.exit_code == 0, applied.output
    assert "0 to create, 0 to update, 0 to delete, 0 unchanged (1 skipped, 1 misconfigured)" in applied.stdout
    assert "! repo: identifier is null or empty in 1 entity (jq: .id), e.g. item 0" in applied.stdout


def test_an_item_the_mapping_cannot_map_fails_the_delivery_after_the_others_are_written(tmp_path: Path) -> None:
    """One bad item (a number for a title) failed the whole delivery with nothing written, for
    good, where Ocean writes the others and test-mapping shows them as creates (found by
    probing). The others are written; the delivery still fails, kept to retry once fixed."""
    (tmp_path / "mapping.yml").write_text(
        "resources:\n  - kind: thing\n    port:\n      entity:\n"
        "        mappings: {identifier: .id, title: .title, blueprint: '\"thing\"'}\n")
    (tmp_path / "ocean-hook.yaml").write_text(
        "mapping: mapping.yml\nprocessors:\n"
        "  - {name: x, path: /webhooks/x, kinds: [thing], items: .things, auth: {scheme: none}}\n")
    (tmp_path / "two.json").write_text(json.dumps({"things": [{"id": "good", "title": "fine"},
                                                              {"id": "bad", "title": 42}]}))
    config = tmp_path / "ocean-hook.yaml"
    [planned] = replay_json(tmp_path / "two.json", "--config", config, "--path", "/webhooks/x", "--dry-run",
                            exit_code=1)
    [applied] = replay_json(tmp_path / "two.json", "--config", config, "--path", "/webhooks/x", exit_code=1)
    for delivery in (planned, applied):
        assert delivery["status"] == "failed"
        assert len(delivery["errors"]) == 1 and "'title' must be a string, got 42" in delivery["errors"][0]
        # the dead letter says the others went in (it said only the item's error)
        assert delivery["errors"][0].endswith(" (the other items were applied: 1 entity write(s)) (not retryable)")
    assert set(catalog(config)) == {("thing", "good")}
