"""`replay`'s core: captured (or hand-made) deliveries through the same pipeline as the listener.

Every file gives one `ReplayOutcome`, even a file that cannot be read: a directory of captures
is replayed to the end and the bad ones are reported as failed, each with its reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ocean_hook.config import Config
from ocean_hook.datafiles import load_json
from ocean_hook.errors import InputError, OceanHookError
from ocean_hook.events import REDACTED, WebhookEvent, event_from_capture, is_capture, make_headers
from ocean_hook.mapping.misconfigured import Row as Misconfigured
from ocean_hook.pipeline import Admission, PipelineError, ProcessResult, admit, check_media_type, process
from ocean_hook.runtime import Runtime, make_fetcher, make_target
from ocean_hook.targets.base import Target


@dataclass
class ReplayOutcome:
    file: str
    status: str  # processed | skipped | failed | sent
    admission: Admission | None = None
    result: ProcessResult | None = None
    error: str | None = None
    verified: bool = False
    sent_status: int | None = None
    #: the delivery as read from the file (None when the file could not be read)
    event: WebhookEvent | None = None
    #: `--to`: the listener's JSON answer
    sent_answer: Any = None
    #: the file of this run that carried the same delivery (path and id) first
    duplicate_of: str | None = None

    @property
    def delivery_id(self) -> str | None:
        """The id the pipeline (or, with `--to`, the listener) gave the delivery."""
        event = self.admission.event if self.admission else self.event
        if event is not None and event.delivery_id:
            return event.delivery_id
        answer = self.sent_answer if isinstance(self.sent_answer, dict) else {}
        return answer.get("delivery_id")

    def misconfigured(self) -> list[Misconfigured]:
        """The fields whose jq gave null, one row each (as test-mapping names them)."""
        return self.result.misconfigured.rows() if self.result else []

    def kinds(self) -> list[str]:
        a = self.admission
        return sorted({k for p in a.processors for k in p.get_matching_kinds(a.event)}) if a else []

    def detail(self) -> str:
        """One line saying what happened, for the text output."""
        a = self.admission
        if self.sent_status is not None:
            answer = self.sent_answer if isinstance(self.sent_answer, dict) else {}
            reason = answer.get("reason") or answer.get("status") or self.error
            return f"listener answered {self.sent_status}" + (f": {reason}" if reason else "")
        if a is None:
            return self.error or ""
        if self.duplicate_of is not None:
            return f"duplicate of {self.duplicate_of}: the listener answers it 200 duplicate and processes it no more"
        if a.ignored:
            return f"ignored: {a.reason}"
        if not a.accepted:
            by = f" (processor {a.rejected_by})" if a.rejected_by else ""
            return f"{a.status} {a.label}: {a.reason}{by}"
        if self.error:
            return self.error
        routes = ", ".join(f"{p.name} → {', '.join(p.get_matching_kinds(a.event))}" for p in a.processors)
        return f"delivery {a.event.delivery_id}: {routes}"

    def to_json(self) -> dict[str, Any]:
        a = self.admission
        event = a.event if a else self.event
        doc: dict[str, Any] = {
            "file": self.file,
            "status": self.status,
            "delivery_id": self.delivery_id,
            "path": event.path if event else None,
            "answer": {"status": a.status, "label": a.label, "reason": a.reason} if a else None,
            "processors": [p.name for p in a.processors] if a else [],
            "kinds": self.kinds(),
            "rejected_by": a.rejected_by if a else None,
            "auth": _auth_result(a, self.verified),
            "validation": _validation_result(a),
            "changes": [c.to_json() for c in self.result.changes] if self.result else [],
            "summary": self.result.summary() if self.result else None,
            "misconfigured": [{"kind": kind, "field": path, "jq": expr, "entities": count, "example": example}
                              for kind, path, expr, count, example in self.misconfigured()],
            "errors": ([self.error] if self.error else []) + (self.result.errors if self.result else []),
        }
        if self.duplicate_of is not None:
            doc["duplicate_of"] = self.duplicate_of
        if self.sent_status is not None:
            doc["sent_status"] = self.sent_status
            doc["listener_answer"] = self.sent_answer
        return doc


def _auth_result(a: Admission | None, verified: bool) -> str:
    if a is None or a.status in (404, 415):
        return "not checked"
    if a.status == 401:
        return f"failed: {a.reason}"
    return "passed" if verified else "skipped (use --verify)"


def _validation_result(a: Admission | None) -> str:
    if a is None or a.status in (400, 401, 404, 415) or a.ignored:
        return "not checked"
    return f"failed: {a.reason}" if a.status == 422 else "passed"


def expand_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories contribute their *.json files in name order.

    The listener names captures `<received ms>-<delivery id>.json`, so name order is arrival
    order and a directory replays in the order the deliveries came in.
    """
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
            if not found:  # a wrong folder would otherwise "replay" nothing, successfully
                raise InputError("no .json files in this directory (captures are read from it, not below)",
                                 where=str(path))
            out += found
        elif path.exists():
            out.append(path)
        else:
            raise InputError("file not found", where=str(path))
    return out


def load_event(file: Path, *, path: str | None, headers: Sequence[str]) -> WebhookEvent:
    """A capture file, or (with `path`) a bare JSON payload sent to `path` with `headers`.

    Giving `path` says the files are bare payloads: the raw bytes of the file are the body, so
    a signature computed over the file verifies.
    """
    raw = file.read_bytes()
    doc = load_json(file, raw)
    if path is None:
        if is_capture(doc):
            return event_from_capture(doc, where=str(file))
        raise InputError("not a capture: a bare payload needs --path (the listener path it was sent to)",
                         where=str(file))
    return WebhookEvent("POST", path, make_headers(bare_payload_headers(path, headers)), raw)


def bare_payload_headers(path: str | None, headers: Sequence[str]) -> list[tuple[str, str]]:
    """The headers `--header` gives a bare payload sent to `--path` (both checked here)."""
    if path is not None and not path.startswith("/"):
        raise InputError(f"--path must start with '/', got {path!r}")
    pairs = [("Content-Type", "application/json")]
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header must look like 'Name: value', got {header!r}")
        pairs = [(k, v) for k, v in pairs if k.lower() != name.strip().lower()] + [(name.strip(), value.strip())]
    return pairs


def load_outcome_or_event(file: Path, *, path: str | None, headers: Sequence[str]) -> WebhookEvent | ReplayOutcome:
    """The event, or a failed outcome naming the file when it cannot be read."""
    try:
        return load_event(file, path=path, headers=headers)
    except OceanHookError as exc:
        return ReplayOutcome(str(file), "failed", error=str(exc))
    except OSError as exc:
        return ReplayOutcome(str(file), "failed", error=f"{file}: cannot read: {exc.strerror}")


def replay_target(config: Config, *, dry_run: bool) -> Target:
    """The configured target, or for `--dry-run` one that writes nothing at all (and reads the
    current state to diff against)."""
    return make_target(config, "dry-run" if dry_run else None)


def replay_runtime(config: Config, *, dry_run: bool) -> Runtime:
    return Runtime(config, config.load_mapping(), replay_target(config, dry_run=dry_run), make_fetcher(config))


async def replay_event(
    file: str, event: WebhookEvent, config: Config, runtime: Runtime, *, verify: bool,
    seen: dict[tuple[str, str, bytes], str] | None = None,
) -> ReplayOutcome:
    """The listener's checks then a worker's processing (timestamps are not checked). A dry run's
    `runtime.target` is a DryRunTarget. `seen` holds the (path, delivery id, body digest) of the files
    replayed before: a redelivery among them (a sender's retry, captured twice) is skipped, as
    the listener would answer it. A file that reuses an id with another body is someone's
    variant of a delivery, and runs."""
    unsupported = check_media_type(event) if config.processors_for_path(event.path) else None
    if event.method != "POST":  # as the listener answers it
        admission = Admission(405, f"method {event.method} not allowed; use POST", event)
    elif unsupported:
        admission = Admission(415, unsupported, event)
    else:
        admission = admit(event, config.processors_for_path(event.path), now=None, verify=verify)
    outcome = ReplayOutcome(file, "processed", admission, verified=verify, event=event)
    if not admission.accepted:
        skipped = admission.ignored or admission.challenge is not None  # nothing to apply, nothing wrong
        outcome.status = "skipped" if skipped else "failed"
        outcome.error = None if skipped else admission.reason
        return outcome
    if seen is not None and admission.event.delivery_id:
        key = (admission.event.path, admission.event.delivery_id, hashlib.sha256(admission.event.body).digest())
        if key in seen:
            outcome.status, outcome.duplicate_of = "skipped", seen[key]
            return outcome
        seen[key] = file
    try:
        outcome.result = await process(admission.event, admission.processors, runtime.mapping, runtime.target,
                                       runtime.fetcher)
    except PipelineError as exc:
        outcome.status = "failed"
        outcome.error = f"{exc} ({'retryable' if exc.retryable else 'not retryable'})"
    return outcome


#: `--to`: a listener journals and answers in milliseconds; one that does not answer is not waited on
SEND_TIMEOUT_SECONDS = 30.0
#: headers about the connection that carried the capture, not about the delivery (RFC 9110
#: 7.6.1's hop-by-hop ones, the length and host, and Content-Encoding: the capture holds the
#: body as decoded on receipt); the client writes its own
NOT_SENT_AGAIN = frozenset({
    "host", "content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "proxy-connection", "proxy-authorization", "expect",
})


async def send_event(file: str, event: WebhookEvent, url: str, session: aiohttp.ClientSession) -> ReplayOutcome:
    """`--to URL`: the request as captured, byte for byte, to a running listener."""
    headers = [(k, v) for k, v in event.headers.items() if k.lower() not in NOT_SENT_AGAIN]
    target = url.rstrip("/") + event.path
    outcome = ReplayOutcome(file, "sent", event=event)
    try:
        async with session.request(event.method, target, data=event.body, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_SECONDS)) as response:
            text = await response.text()
    except aiohttp.ClientConnectorError as exc:  # its own text says "ssl:default" of a plain http:// URL
        outcome.status, outcome.error = "failed", f"cannot send to {target}: {exc.strerror or exc.os_error}"
        return outcome
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a header aiohttp will not send (CR, LF)
        outcome.status, outcome.error = "failed", f"cannot send to {target}: {exc}"
        return outcome
    except TimeoutError:
        outcome.status, outcome.error = "failed", f"{target} did not answer within {SEND_TIMEOUT_SECONDS:g} s"
        return outcome
    outcome.sent_status = response.status
    try:
        outcome.sent_answer = json.loads(text)
    except ValueError:
        outcome.sent_answer = text[:200]
    if not 200 <= response.status < 300:
        outcome.status = "failed"
        outcome.error = f"{response.status}: {text[:200]}" + _redaction_hint(event, response.status)
    return outcome


def _redaction_hint(event: WebhookEvent, status: int) -> str:
    redacted = [k for k, v in event.headers.items() if v == REDACTED]
    if status != 401 or not redacted:
        return ""
    return f" (header {', '.join(redacted)} was redacted in the capture)"
