"""`replay`'s core: captured (or hand-made) deliveries through the same pipeline as the listener."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ocean_hook.config import Config
from ocean_hook.datafiles import load_json
from ocean_hook.errors import InputError
from ocean_hook.events import WebhookEvent, event_from_capture, is_capture, make_headers
from ocean_hook.pipeline import Admission, PipelineError, ProcessResult, admit, process
from ocean_hook.runtime import Runtime


@dataclass
class ReplayOutcome:
    file: str
    status: str  # processed | skipped | failed | sent
    admission: Admission | None = None
    result: ProcessResult | None = None
    error: str | None = None
    verified: bool = False
    sent_status: int | None = None

    def to_json(self) -> dict[str, Any]:
        a = self.admission
        doc: dict[str, Any] = {
            "file": self.file,
            "status": self.status,
            "delivery_id": a.event.delivery_id if a else None,
            "path": a.event.path if a else None,
            "answer": {"status": a.status, "reason": a.reason} if a else None,
            "processors": [p.name for p in a.processors] if a else [],
            "kinds": sorted({k for p in a.processors for k in p.get_matching_kinds(a.event)}) if a else [],
            "auth": _auth_result(a, self.verified),
            "validation": _validation_result(a),
            "changes": [c.to_json() for c in self.result.changes] if self.result else [],
            "errors": ([self.error] if self.error else []) + (self.result.errors if self.result else []),
        }
        if self.sent_status is not None:
            doc["sent_status"] = self.sent_status
        return doc


def _auth_result(a: Admission | None, verified: bool) -> str:
    if a is None:
        return "not checked"
    if a.status == 401:
        return f"failed: {a.reason}"
    if not verified:
        return "skipped (use --verify)"
    return "not checked" if a.status == 404 or a.ignored else "passed"


def _validation_result(a: Admission | None) -> str:
    if a is None or a.status in (401, 404, 400) or a.ignored:
        return "not checked"
    return f"failed: {a.reason}" if a.status == 422 else "passed"


def expand_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories contribute their *.json files in name order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
        elif path.exists():
            out.append(path)
        else:
            raise InputError("file not found", where=str(path))
    return out


def load_event(file: Path, *, path: str | None, headers: Sequence[str]) -> WebhookEvent:
    """A capture file, or a bare JSON payload sent to `path` with the given headers."""
    raw = file.read_bytes()
    doc = load_json(file, raw)
    if is_capture(doc) and path is None:
        return event_from_capture(doc, where=str(file))
    if path is None:
        raise InputError("a bare payload needs --path (the listener path it was sent to)", where=str(file))
    pairs = [("Content-Type", "application/json")]
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header must look like 'Name: value', got {header!r}")
        pairs = [(k, v) for k, v in pairs if k.lower() != name.strip().lower()] + [(name.strip(), value.strip())]
    return WebhookEvent("POST", path, make_headers(pairs), raw)


async def replay_event(
    file: str, event: WebhookEvent, config: Config, runtime: Runtime, *, verify: bool, dry_run: bool
) -> ReplayOutcome:
    admission = admit(event, config.processors_for_path(event.path), now=None, verify=verify)
    if not admission.accepted:
        status = "skipped" if admission.ignored else "failed"
        return ReplayOutcome(file, status, admission, error=None if admission.ignored else admission.reason,
                             verified=verify)
    try:
        result = await process(admission.event, admission.processors, runtime.mapping, runtime.target,
                               runtime.fetcher, dry_run=dry_run)
    except PipelineError as exc:
        return ReplayOutcome(file, "failed", admission, error=str(exc), verified=verify)
    return ReplayOutcome(file, "processed", admission, result, verified=verify)


async def send_event(file: str, event: WebhookEvent, url: str, session: aiohttp.ClientSession) -> ReplayOutcome:
    """`--to URL`: the request as captured, to a running listener."""
    headers = [(k, v) for k, v in event.headers.items() if k.lower() not in ("host", "content-length")]
    target = url.rstrip("/") + event.path
    try:
        async with session.request(event.method, target, data=event.body, headers=headers) as response:
            text = await response.text()
    except aiohttp.ClientError as exc:
        return ReplayOutcome(file, "failed", error=f"cannot send to {target}: {exc}")
    ok = 200 <= response.status < 300
    return ReplayOutcome(file, "sent" if ok else "failed", sent_status=response.status,
                         error=None if ok else f"{response.status}: {text[:200]}")
