"""Mapping throughput: ocean-hook's engine against one jq call per field per item (Ocean's way).

    python benchmarks/bench_mapping.py [--items 10000] [--repeat 3] [--ocean-venv /tmp/ocean-venv]

Maps GitHub-like pull-request payloads through a mapping with a selector, 10 properties and 2
relations, three ways in the same run, and checks that all give identical entities and
misconfigurations:

- engine:    `ResourceMapper.map_items` (one compiled jq program per resource, run per chunk);
- per-field: every expression compiled once (cached) with the same env guard, then run as its
             own jq call per field per item, `.input_value(item).first()`, an error giving None,
             as Ocean's JQEntityProcessor does;
- port-ocean (with --ocean-venv): the real `JQEntityProcessorSync._get_mapped_entity` of the
             `port-ocean` package, run in its own virtual environment (Python 3.12+) by
             benchmarks/ocean_reference.py. Ocean forks worker processes around this per-item
             call; one process is measured here, as for the other two.

Each approach runs `--repeat` times, alternating, and the best time counts (the machine may be
shared). Exit status 1 if the outputs differ.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jq

from ocean_hook.mapping.engine import Mapping, ResourceMapper
from ocean_hook.mapping.jq import normalize_quotes
from ocean_hook.mapping.models import parse_port_app_config
from ocean_hook.yamlfile import dotted

HERE = Path(__file__).resolve().parent
ENV_GUARD = "def env: {}; {} as $ENV | "  # what Ocean prepends unless environment access is allowed

MAPPING = r"""
resources:
  - kind: pull-request
    selector:
      query: .draft == false and (.state == 'open' or .merged_at != null)
    port:
      entity:
        mappings:
          identifier: .base.repo.name + '-' + (.number | tostring)
          title: .title
          blueprint: '"githubPullRequest"'
          properties:
            creator: .user.login
            assignees: '[.assignees[].login]'
            reviewers: '[.requested_reviewers[].login]'
            labels: '[.labels[].name]'
            status: if .merged_at != null then 'merged' else .state end
            mergedAt: .merged_at
            createdAt: .created_at
            link: .html_url
            changedLines: .additions + .deletions
            leadTimeHours: >-
              (.created_at as $created | .merged_at as $merged |
              ($created | sub("\\..*Z$"; "Z") | strptime("%Y-%m-%dT%H:%M:%SZ") | mktime) as $start |
              ($merged | if . == null then null else sub("\\..*Z$"; "Z") |
              strptime("%Y-%m-%dT%H:%M:%SZ") | mktime end) as $end |
              if $end == null then null else ((($end - $start) / 3600) * 100 | floor) / 100 end)
          relations:
            repository: .base.repo.full_name
            author: .user.login
"""

API = "https://api.github.test"
LABELS = ["bug", "feature", "chore", "urgent"]


def _user(rng: random.Random) -> dict[str, Any]:
    login = f"dev{rng.randrange(200)}"
    return {
        "login": login, "id": rng.randrange(10**7), "node_id": f"MDQ6VXNlcj{rng.randrange(10**6)}",
        "avatar_url": f"https://avatars.github.test/u/{login}?v=4", "gravatar_id": "",
        "url": f"{API}/users/{login}", "html_url": f"https://github.test/{login}",
        "followers_url": f"{API}/users/{login}/followers", "repos_url": f"{API}/users/{login}/repos",
        "events_url": f"{API}/users/{login}/events{{/privacy}}", "type": "User", "site_admin": False,
    }


def _repo(rng: random.Random, name: str, owner: dict[str, Any]) -> dict[str, Any]:
    full = f"acme/{name}"
    urls = {f"{k}_url": f"{API}/repos/{full}/{k}" for k in (
        "forks", "keys", "collaborators", "teams", "hooks", "issue_events", "events", "assignees",
        "branches", "tags", "blobs", "git_tags", "git_refs", "trees", "statuses", "languages",
        "stargazers", "contributors", "subscribers", "subscription", "commits", "git_commits",
        "comments", "issue_comment", "contents", "compare", "merges", "archive", "downloads",
        "issues", "pulls", "milestones", "notifications", "labels", "releases", "deployments",
    )}
    return {
        "id": rng.randrange(10**8), "name": name, "full_name": full, "private": rng.random() < 0.3,
        "owner": owner, "html_url": f"https://github.test/{full}", "description": f"The {name} service",
        "fork": False, "url": f"{API}/repos/{full}", **urls,
        "created_at": "2021-04-01T09:00:00Z", "updated_at": "2024-06-01T09:00:00Z",
        "default_branch": "main", "language": rng.choice(["Python", "Go", "TypeScript", None]),
        "size": rng.randrange(10**5), "stargazers_count": rng.randrange(500), "open_issues_count": rng.randrange(80),
        "topics": rng.sample(["api", "web", "infra", "payments", "search"], 2), "visibility": "internal",
    }


def make_items(count: int, seed: int = 7, *, compact: bool = False) -> list[dict[str, Any]]:
    """GitHub-like pull requests (the REST API's shape); `compact` leaves out the repo objects' URLs."""
    rng = random.Random(seed)
    repos = [f"service-{i}" for i in range(40)]
    items = []
    for number in range(1, count + 1):
        repo = rng.choice(repos)
        day = rng.randrange(10, 27)
        created = f"2024-0{rng.randrange(1, 10)}-{day}T{rng.randrange(10, 24)}:15:00Z"
        merged = rng.random() < 0.55
        merged_at = f"{created[:8]}{day + rng.randrange(0, 3)}T{rng.randrange(10, 24)}:45:00.000Z" if merged else None
        state = "closed" if merged or rng.random() < 0.2 else "open"
        author = _user(rng)
        base_repo = _repo(rng, repo, _user(rng))
        if compact:
            base_repo = {k: v for k, v in base_repo.items() if not k.endswith("_url")}
        items.append({
            "url": f"{API}/repos/acme/{repo}/pulls/{number}", "id": 10**8 + number, "number": number,
            "state": state, "locked": False,
            "title": f"Change {number}: tune {rng.choice(['retries', 'cache', 'docs'])}",
            "user": author, "body": "Summary of the change.\n\n" + "Details. " * rng.randrange(5, 40),
            "created_at": created, "updated_at": created,
            "closed_at": merged_at or (created if state == "closed" else None), "merged_at": merged_at,
            "merge_commit_sha": f"{rng.getrandbits(160):040x}" if merged else None,
            "assignees": [_user(rng) for _ in range(rng.randrange(0, 3))],
            "requested_reviewers": [_user(rng) for _ in range(rng.randrange(0, 3))],
            "labels": [{"id": i, "name": name, "color": "ededed", "default": False}
                       for i, name in enumerate(rng.sample(LABELS, rng.randrange(0, 3)))],
            "draft": rng.random() < 0.1, "html_url": f"https://github.test/acme/{repo}/pull/{number}",
            "head": {"label": f"acme:feature-{number}", "ref": f"feature-{number}",
                     "sha": f"{rng.getrandbits(160):040x}", "user": author, "repo": base_repo},
            "base": {"label": "acme:main", "ref": "main", "sha": f"{rng.getrandbits(160):040x}",
                     "user": base_repo["owner"], "repo": base_repo},
            "author_association": "MEMBER", "merged": merged, "comments": rng.randrange(10),
            "commits": rng.randrange(1, 20), "additions": rng.randrange(500), "deletions": rng.randrange(300),
            "changed_files": rng.randrange(1, 30),
        })
    return items


# ------------------------------------------------------------------------------- the approaches
Output = list[tuple[dict[str, Any], dict[str, str]]]


def run_engine(mapper: ResourceMapper, items: list[Any]) -> Output:
    result = mapper.map_items(items)
    assert not result.errors, result.errors[:3]
    return [(m.entity, m.misconfigurations) for m in result.entities]


def _leaves(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in _leaves(value, (*path, key))]
    return [(path, tree)]


def _set(tree: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


class PerField:
    """Ocean's way: each expression compiled once, then one jq call per field per item."""

    def __init__(self, mapper: ResourceMapper) -> None:
        resource = mapper.resource
        self.selector = jq.compile(ENV_GUARD + normalize_quotes(resource.selector_query))
        self.fields = [(path, expr, jq.compile(ENV_GUARD + normalize_quotes(expr)))
                       for path, expr in _leaves(resource.mappings)]

    def run(self, items: list[Any]) -> Output:
        out: Output = []
        for item in items:
            passed = self.selector.input_value(item).first()
            if not isinstance(passed, bool):
                raise ValueError(f"selector gave {passed!r}")
            if not passed:
                continue
            entity: dict[str, Any] = {}
            misconfigured: dict[str, str] = {}
            for path, expr, program in self.fields:
                try:
                    value = program.input_value(item).first()
                except Exception:  # an error or no output: None, as in Ocean
                    value = None
                if value is None:
                    misconfigured[dotted(path)] = expr
                _set(entity, path, value)
            if entity.get("identifier") and entity.get("blueprint"):
                out.append((entity, misconfigured))
        return out


def run_ocean(venv: Path, mapping: dict[str, Any], items: list[Any], repeat: int) -> tuple[float, Output, str]:
    """The real port-ocean processor, in its own interpreter: (best seconds, output, version)."""
    python = venv / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        given, produced = Path(tmp) / "input.json", Path(tmp) / "output.jsonl"
        given.write_text(json.dumps({"resource": mapping, "items": items}))
        done = subprocess.run(
            [str(python), str(HERE / "ocean_reference.py"), str(given), str(produced), str(repeat)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"port-ocean run failed: {done.stderr.strip()[-2000:]}")
        report = json.loads(done.stdout)
        output = [(row["entity"], row["misconfigurations"])
                  for row in map(json.loads, produced.read_text().splitlines())]
    return report["seconds"], output, report["version"]


# ------------------------------------------------------------------------------- the run
def best_of(repeat: int, runs: dict[str, Any]) -> tuple[dict[str, float], dict[str, Output]]:
    times = {name: float("inf") for name in runs}
    outputs: dict[str, Output] = {}
    for _ in range(repeat):
        for name, run in runs.items():  # alternate, so a busy moment hurts both alike
            started = time.perf_counter()
            outputs[name] = run()
            times[name] = min(times[name], time.perf_counter() - started)
    return times, outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ocean-venv", type=Path, help="a virtual environment with port-ocean installed")
    args = parser.parse_args()

    items = make_items(args.items, args.seed)
    size = sum(len(json.dumps(item)) for item in items) / len(items)
    mapper = Mapping(parse_port_app_config(MAPPING, "bench-mapping.yml")).mappers[0]
    per_field = PerField(mapper)
    properties = len(mapper.resource.mappings["properties"])
    relations = len(mapper.resource.mappings["relations"])
    print(f"{len(items):,} GitHub-like pull requests, {size / 1024:.1f} KB each on average; mapping: selector, "
          f"identifier/title/blueprint, {properties} properties, {relations} relations; best of {args.repeat}")
    print(f"python {sys.version.split()[0]}, jq.py {importlib.metadata.version('jq')}")

    times, outputs = best_of(args.repeat, {
        "engine": lambda: run_engine(mapper, items),
        "per-field": lambda: per_field.run(items),
    })
    labels = {"engine": "ocean-hook engine (one jq program per resource)",
              "per-field": "one jq call per field per item (Ocean's way)"}
    if args.ocean_venv and not (args.ocean_venv / "bin" / "python").exists():
        raise SystemExit(f"--ocean-venv {args.ocean_venv}: no bin/python there; make one with: python3.12 -m venv "
                         f"{args.ocean_venv} && {args.ocean_venv}/bin/pip install port-ocean==0.56.2")
    if args.ocean_venv:
        raw = json.loads(json.dumps(parse_port_app_config(MAPPING, "m.yml").source.data["resources"][0]))
        seconds, output, version = run_ocean(args.ocean_venv, raw, items, args.repeat)
        times["port-ocean"], outputs["port-ocean"] = seconds, output
        labels["port-ocean"] = f"port-ocean {version} JQEntityProcessorSync"

    print()
    print(f"{'approach':<52}{'seconds':>9}{'items/s':>11}{'vs per-field':>14}")
    for name, seconds in times.items():
        ratio = times["per-field"] / seconds
        print(f"{labels[name]:<52}{seconds:>9.3f}{len(items) / seconds:>11,.0f}{ratio:>13.1f}x")
    reference = outputs["per-field"]
    identical = {name: output == reference for name, output in outputs.items()}
    misconfigured = sum(len(m) for _, m in reference)
    print()
    verdicts = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in identical.items())
    print(f"outputs identical: {verdicts} "
          f"({len(reference):,} entities, {len(items) - len(reference):,} filtered, "
          f"{misconfigured:,} misconfigured fields)")
    speedup = times["per-field"] / times["engine"]
    print(f"goal, at least 5x the per-field approach: {'met' if speedup >= 5 else 'NOT met'} ({speedup:.1f}x)")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
