"""A real, throwaway redis-server on a free loopback port.

    with redis_server() as url:      # "redis://127.0.0.1:<port>/0"
        ...

Nothing is persisted (`--save "" --appendonly no`) and the working directory is a temp dir, so
the server leaves no trace and never touches a system instance on 6379.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(binary: str | None = None, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Start redis-server, wait for PING, yield its URL, stop it (also when the test failed)."""
    binary = binary or shutil.which("redis-server")
    if binary is None:
        raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="ocean-hook-redis-") as workdir:
        for _ in range(3):  # another process may grab the free port before redis binds it
            port = free_port()
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            if _wait_until_up(proc, port, startup_timeout):
                break
            _stop(proc)
        else:
            output = proc.stdout.read().decode(errors="replace")[-2000:] if proc.stdout else ""
            raise RedisServerError(f"redis-server did not answer PING on 127.0.0.1:{port}\n{output}")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)


def _wait_until_up(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ping(port):
            return True
        time.sleep(0.02)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
