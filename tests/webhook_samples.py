"""The sample deliveries under mappings/<source>/samples/, signed at test time with each
provider's real scheme, as captures `ocean-hook replay` reads; plus the config copies and
catalog reads the replay tests share.

    config = source_config(tmp_path, "jira")               # ocean-hook.yaml + mapping, state in tmp
    write_captures(tmp_path / "caps", [capture("jira", "issue_created")])
    entities = catalog(config)                              # {(blueprint, identifier): entity}
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from ocean_hook.cli import app
from ocean_hook.config import Config, load_config
from ocean_hook.entity import Entity, EntityKey
from ocean_hook.events import WebhookEvent, event_to_capture, make_headers

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
#: the environment variable each source's ocean-hook.yaml reads its secret from, and its value here
SECRETS = {
    "github": ("GITHUB_WEBHOOK_SECRET", "gh-test-secret"),
    "gitlab": ("GITLAB_WEBHOOK_SECRET", "gl-test-token"),
    "jira": ("JIRA_WEBHOOK_SECRET", "jira-test-secret"),
    "pagerduty": ("PAGERDUTY_WEBHOOK_SECRET", "pd-test-secret"),
    "stripe": ("STRIPE_WEBHOOK_SECRET", "whsec_stripe-test-secret"),
    "custom": ("DEPLOYBOT_WEBHOOK_SECRET", "deploybot-test-secret"),
}
PATHS = {source: f"/webhooks/{source}" for source in SECRETS} | {"custom": "/webhooks/deploybot"}


def secrets_env() -> dict[str, str]:
    return dict(SECRETS.values())


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(source: str, body: bytes, headers: Mapping[str, str], *, secret: str | None = None,
         now: float | None = None) -> dict[str, str]:
    """`headers` plus the signature header the provider computes over `body`."""
    secret = SECRETS[source][1] if secret is None else secret
    signed = dict(headers)
    if source == "github":
        signed["X-Hub-Signature-256"] = "sha256=" + _hex(secret, body)
    elif source == "jira":
        signed["X-Hub-Signature"] = "sha256=" + _hex(secret, body)
    elif source == "pagerduty":
        signed["X-PagerDuty-Signature"] = "v1=" + _hex(secret, body)
    elif source == "gitlab":
        signed["X-Gitlab-Token"] = secret
    elif source == "stripe":
        stamp = str(int(time.time() if now is None else now))
        signed["Stripe-Signature"] = f"t={stamp},v1=" + _hex(secret, stamp.encode() + b"." + body)
    elif source == "custom":
        signed["X-DeployBot-Signature"] = "sha256=" + _hex(secret, body)
    return signed


def sample(source: str, name: str) -> tuple[bytes, dict[str, str]]:
    """The raw bytes of a sample payload and the headers the provider sends with it (unsigned)."""
    folder = MAPPINGS / source / "samples"
    return (folder / f"{name}.json").read_bytes(), json.loads((folder / f"{name}.headers.json").read_text())


def sample_payload(source: str, name: str) -> dict[str, Any]:
    return json.loads(sample(source, name)[0])


def capture(source: str, name: str, *, payload: Any = None, body: bytes | None = None,
            headers: Mapping[str, str] | None = None, secret: str | None = None, signed: bool = True,
            path: str | None = None, redact: bool = False) -> dict[str, Any]:
    """A capture of a signed sample delivery (or of `payload`/`body` sent with the sample's headers)."""
    raw, sample_headers = sample(source, name)
    if payload is not None:
        raw = json.dumps(payload, indent=2).encode()
    raw = body if body is not None else raw
    all_headers = {**sample_headers, **(headers or {})}
    if signed:
        all_headers = sign(source, raw, all_headers, secret=secret)
    event = WebhookEvent("POST", path or PATHS[source], make_headers(all_headers), raw)
    return event_to_capture(event, redact=redact)


def write_captures(directory: Path, captures: Iterable[dict[str, Any]], *, prefix: str = "") -> list[Path]:
    """One file per capture, numbered so a directory replays them in this order."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for n, doc in enumerate(captures, start=1):
        file = directory / f"{prefix}{n:02d}.json"
        file.write_text(json.dumps(doc))
        files.append(file)
    return files


def source_config(tmp_path: Path, source: str) -> Path:
    """The source's ocean-hook.yaml and mapping (and Python module), copied: state lands in tmp_path."""
    folder = tmp_path / source
    folder.mkdir(parents=True, exist_ok=True)
    for file in (MAPPINGS / source).iterdir():
        if file.suffix in (".yaml", ".yml", ".py"):
            shutil.copy(file, folder / file.name)
    return folder / "ocean-hook.yaml"


def catalog_path(config: Path | Config) -> Path:
    """The local catalog of a loaded config, or of a config file whose secrets are `secrets_env()`."""
    loaded = config if isinstance(config, Config) else load_config(config, env=secrets_env())
    return loaded.state_dir / "catalog.db"


def catalog(config: Path | Config) -> dict[EntityKey, Entity]:
    """Everything in the local catalog of this config (empty when it does not exist)."""
    path = catalog_path(config)
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT entity FROM entities").fetchall()
    entities = [json.loads(text) for (text,) in rows]
    return {(e["blueprint"], e["identifier"]): e for e in entities}


def replay(*args: str | Path) -> Result:
    """`ocean-hook replay ARGS` in-process."""
    return CliRunner().invoke(app, ["replay", *map(str, args)])


def replay_json(*args: str | Path, exit_code: int = 0) -> list[dict[str, Any]]:
    result = replay(*args, "--format", "json")
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def changes(delivery: Mapping[str, Any], *, writes_only: bool = True) -> list[tuple[str, str, str]]:
    """(action, blueprint, identifier) of a delivery's changes, in order."""
    return [(c["action"], c["blueprint"], c["identifier"]) for c in delivery["changes"]
            if not writes_only or c["action"] != "unchanged"]
