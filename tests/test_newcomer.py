"""The newcomer's path, end to end, with the real command: init, check, serve, a signed GitHub
delivery, the entity in the local catalog, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ocean_hook.targets.local import LocalCatalog

SAMPLES = Path(__file__).resolve().parent.parent / "mappings" / "github" / "samples"
BIN = Path(sys.executable).parent


def ocean_hook(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ocean-hook"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def stderr_lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stderr, line by line, read by a thread so a test can wait with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str], pattern: str, timeout: float = 30) -> re.Match[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n{''.join(seen)}")


def drain(lines: queue.Queue[str]) -> str:
    """What is left of a finished process's stderr."""
    out = []
    with contextlib.suppress(queue.Empty):
        while True:
            out.append(lines.get(timeout=1))
    return "".join(out)


def signed_delivery(secret: str) -> tuple[bytes, dict[str, str]]:
    """GitHub's pull_request.opened sample, signed as GitHub signs it."""
    body = (SAMPLES / "pull_request.opened.json").read_bytes()
    headers = json.loads((SAMPLES / "pull_request.opened.headers.json").read_text())
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {**headers, "X-Hub-Signature-256": f"sha256={signature}"}


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def wait_for_entity(path: Path, blueprint: str, identifier: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    catalog = LocalCatalog(path)
    try:
        while time.monotonic() < deadline:
            if any(e["identifier"] == identifier for e in catalog.list_entities(blueprint)):
                return
            time.sleep(0.05)
    finally:
        asyncio.run(catalog.close())
    raise AssertionError(f"{blueprint}/{identifier} never reached {path}")


def test_init_check_serve_deliver_and_find_the_entity(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "NO_COLOR"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"

    init = ocean_hook("init", "--source", "github", cwd=tmp_path, env=env)
    assert init.returncode == 0, init.stderr
    name, secret = re.search(r"export ([A-Z_]+)=([0-9a-f]{64})", init.stdout).groups()  # type: ignore[union-attr]
    env[name] = secret

    check = ocean_hook("check", cwd=tmp_path, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "ok: 3 processors, 3 kinds"

    server = subprocess.Popen([str(BIN / "ocean-hook"), "serve", "--port", "0"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = stderr_lines(server)
    try:
        url = wait_for_line(log, r"ocean-hook listening on (http://127\.0\.0\.1:\d+)").group(1)
        body, headers = signed_delivery(secret)
        assert post(f"{url}/webhooks/github", body, headers) == 202
        wait_for_entity(tmp_path / ".ocean-hook" / "catalog.db", "githubPullRequest", "acme/payments-api/pull/42")
        found = ocean_hook("catalog", "get", "githubPullRequest", "acme/payments-api/pull/42", cwd=tmp_path, env=env)
        assert found.returncode == 0, found.stderr
        entity = json.loads(found.stdout)
        assert entity["properties"]["number"] == 42
        assert entity["relations"] == {"repository": "acme/payments-api"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    rest = drain(log)
    assert server.returncode == 0, rest
    assert "Traceback" not in rest
