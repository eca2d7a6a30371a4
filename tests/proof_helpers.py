"""What the proof suites (test_proof_*.py) share: a listener child process driven by plain,
synchronous HTTP, and signers for each provider's scheme.

Synchronous on purpose: hypothesis runs plain functions, and `http.client` or a bare socket
send exactly the bytes a test writes (duplicate headers, no Content-Type, broken framing),
where a friendlier client would fix the request up first.

    proc = start_listener(config_path, env)              # `python -m ocean_hook serve` child
    reply = send(proc.url, "POST", "/webhooks/github", body, [("Content-Type", "application/json")])
    reply = exchange(proc.url, b"POST / HTTP/1.1\\r\\n...")   # raw bytes on a socket
    stop_listener(proc)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import standardwebhooks
import stripe
import svix
import yaml
from serve_helpers import ServeProcess, journal_deliveries

from ocean_hook.queue.base import Delivery

HeaderPairs = Sequence[tuple[str, str | bytes]]

# ----------------------------------------------------------------------------- the listener


def start_listener(config_path: Path, env: Mapping[str, str], *args: str) -> ServeProcess:
    """`ocean-hook serve` as a child process, from synchronous code (a module fixture)."""
    return asyncio.run(ServeProcess.start(config_path, *args, env=env))


def stop_listener(proc: ServeProcess) -> int:
    """SIGTERM and the exit code (killed after 20 s)."""
    if proc.process.poll() is None:
        proc.terminate()
    try:
        return proc.process.wait(timeout=20)
    except Exception:
        proc.kill()
        raise


def amend_config(path: Path, **top_level: Any) -> Path:
    """Add top-level keys (`fetch:`, `jq:`) to a config written by serve_helpers.write_config."""
    doc = yaml.safe_load(path.read_text())
    doc.update(top_level)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def poll(check: Callable[[], bool], *, what: Callable[[], str], timeout: float = 15.0) -> None:
    """Wait until `check()` holds; fail saying `what()` (the state it ended in) otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what()}")
        time.sleep(0.05)


def journaled(state_dir: Path) -> list[Delivery]:
    """Every delivery in the journal, read as another process would."""
    return asyncio.run(journal_deliveries(state_dir))


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def doc(self) -> Any:
        """The JSON answer, or None when the answer is not JSON (aiohttp's own 4xx)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def reason(self) -> str:
        doc = self.doc
        if isinstance(doc, dict):
            return str(doc.get("reason") or doc.get("status") or "")
        return self.body.decode("utf-8", "replace")


def send(
    url: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: HeaderPairs = (),
    *,
    chunk_size: int | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request on a fresh connection, headers exactly as given (duplicates kept, nothing added
    but Host). `chunk_size` sends the body chunked, without a Content-Length."""
    host, port = address(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if chunk_size:
            connection.putheader("Transfer-Encoding", "chunked")
        elif body or method not in ("GET", "HEAD"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        if chunk_size:
            for start in range(0, len(body), chunk_size):
                piece = body[start : start + chunk_size]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        elif body:
            connection.send(body)
        response = connection.getresponse()
        return Reply(response.status, response.read(), dict(response.getheaders()))
    finally:
        connection.close()


def exchange(url: str, data: bytes, *, timeout: float = 10.0) -> Reply:
    """Raw bytes on a socket, then the first answer parsed: for requests no client would send."""
    sock = socket.create_connection(address(url), timeout=timeout)
    try:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return Reply(response.status, response.read(), dict(response.getheaders()))
    finally:
        sock.close()


def request_head(method: str, path: str, headers: HeaderPairs) -> bytes:
    """The request line and header block as raw bytes (for `exchange` and slow clients)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) for name, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# ----------------------------------------------------------------------------- signers
# Each provider's scheme, computed by the provider's own package where one exists.

JSON = ("Content-Type", "application/json")


def now() -> int:
    return int(time.time())


def stripe_headers(body: bytes, secret: str, *, timestamp: int | None = None) -> list[tuple[str, str]]:
    """`Stripe-Signature` from the `stripe` package's own test helper."""
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp or now())
    return [JSON, ("Stripe-Signature", header)]


def slack_signature(body: bytes, secret: str, timestamp: int | str) -> str:
    """Slack's documented basestring: `v0:<timestamp>:<body>`, HMAC-SHA256, hex, `v0=` prefix
    (api.slack.com/authentication/verifying-requests-from-slack; Slack ships no Python signer
    in our dependencies)."""
    basestring = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest()


def slack_headers(
    body: bytes, secret: str, *, timestamp: int | None = None, content_type: str = "application/json"
) -> list[tuple[str, str]]:
    stamp = timestamp or now()
    return [("Content-Type", content_type), ("X-Slack-Request-Timestamp", str(stamp)),
            ("X-Slack-Signature", slack_signature(body, secret, stamp))]


def standard_headers(
    body: bytes, secret: str, *, msg_id: str, timestamp: int | None = None, svix_names: bool = False
) -> list[tuple[str, str]]:
    """Standard Webhooks headers signed by the `standardwebhooks` package, or Svix's (`svix-*`
    names) signed by the `svix` package."""
    stamp = timestamp or now()
    when = datetime.fromtimestamp(stamp, tz=UTC)
    if svix_names:
        signature = svix.webhooks.Webhook(secret).sign(msg_id, when, body.decode())
        prefix = "svix"
    else:
        signature = standardwebhooks.Webhook(secret).sign(msg_id, when, body.decode())
        prefix = "webhook"
    return [JSON, (f"{prefix}-id", msg_id), (f"{prefix}-timestamp", str(stamp)), (f"{prefix}-signature", signature)]


def whsec(key: bytes) -> str:
    """A Standard Webhooks secret for a raw key."""
    return "whsec_" + base64.b64encode(key).decode()


def replace(headers: HeaderPairs, name: str, value: str | bytes | None) -> list[tuple[str, str | bytes]]:
    """The headers with every `name` replaced by one `value` (or dropped when None)."""
    kept = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return kept if value is None else [*kept, (name, value)]


def header(headers: HeaderPairs, name: str) -> str:
    value = next(v for k, v in headers if k.lower() == name.lower())
    return value.decode() if isinstance(value, bytes) else value


def flip_byte(data: bytes, index: int) -> bytes:
    """`data` with one byte changed (every bit of it)."""
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


def flip_hex(text: str, index: int) -> str:
    """One hex digit changed: still well-formed, now wrong."""
    digit = text[index]
    return text[:index] + ("0" if digit != "0" else "1") + text[index + 1 :]


RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def record_result(name: str, doc: dict[str, Any]) -> None:
    """Print a proof suite's figures; with OCEAN_HOOK_RECORD_PROOF=1 also keep them for the README
    (benchmarks/results/<name>.json), so an ordinary test run leaves the work tree clean."""
    text = json.dumps(doc, indent=2) + "\n"
    print(f"{name}: {json.dumps(doc)}")
    if os.environ.get("OCEAN_HOOK_RECORD_PROOF"):
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{name}.json").write_text(text)
