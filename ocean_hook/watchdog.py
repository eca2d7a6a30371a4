"""A `serve` whose event loop stalls is stopped from outside, with the reason in its log.

A jq program runs inside the C library holding the GIL: one that never ends on some payload
(`until` whose condition the payload never meets, `range` over a huge number it carries) or a
Python processor's code that blocks freezes the whole process. No Python code in it runs again:
not the door, not /healthz, not a signal handler; SIGTERM and Ctrl-C are ignored. So a small
child process watches. The loop writes a heartbeat to it every second, and a line when a worker
starts or finishes a delivery. After `server.stall_timeout` without a heartbeat the child logs
which deliveries were being processed and kills `serve` with SIGKILL, so that a supervisor
restarts it. Nothing is lost: those deliveries are in progress in the journal and run again at
the next start, and the log line names them for whoever fixes the mapping.

    python -m ocean_hook.watchdog PID STALL_SECONDS text|json      (started by `Watchdog`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

log = logging.getLogger("ocean_hook.watchdog")

HEARTBEAT = b".\n"


class Watchdog:
    """The serving side: starts the child, beats, and says what the workers are on."""

    def __init__(self, stall_seconds: float, log_format: str) -> None:
        self.stall_seconds = stall_seconds
        self.log_format = log_format
        self._child: subprocess.Popen[bytes] | None = None
        self._fd = -1

    def start(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "ocean_hook.watchdog", str(os.getpid()), str(self.stall_seconds), self.log_format],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True,
        )
        assert self._child.stdin is not None
        self._fd = self._child.stdin.fileno()
        os.set_blocking(self._fd, False)

    async def beat(self) -> None:
        """Run on the event loop being watched, until cancelled."""
        interval = min(1.0, self.stall_seconds / 5)
        while True:
            self._send(HEARTBEAT)
            await asyncio.sleep(interval)

    @contextlib.contextmanager
    def working_on(self, queue_id: str, delivery_id: str) -> Iterator[None]:
        """Two short writes per delivery: the names the child gives if the loop stalls."""
        self._send(f"+{queue_id} {delivery_id}\n".encode("utf-8", "backslashreplace"))
        try:
            yield
        finally:
            self._send(f"-{queue_id}\n".encode())

    def _send(self, line: bytes) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError):  # a full pipe: the child is behind, not gone
            os.write(self._fd, line)

    def stop(self) -> None:
        """Closing the pipe tells the child to exit (as the kernel does if `serve` dies)."""
        if self._child is None:
            return
        assert self._child.stdin is not None
        with contextlib.suppress(OSError):
            self._child.stdin.close()
        self._fd = -1
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._child.kill()
        self._child = None


def watch(pid: int, stall_seconds: float, fd: int = 0) -> int:
    """The child: read heartbeats from `fd` until it closes (0) or goes quiet (kill `pid`, 1)."""
    working: dict[str, str] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([fd], [], [], stall_seconds)
        if not readable:
            return _stalled(pid, stall_seconds, working)
        chunk = os.read(fd, 65536)
        if not chunk:
            return 0
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            _note(line.decode("utf-8", "replace"), working)


def _note(line: str, working: dict[str, str]) -> None:
    if line.startswith("+"):
        queue_id, _, delivery_id = line[1:].partition(" ")
        working[queue_id] = delivery_id
    elif line.startswith("-"):
        working.pop(line[1:], None)


def _stalled(pid: int, stall_seconds: float, working: dict[str, str]) -> int:
    if os.getppid() != pid:  # `serve` is gone already (its pid may be another process's now)
        return 0
    if working:
        names = ", ".join(f"{queue_id} (delivery {delivery_id})" for queue_id, delivery_id in sorted(working.items()))
        doing = f"Deliveries being processed: {names}; they stay in the journal and run again at the next start"
    else:
        doing = "No delivery was being processed (a payload at the door, or a processor's code)"
    log.error(
        "ocean-hook serve (pid %d) has not run for %g s (server.stall_timeout): a jq program that never "
        "ends on a payload, or a processor's code that blocks; killing it so that it can be restarted. %s",
        pid, stall_seconds, doing,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return 1


def main(argv: list[str]) -> int:
    pid, stall_seconds, log_format = int(argv[0]), float(argv[1]), argv[2]
    from ocean_hook.logs import JsonFormatter, TextFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # Ctrl-C reaches the whole process group, and a service manager may send SIGTERM to every
    # process of the service: `serve` handles both, and this child keeps watching it drain
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return watch(pid, stall_seconds)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
