"""The ready mappings under mappings/: they load, map their own samples cleanly, and give the
entities a reader of the sample payloads expects (literal dicts below, written from the samples)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import webhook_samples

from ocean_hook.config import load_config
from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.fetch import Fetcher
from ocean_hook.mapping.engine import Mapping, MapResult
from ocean_hook.mapping.jq import JqQuery
from ocean_hook.pipeline import admit, process
from ocean_hook.targets import DryRunTarget

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
TEMPLATES = Path(__file__).resolve().parent.parent / "ocean_hook" / "templates"
SOURCES = ["github", "gitlab", "jira", "pagerduty", "stripe"]
SIGNATURE_HEADERS = {
    "x-hub-signature", "x-hub-signature-256", "x-gitlab-token", "x-pagerduty-signature",
    "stripe-signature", "webhook-signature", "authorization",
}
#: headers each provider always sends with a delivery (GitLab's Idempotency-Key: from 17.4, checked below)
PROVIDER_HEADERS = {
    "github": {"X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID", "User-Agent", "Content-Type"},
    "gitlab": {"X-Gitlab-Event", "X-Gitlab-Event-UUID", "User-Agent", "Content-Type"},
    "jira": {"X-Atlassian-Webhook-Identifier", "X-Atlassian-Webhook-Flow", "User-Agent", "Content-Type"},
    "pagerduty": {"X-Webhook-Id", "User-Agent", "Content-Type"},
    "stripe": {"User-Agent", "Content-Type"},
}


@cache
def mapping(source: str) -> Mapping:
    return Mapping.load(MAPPINGS / source / "port-app-config.yml")


def items(source: str, kind: str) -> list[Any]:
    return json.loads((MAPPINGS / source / "samples" / "items" / f"{kind}.json").read_text())


def map_kind(source: str, kind: str, *, parse_all: bool = False) -> MapResult:
    result = MapResult()
    for mapper in mapping(source).for_kind(kind):
        result.extend(mapper.map_items(items(source, kind), parse_all=parse_all))
    return result


def blueprints(source: str) -> dict[str, dict[str, Any]]:
    data = json.loads((MAPPINGS / source / "blueprints.json").read_text())
    return {bp["identifier"]: bp for bp in data}


def payload_samples(source: str) -> list[Path]:
    return sorted(p for p in (MAPPINGS / source / "samples").glob("*.json")
                  if not p.name.endswith(".headers.json"))


# --------------------------------------------------------------------------- files and structure
def test_every_json_file_parses() -> None:
    files = sorted(MAPPINGS.rglob("*.json"))
    assert len(files) > 40
    for path in files:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            pytest.fail(f"{path.relative_to(MAPPINGS)}: {exc}")


@pytest.mark.parametrize("source", SOURCES)
def test_mapping_loads_and_every_items_file_maps_cleanly(source: str) -> None:
    loaded = mapping(source)
    item_files = {p.stem for p in (MAPPINGS / source / "samples" / "items").glob("*.json")}
    assert item_files == set(loaded.kinds)
    for kind in loaded.kinds:
        result = map_kind(source, kind, parse_all=True)
        assert result.errors == [], (kind, result.errors)
        assert result.skipped == 0, kind
        assert result.entities, kind


@pytest.mark.parametrize("source", SOURCES)
def test_every_sample_has_its_headers_without_signatures(source: str) -> None:
    samples = payload_samples(source)
    assert samples
    for sample in samples:
        headers_file = sample.with_name(sample.name.removesuffix(".json") + ".headers.json")
        headers = json.loads(headers_file.read_text())
        assert PROVIDER_HEADERS[source] <= set(headers), headers_file.name
        assert not SIGNATURE_HEADERS & {name.lower() for name in headers}, headers_file.name
        assert all(isinstance(v, str) and v for v in headers.values()), headers_file.name


def test_gitlab_samples_carry_what_their_gitlab_version_sends() -> None:
    """The samples said `User-Agent: GitLab/17.0.1` beside an `Idempotency-Key` (sent from 17.4)
    and issues with a `type` (from 17.2): whatever version a sample names, it must look like it."""
    versions = set()
    for sample in payload_samples("gitlab"):
        headers = json.loads(sample.with_name(sample.name.removesuffix(".json") + ".headers.json").read_text())
        match = re.fullmatch(r"GitLab/(\d+)\.(\d+)\.\d+", headers["User-Agent"])
        assert match, f"{sample.name}: {headers['User-Agent']}"
        version = (int(match[1]), int(match[2]))
        versions.add(version)
        assert ("Idempotency-Key" in headers) == (version >= (17, 4)), sample.name
        payload = json.loads(sample.read_text())
        if payload.get("object_kind") == "issue":
            assert ("type" in payload["object_attributes"]) == (version >= (17, 2)), sample.name
    assert min(versions) < (17, 2) <= (17, 4) <= max(versions)  # both shapes are covered


def _contains(value: Any, wanted: Any) -> bool:
    if value == wanted:
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_contains(child, wanted) for child in children)


@pytest.mark.parametrize("source", SOURCES)
def test_items_are_taken_from_the_sample_payloads(source: str) -> None:
    payloads = [json.loads(p.read_text()) for p in payload_samples(source)]
    for kind in mapping(source).kinds:
        for item in items(source, kind):
            assert any(_contains(p, item) for p in payloads), f"{source} {kind}: item not in any sample"


def _check_value(where: str, schema: dict[str, Any], value: Any) -> None:
    types = {"string": str, "number": int | float, "boolean": bool, "array": list, "object": dict}
    assert isinstance(value, types[schema["type"]]), f"{where}: {value!r} is not {schema['type']}"
    if schema["type"] == "number":
        assert not isinstance(value, bool), where
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if schema.get("format") == "date-time":
        datetime.fromisoformat(value)
    if schema.get("format") == "url":
        assert value.startswith("https://"), where
    if schema["type"] == "array" and "items" in schema:
        for element in value:
            _check_value(f"{where}[]", schema["items"], element)


@pytest.mark.parametrize("source", SOURCES)
def test_mapped_entities_fit_their_blueprints(source: str) -> None:
    bps = blueprints(source)
    targets = {bp["identifier"] for bp in bps.values()}
    for bp in bps.values():
        assert {r["target"] for r in bp["relations"].values()} <= targets, bp["identifier"]
    for kind in mapping(source).kinds:
        for mapped in map_kind(source, kind, parse_all=True).entities:
            entity = mapped.entity
            bp = bps[entity["blueprint"]]
            props = bp["schema"]["properties"]
            assert set(entity.get("properties", {})) <= set(props), entity["blueprint"]
            for name, value in entity.get("properties", {}).items():
                if value is not None:
                    _check_value(f"{entity['blueprint']}.{name}", props[name], value)
            assert set(entity.get("relations", {})) <= set(bp["relations"]), entity["blueprint"]
            for name, value in entity.get("relations", {}).items():
                many = bp["relations"][name]["many"]
                assert value is None or isinstance(value, list) == many, f"{entity['blueprint']}.{name}"


# --------------------------------------------------------------------------- exact entities
GITHUB_PR_OPENED = {
    "identifier": "acme/payments-api/pull/42",
    "title": "Retry idempotent charge requests on 5xx",
    "blueprint": "githubPullRequest",
    "properties": {
        "number": 42,
        "status": "open",
        "author": "alice-chen",
        "assignees": ["alice-chen"],
        "reviewers": ["bob-okafor"],
        "labels": ["enhancement", "payments"],
        "sourceBranch": "feature/retry-charges",
        "targetBranch": "main",
        "changedFiles": 5,
        "url": "https://github.com/acme/payments-api/pull/42",
        "createdAt": "2024-05-02T09:14:31Z",
        "updatedAt": "2024-05-02T09:14:31Z",
        "closedAt": None,
        "mergedAt": None,
    },
    "relations": {"repository": "acme/payments-api"},
}
GITHUB_PR_MERGED = {
    **GITHUB_PR_OPENED,
    "properties": {
        **GITHUB_PR_OPENED["properties"],
        "status": "merged",
        "reviewers": [],
        "updatedAt": "2024-05-03T09:06:30Z",
        "closedAt": "2024-05-03T09:06:29Z",
        "mergedAt": "2024-05-03T09:06:29Z",
    },
}
PD_INCIDENT_TRIGGERED = {
    "identifier": "Q2NKD3V8H6TJ0L",
    "title": "Charge API error rate above 5%",
    "blueprint": "pagerdutyIncident",
    "properties": {
        "number": 1842,
        "status": "triggered",
        "urgency": "high",
        "priority": "P1",
        "assignees": ["Alice Chen"],
        "escalationPolicy": "Payments on-call",
        "url": "https://acme.pagerduty.com/incidents/Q2NKD3V8H6TJ0L",
        "createdAt": "2024-05-04T02:17:45Z",
    },
    "relations": {"service": "PIJ90N7"},
}

# (source, kind, position among the entities that passed the selector, entity, misconfigurations)
EXACT: list[tuple[str, str, int, dict[str, Any], dict[str, str]]] = [
    ("github", "repository", 0, {
        "identifier": "acme/ledger-service",
        "title": "ledger-service",
        "blueprint": "githubRepository",
        "properties": {
            "description": "Double-entry ledger for settlements",
            "url": "https://github.com/acme/ledger-service",
            "defaultBranch": "main",
            "language": None,
            "visibility": "private",
            "archived": False,
            "topics": [],
            "lastPushAt": "2024-05-06T13:40:03Z",
        },
    }, {"properties.language": ".language"}),
    ("github", "pull-request", 0, GITHUB_PR_OPENED,
     {"properties.closedAt": ".closed_at", "properties.mergedAt": ".merged_at"}),
    ("github", "pull-request", 1, GITHUB_PR_MERGED, {}),
    ("github", "issue", 0, {
        "identifier": "acme/payments-api/issues/57",
        "title": "Refund webhook arrives before the charge is settled",
        "blueprint": "githubIssue",
        "properties": {
            "number": 57,
            "status": "open",
            "stateReason": None,
            "author": "bob-okafor",
            "assignees": [],
            "labels": ["bug"],
            "comments": 0,
            "url": "https://github.com/acme/payments-api/issues/57",
            "createdAt": "2024-05-03T15:22:09Z",
            "closedAt": None,
        },
        "relations": {"repository": "acme/payments-api"},
    }, {"properties.stateReason": ".state_reason", "properties.closedAt": ".closed_at"}),
    ("github", "release", 0, {
        "identifier": "acme/payments-api@v1.8.0",
        "title": "v1.8.0 — charge retries",
        "blueprint": "githubRelease",
        "properties": {
            "tag": "v1.8.0",
            "prerelease": False,
            "author": "alice-chen",
            "releaseNotes": "## What's changed\n* Retry idempotent charge requests on 5xx by @alice-chen in #42",
            "url": "https://github.com/acme/payments-api/releases/tag/v1.8.0",
            "createdAt": "2024-05-04T08:01:12Z",
            "publishedAt": "2024-05-04T08:03:40Z",
        },
        "relations": {"repository": "acme/payments-api"},
    }, {}),
    ("github", "workflow-run", 0, {
        "identifier": "acme/payments-api/actions/runs/9012345678",
        "title": "CI #311",
        "blueprint": "githubWorkflowRun",
        "properties": {
            "workflow": "CI",
            "status": "completed",
            "conclusion": "success",
            "trigger": "pull_request",
            "branch": "feature/retry-charges",
            "commitSha": "4b1e9d07c2f35a8e61d0b9c7a2e4f6d8c0b1a3e5",
            "runNumber": 311,
            "runAttempt": 1,
            "actor": "alice-chen",
            "url": "https://github.com/acme/payments-api/actions/runs/9012345678",
            "createdAt": "2024-05-02T09:14:40Z",
            "runStartedAt": "2024-05-02T09:14:40Z",
            "updatedAt": "2024-05-02T09:21:05Z",
        },
        "relations": {"repository": "acme/payments-api", "pullRequests": ["acme/payments-api/pull/42"]},
    }, {}),
    ("github", "push", 1, {
        "identifier": "e8d1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8",
        "title": "Document charge retry behaviour",
        "blueprint": "githubCommit",
        "properties": {
            "message": "Document charge retry behaviour",
            # the author has no GitHub account: the mapping falls back to the git name
            "author": "Dana Whitfield",
            "branch": "main",
            "pushedBy": "alice-chen",
            "filesChanged": 1,
            "url": "https://github.com/acme/payments-api/commit/e8d1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8",
            "committedAt": "2024-05-03T10:58:12+02:00",
        },
        "relations": {"repository": "acme/payments-api"},
    }, {}),
    ("gitlab", "project", 0, {
        "identifier": "acme/ledger-service",
        "title": "ledger-service",
        "blueprint": "gitlabProject",
        "properties": {
            "projectId": 318,
            "namespace": "acme",
            "description": None,
            "url": None,
            "defaultBranch": None,
            "visibility": "private",
        },
    }, {
        "properties.description": ".description",
        "properties.url": ".web_url",
        "properties.defaultBranch": ".default_branch",
    }),
    ("gitlab", "project", 1, {
        "identifier": "acme/payments-api",
        "title": "payments-api",
        "blueprint": "gitlabProject",
        "properties": {
            "projectId": 311,
            "namespace": "acme",
            "description": "Card and wallet payments service",
            "url": "https://gitlab.example.com/acme/payments-api",
            "defaultBranch": "main",
            "visibility": "internal",
        },
    }, {}),
    ("gitlab", "merge-request", 0, {
        "identifier": "acme/payments-api/merge_requests/17",
        "title": "Retry idempotent charge requests on 5xx",
        "blueprint": "gitlabMergeRequest",
        "properties": {
            "iid": 17,
            "status": "opened",
            "sourceBranch": "feature/retry-charges",
            "targetBranch": "main",
            "mergeStatus": "preparing",
            "authorId": 42,
            "reviewerIds": [57],
            "labels": ["backend"],
            "lastCommitSha": "4b1e9d07c2f35a8e61d0b9c7a2e4f6d8c0b1a3e5",
            "url": "https://gitlab.example.com/acme/payments-api/-/merge_requests/17",
            "createdAt": "2024-05-02T09:14:31Z",
            "updatedAt": "2024-05-02T09:14:33Z",
        },
        "relations": {"project": "acme/payments-api"},
    }, {}),
    ("gitlab", "issue", 0, {
        "identifier": "acme/payments-api/issues/23",
        "title": "Refund webhook arrives before the charge is settled",
        "blueprint": "gitlabIssue",
        "properties": {
            "iid": 23,
            "status": "opened",
            "labels": ["bug", "backend"],
            "authorId": 57,
            "assigneeIds": [42],
            "url": "https://gitlab.example.com/acme/payments-api/-/issues/23",
            "createdAt": "2024-05-03T15:22:09Z",
            "closedAt": None,
        },
        "relations": {"project": "acme/payments-api"},
    }, {"properties.closedAt": '.closed_at | sub(" UTC$"; "Z") | sub(" "; "T")'}),
    ("gitlab", "pipeline", 0, {
        "identifier": "acme/payments-api/pipelines/1288",
        "title": "feature/retry-charges #204",
        "blueprint": "gitlabPipeline",
        "properties": {
            "status": "success",
            "ref": "feature/retry-charges",
            "commitSha": "4b1e9d07c2f35a8e61d0b9c7a2e4f6d8c0b1a3e5",
            "source": "merge_request_event",
            "stages": ["test", "build"],
            "durationSeconds": 391,
            "url": "https://gitlab.example.com/acme/payments-api/-/pipelines/1288",
            "createdAt": "2024-05-02T09:14:40Z",
            "finishedAt": "2024-05-02T09:21:17Z",
        },
        "relations": {"project": "acme/payments-api"},
    }, {}),
    ("jira", "issue", 0, {
        "identifier": "PLAT-124",
        "title": "Add retry metrics to the charge client",
        "blueprint": "jiraIssue",
        "properties": {
            "url": "https://acme.atlassian.net/browse/PLAT-124",
            "status": "To Do",
            "statusCategory": "To Do",
            "issueType": "Sub-task",
            "priority": "Medium",
            "assignee": None,
            "reporter": "Alice Chen",
            "labels": [],
            "components": ["payments-api"],
            "created": "2024-05-02T11:31:07.882+0200",
            "updated": "2024-05-02T11:31:07.882+0200",
            "resolutionDate": None,
        },
        "relations": {"project": "PLAT", "parentIssue": "PLAT-123"},
    }, {
        "properties.assignee": ".fields.assignee.displayName",
        "properties.resolutionDate": ".fields.resolutiondate",
    }),
    ("jira", "issue", 1, {
        "identifier": "PLAT-123",
        "title": "Retry idempotent charge requests on 5xx",
        "blueprint": "jiraIssue",
        "properties": {
            "url": "https://acme.atlassian.net/browse/PLAT-123",
            "status": "In Progress",
            "statusCategory": "In Progress",
            "issueType": "Story",
            "priority": "High",
            "assignee": "Alice Chen",
            "reporter": "Bob Okafor",
            "labels": ["payments", "reliability"],
            "components": ["payments-api"],
            "created": "2024-04-29T10:02:11.204+0200",
            "updated": "2024-05-02T11:20:45.613+0200",
            "resolutionDate": None,
        },
        "relations": {"project": "PLAT", "parentIssue": None},
    }, {
        "properties.resolutionDate": ".fields.resolutiondate",
        "relations.parentIssue": "if .fields.issuetype.subtask == true then .fields.parent.key else null end",
    }),
    ("jira", "project", 0, {
        "identifier": "LEDG",
        "title": "Ledger",
        "blueprint": "jiraProject",
        "properties": {
            "url": "https://acme.atlassian.net/browse/LEDG",
            "projectType": None,
            "lead": "Bob Okafor",
        },
    }, {"properties.projectType": ".projectTypeKey"}),
    ("pagerduty", "incident", 0, PD_INCIDENT_TRIGGERED, {}),
    ("pagerduty", "incident", 1, {
        **PD_INCIDENT_TRIGGERED,
        "properties": {**PD_INCIDENT_TRIGGERED["properties"], "status": "resolved", "assignees": []},
    }, {}),
    ("pagerduty", "service", 0, {
        "identifier": "PIJ90N7",
        "title": "payments-api",
        "blueprint": "pagerdutyService",
        "properties": {
            "status": None,
            "description": None,
            "url": "https://acme.pagerduty.com/service-directory/PIJ90N7",
            "alertCreation": "create_alerts_and_incidents",
            "escalationPolicy": None,
            "teams": ["Payments"],
        },
    }, {
        "properties.status": ".status",
        "properties.description": ".description",
        "properties.escalationPolicy": ".escalation_policy.summary",
    }),
    ("stripe", "customer", 0, {
        "identifier": "cus_Q3kXz8VbN1rT5w",
        "title": "Northwind Traders",
        "blueprint": "stripeCustomer",
        "properties": {
            "email": "billing@northwind.example",
            "description": None,
            "country": "FR",
            "currency": None,
            "balance": 0,
            "delinquent": False,
            "livemode": True,
            "createdAt": "2024-05-04T13:42:05Z",
            "url": "https://dashboard.stripe.com/customers/cus_Q3kXz8VbN1rT5w",
        },
    }, {"properties.description": ".description", "properties.currency": ".currency"}),
    ("stripe", "subscription", 0, {
        "identifier": "sub_1PCy7tHx2Kq7Ra3UQm5Zp0Ye",
        "title": "Team (monthly)",
        "blueprint": "stripeSubscription",
        "properties": {
            "status": "active",
            "plan": "team_monthly",
            "quantity": 12,
            "monthlyAmount": 588,
            "currency": "eur",
            "billingInterval": "month",
            "cancelAtPeriodEnd": False,
            "currentPeriodEnd": "2024-06-04T13:42:10Z",
            "startedAt": "2024-05-04T13:42:10Z",
            "canceledAt": None,
            "url": "https://dashboard.stripe.com/subscriptions/sub_1PCy7tHx2Kq7Ra3UQm5Zp0Ye",
        },
        "relations": {"customer": "cus_Q3kXz8VbN1rT5w"},
    }, {"properties.canceledAt": ".canceled_at | todate"}),
]




def _exact(source: str, kind: str, position: int) -> tuple[dict[str, Any], dict[str, str]]:
    [found] = [(e, m) for s, k, p, e, m in EXACT if (s, k, p) == (source, kind, position)]
    return found


# the same object in another shape of the same API: the same entity
EXACT += [
    # GitLab before 17.2: no `type` in the issue (the selector failed: the delivery dead-lettered)
    ("gitlab", "issue", 1, *_exact("gitlab", "issue", 0)),
    # the story in an epic: Jira Cloud's `fields.parent` is the epic, no parentIssue (was "PLAT-100")
    ("jira", "issue", 2, *_exact("jira", "issue", 1)),
    # API version 2025-03-31.basil: `current_period_end` on the items only (was null)
    ("stripe", "subscription", 1, *_exact("stripe", "subscription", 0)),
]


@pytest.mark.parametrize(
    ("source", "kind", "position", "entity", "misconfigurations"),
    EXACT,
    ids=[f"{s}-{k}-{p}" for s, k, p, _, _ in EXACT],
)
def test_exact_entity(
    source: str, kind: str, position: int, entity: dict[str, Any], misconfigurations: dict[str, str]
) -> None:
    mapped = map_kind(source, kind).passed[position]
    assert mapped.kind == kind
    assert mapped.entity == entity
    assert mapped.misconfigurations == misconfigurations


def test_every_kind_has_an_exact_entity() -> None:
    covered = {(source, kind) for source, kind, *_ in EXACT}
    assert covered == {(s, k) for s in SOURCES for k in mapping(s).kinds}


# --------------------------------------------------------------------------- selectors
# (source, kind, items filtered out, identifiers of the entities that pass, in order)
SELECTED = [
    ("github", "push", 1, [
        "4b1e9d07c2f35a8e61d0b9c7a2e4f6d8c0b1a3e5", "e8d1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8",
    ]),
    ("github", "pull-request", 0, ["acme/payments-api/pull/42", "acme/payments-api/pull/42"]),
    ("gitlab", "issue", 1, ["acme/payments-api/issues/23", "acme/payments-api/issues/23"]),
    ("jira", "issue", 1, ["PLAT-124", "PLAT-123", "PLAT-123"]),
    ("pagerduty", "incident", 1, ["Q2NKD3V8H6TJ0L", "Q2NKD3V8H6TJ0L"]),
    ("stripe", "customer", 1, ["cus_Q3kXz8VbN1rT5w"]),
]


@pytest.mark.parametrize(("source", "kind", "filtered", "passed"), SELECTED,
                         ids=[f"{s}-{k}" for s, k, *_ in SELECTED])
def test_selector_filters(source: str, kind: str, filtered: int, passed: list[str]) -> None:
    result = map_kind(source, kind)
    assert result.filtered == filtered
    assert [m.entity["identifier"] for m in result.entities] == passed
    assert all(m.passed_selector for m in result.entities)


@pytest.mark.parametrize(("source", "kind", "identifier"), [
    ("gitlab", "issue", "acme/payments-api/issues/24"),
    ("jira", "issue", "PLAT-87"),
    ("pagerduty", "incident", "Q0R7T2W5Y8B1D4"),
    ("stripe", "customer", "cus_PzR4m2KdLq9s0e"),
])
def test_filtered_item_is_still_mapped_with_parse_all(source: str, kind: str, identifier: str) -> None:
    """Deletions map every item regardless of the selector: the filtered one is there, marked failed."""
    result = map_kind(source, kind, parse_all=True)
    assert [m.entity["identifier"] for m in result.failed] == [identifier]


# --------------------------------------------------------------------------- itemsToParse
def test_github_push_gives_one_commit_entity_per_commit() -> None:
    result = map_kind("github", "push", parse_all=True)
    by_item = [(m.item_index, m.entity["identifier"], m.passed_selector) for m in result.entities]
    assert by_item == [
        (0, "4b1e9d07c2f35a8e61d0b9c7a2e4f6d8c0b1a3e5", True),
        (0, "e8d1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8", True),
        (1, "d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4", False),  # feature branch push
    ]
    first = result.entities[0].entity
    assert first["title"] == "Retry idempotent charge requests on 5xx"  # subject line only
    assert first["properties"]["message"] == (
        "Retry idempotent charge requests on 5xx\n\nUses the Idempotency-Key already sent."
    )
    assert first["properties"]["author"] == "alice-chen"
    assert first["properties"]["filesChanged"] == 2
    feature = result.entities[2].entity
    assert feature["properties"]["branch"] == "feature/refund-ordering"


def test_processors_on_one_path_that_write_one_resource_share_its_order_key() -> None:
    """The GitHub config maps a repository from `repository` and from `push` events: their keys
    carried the processor's name, so a later push could be applied before an earlier edit."""
    config = load_config(MAPPINGS / "github" / "ocean-hook.yaml", env=webhook_samples.secrets_env())
    keys = []
    for name in ("repository.created", "push"):
        body, headers = webhook_samples.sample("github", name)
        payload = json.loads(body)
        payload["repository"]["full_name"] = "acme/one"
        body = json.dumps(payload).encode()
        signed = make_headers(webhook_samples.sign("github", body, headers))
        event = WebhookEvent("POST", "/webhooks/github", signed, body)
        admission = admit(event, config.processors_for_path("/webhooks/github"), now=None)
        assert admission.accepted, admission.reason
        keys.append(admission.order_key)
    assert keys == ["/webhooks/github:acme/one"] * 2


@pytest.mark.parametrize("root", [MAPPINGS, Path(__file__).resolve().parent.parent / "ocean_hook" / "templates"])
def test_stripe_amounts_are_monthly_and_links_open_test_mode_objects_in_test_mode(root: Path) -> None:
    """A quarterly price showed three times its monthly amount, a weekly one as monthly, and a
    test-mode object linked to the live dashboard (found by probing)."""
    stripe = Mapping.load(root / "stripe" / "port-app-config.yml")
    [subscriptions] = stripe.for_kind("subscription")
    [customers] = stripe.for_kind("customer")

    def subscription(interval: str, count: int) -> dict[str, Any]:
        price = {"unit_amount": 3000, "recurring": {"interval": interval, "interval_count": count}}
        return {"id": "sub_1", "livemode": False, "customer": "cus_1", "items": {"data": [{"quantity": 2,
                                                                                         "price": price}]}}

    mapped = subscriptions.map_items([subscription("month", 3), subscription("week", 1), subscription("year", 1)])
    properties = [m.entity["properties"] for m in mapped.entities]
    if "monthlyAmount" in properties[0]:
        assert [p["monthlyAmount"] for p in properties] == [20, 60 * 52 / 12, 5]
    assert properties[0]["url"] == "https://dashboard.stripe.com/test/subscriptions/sub_1"
    [live] = customers.map_items([{"id": "cus_1", "livemode": True}]).entities
    assert live.entity["properties"]["url"] == "https://dashboard.stripe.com/customers/cus_1"


# --------------------------------------------------------------------------- older and newer payload shapes
@pytest.mark.parametrize(("sample", "delivery_id"), [
    ("issue.open", "d41e8c2a-5f7b-4b09-a3c6-1e8d2f4a6b90"),  # Idempotency-Key (GitLab 17.4 on)
    ("issue.open.gitlab-17.1", "6f1d3b58-2e4a-4c7f-9b0d-8a2c4e6f1b37"),  # X-Gitlab-Event-UUID
])
async def test_gitlab_issue_deliveries_before_and_since_17_2_are_written(sample: str, delivery_id: str) -> None:
    """GitLab before 17.2 sends an issue without `type`: the selector `(.type | ascii_downcase)`
    failed on it ("explode input must be a string") and the whole delivery was dead-lettered."""
    config = load_config(MAPPINGS / "gitlab" / "ocean-hook.yaml", env=webhook_samples.secrets_env())
    body, headers = webhook_samples.sample("gitlab", sample)
    event = WebhookEvent("POST", "/webhooks/gitlab", make_headers(webhook_samples.sign("gitlab", body, headers)),
                         body)
    admission = admit(event, config.processors_for_path("/webhooks/gitlab"), now=None)
    assert admission.accepted, admission.reason
    assert admission.event.delivery_id == delivery_id
    result = await process(admission.event, admission.processors, config.load_mapping(), DryRunTarget(None),
                           Fetcher())
    assert result.errors == []
    written = [(m.entity["blueprint"], m.entity["identifier"]) for r in result.results for m in r.batch.upserts]
    assert written == [("gitlabProject", "acme/payments-api"), ("gitlabIssue", "acme/payments-api/issues/23")]


def test_jira_only_a_sub_task_links_to_its_parent() -> None:
    """Jira Cloud's `fields.parent` of a story is its epic, which the selector leaves out: the
    story linked to it, and Port created an empty jiraIssue for the epic (found by probing)."""
    story = webhook_samples.sample_payload("jira", "issue_updated.in-epic")["issue"]
    assert story["fields"]["issuetype"]["subtask"] is False
    assert story["fields"]["parent"]["fields"]["issuetype"]["name"] == "Epic"
    sub_task = webhook_samples.sample_payload("jira", "issue_created")["issue"]
    assert sub_task["fields"]["issuetype"]["subtask"] is True
    [issues] = mapping("jira").for_kind("issue")
    result = issues.map_items([story, sub_task])
    assert result.errors == []
    assert [(m.entity["identifier"], m.entity["relations"]["parentIssue"]) for m in result.passed] == [
        ("PLAT-123", None), ("PLAT-124", "PLAT-123"),
    ]


@pytest.mark.parametrize("root", [MAPPINGS, TEMPLATES])
def test_stripe_current_period_end_before_and_since_api_version_basil(root: Path) -> None:
    """API version 2025-03-31.basil moved `current_period_end` from the Subscription to its items:
    the period end of every subscription came out null (found by probing)."""
    [subscriptions] = Mapping.load(root / "stripe" / "port-app-config.yml").for_kind("subscription")
    classic, basil = items("stripe", "subscription")
    assert "current_period_end" not in basil and "current_period_end" in basil["items"]["data"][0]
    without_items = {"id": "sub_2", "customer": "cus_1", "livemode": False}
    empty_items = {**without_items, "items": {"object": "list", "data": []}}
    result = subscriptions.map_items([classic, basil, without_items, empty_items])
    assert result.errors == []
    period_ends = [m.entity["properties"]["currentPeriodEnd"] for m in result.entities]
    assert period_ends == ["2024-06-04T13:42:10Z", "2024-06-04T13:42:10Z", None, None]
    # without either, null rather than a jq error
    expr = subscriptions.resource.mappings["properties"]["currentPeriodEnd"]
    assert JqQuery(expr).first(without_items) is None
    assert JqQuery(expr).first(empty_items) is None


def test_pagerduty_sample_links_name_the_api_collection_of_their_type() -> None:
    """An escalation policy's `self` read `.../escalation_policys/...`: the API's path is
    `/escalation_policies/`."""
    links: list[tuple[str, str]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("type"), str) and isinstance(value.get("self"), str):
                links.append((value["type"], value["self"]))
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    for sample in payload_samples("pagerduty"):
        walk(json.loads(sample.read_text()))
    assert {kind for kind, _ in links} >= {"escalation_policy_reference", "priority_reference", "service_reference"}
    for kind, url in links:
        singular = kind.removesuffix("_reference")
        plural = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
        assert url.startswith("https://api.pagerduty.com/"), url
        collection = url.split("/")[-2]  # an inbound_integration is under .../integrations/
        assert collection == plural or plural.endswith("_" + collection), (kind, url)
