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

A delivery that stalls the loop every time would have `serve` killed at every start. So the
child also writes the deliveries it saw being processed to `stalls.json` in the state
directory; the next `serve` runs those one at a time before it listens (`alone`), and one that
stalls the loop then, with nothing else running, is recorded as the culprit and dead-lettered
at the following start instead of being run again.

    python -m ocean_hook.watchdog PID STALL_SECONDS text|json STALLS_FILE|- WHAT SETTING   (by `Watchdog`)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("ocean_hook.watchdog")

HEARTBEAT = b".\n"
STALLS_FILE = "stalls.json"


@dataclass
class Stall:
    """A delivery being processed when the loop stalled; `alone`: nothing else was running, so
    the stall was its own."""

    delivery_id: str
    alone: bool = False


def as_recorded(delivery_id: str) -> str:
    """A delivery id as the stall record keeps it: one line (a Python processor's id, or one a
    payload gave, may hold a line break), in UTF-8. The next start finds the culprit by this
    form; compared with the id as sent, a culprit with a line break in its id was run alone,
    stalled and killed at every start."""
    return delivery_id.replace("\n", " ").encode("utf-8", "backslashreplace").decode()


def read_stalls(path: Path | None) -> dict[str, Stall]:
    """Queue id -> Stall; nothing for a file that is missing or unreadable (it is advice)."""
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(queue_id): Stall(**fields) for queue_id, fields in doc["deliveries"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_stalls(path: Path | None, stalls: dict[str, Stall]) -> None:
    if path is None:
        return
    if not stalls:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"deliveries": {k: asdict(v) for k, v in stalls.items()}}), encoding="utf-8")
    partial.replace(path)


class Watchdog:
    """The serving side: starts the child, beats, and says what the workers are on."""

    def __init__(self, stall_seconds: float, log_format: str, stalls_path: Path | None, *,
                 what: str = "ocean-hook serve", setting: str = "server.stall_timeout") -> None:
        """`stalls_path` None: a one-off command (test-mapping), nothing to record or restart;
        `what` and `setting` name the process and the option in the child's message."""
        self.stall_seconds = stall_seconds
        self.log_format = log_format
        self.stalls_path = stalls_path
        self.what, self.setting = what, setting
        self._child: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._working: dict[str, str] = {}  # told again to a child started anew
        self._alone = False

    @classmethod
    def for_command(cls, command: str, stall_seconds: float) -> Watchdog | None:
        """The watchdog of a one-off command (`--stall-timeout`, 0: none), at least a second."""
        if stall_seconds <= 0:
            return None
        return cls(max(stall_seconds, 1.0), "text", None, what=f"ocean-hook {command}", setting="--stall-timeout")

    @property
    def _interval(self) -> float:
        """Seconds between heartbeats: five or more within the stall timeout."""
        return min(1.0, self.stall_seconds / 5)

    def start(self) -> None:
        """The child has a process group of its own: Ctrl-C at a terminal (or a signal to
        `serve`'s group) is for `serve`, which stops it by closing the pipe once it has drained."""
        self._child = subprocess.Popen(
            [sys.executable, "-m", "ocean_hook.watchdog", str(os.getpid()), str(self.stall_seconds), self.log_format,
             str(self.stalls_path or "-"), self.what, self.setting],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True, process_group=0,
        )
        assert self._child.stdin is not None
        self._fd = self._child.stdin.fileno()
        os.set_blocking(self._fd, False)
        self.alone(self._alone)
        for queue_id, delivery_id in self._working.items():
            self._say_working(queue_id, delivery_id)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The child started and the running event loop beating, for the `with` block."""
        self.start()
        beating = asyncio.create_task(self.beat())
        try:
            yield
        finally:
            beating.cancel()
            self.stop()

    async def beat(self) -> None:
        """Run on the event loop being watched, until cancelled. A child that died (killed by
        someone) is started again: `serve` must not go on unwatched without anyone knowing."""
        while True:
            if self._child is not None and (code := self._child.poll()) is not None:
                log.warning("the watchdog process %d exited (code %s); starting another", self._child.pid, code)
                self._close()
                self.start()
            self._send(HEARTBEAT)
            await asyncio.sleep(self._interval)

    @contextlib.contextmanager
    def working_on(self, queue_id: str, delivery_id: str) -> Iterator[None]:
        """Two short writes per delivery: the names the child gives if the loop stalls."""
        delivery_id = as_recorded(delivery_id)
        self._working[queue_id] = delivery_id
        self._say_working(queue_id, delivery_id)
        try:
            yield
        finally:
            self._working.pop(queue_id, None)
            self._send(f"-{queue_id}\n".encode())

    def _say_working(self, queue_id: str, delivery_id: str) -> None:
        self._send(f"+{queue_id} {delivery_id}\n".encode())

    @contextlib.contextmanager
    def beating_thread(self) -> Iterator[None]:
        """The child started and a thread beating, for the `with` block: for a command with no
        event loop to beat, whose main thread may wait on its input as long as it likes
        (test-mapping reading a slow pipe). jq holds the GIL while it runs, so this thread falls
        silent exactly when a jq program does not end, and not while the input is awaited."""
        self.start()
        done = threading.Event()

        def beat() -> None:
            self._send(HEARTBEAT)
            while not done.wait(self._interval):
                self._send(HEARTBEAT)

        thread = threading.Thread(target=beat, name="ocean-hook-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.stop()

    def now_on(self, what: str) -> None:
        """What a one-off command is mapping now (test-mapping: which items), for the message."""
        self._say_working("now", what)

    def alone(self, alone: bool) -> None:
        """Whether the worker runs one delivery with nothing else on the loop (no listener)."""
        self._alone = alone
        self._send(b"alone\n" if alone else b"together\n")

    def _send(self, line: bytes) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError):  # a full pipe: the child is behind, not gone
            os.write(self._fd, line)

    def stop(self) -> None:
        """Closing the pipe tells the child to exit (as the kernel does if `serve` dies)."""
        if self._child is None:
            return
        self._close()
        assert self._child is not None
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._child.kill()
        self._child = None

    def _close(self) -> None:
        assert self._child is not None and self._child.stdin is not None
        with contextlib.suppress(OSError):
            self._child.stdin.close()
        self._fd = -1


@dataclass
class _Seen:
    """What the child knows of the loop it watches."""

    working: dict[str, str]
    alone: bool = False

    def note(self, line: str) -> None:
        if line.startswith("+"):
            queue_id, _, delivery_id = line[1:].partition(" ")
            self.working[queue_id] = delivery_id
        elif line.startswith("-"):
            self.working.pop(line[1:], None)
        elif line in ("alone", "together"):
            self.alone = line == "alone"


@dataclass
class _Watched:
    """The process the child watches, as its message names it."""

    pid: int
    stall_seconds: float
    stalls_path: Path | None  # None: a one-off command, nothing recorded, not restarted
    what: str = "ocean-hook serve"
    setting: str = "server.stall_timeout"


def watch(watched: _Watched, fd: int = 0) -> int:
    """The child: read heartbeats from `fd` until it closes (0) or goes quiet (kill it, 1)."""
    seen = _Seen({})
    pending = b""
    while True:
        readable, _, _ = select.select([fd], [], [], watched.stall_seconds)
        if not readable:
            return _stalled(watched, seen)
        chunk = os.read(fd, 65536)
        if not chunk:
            return 0
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            seen.note(line.decode("utf-8", "replace"))


def record_stall(path: Path, working: dict[str, str], alone: bool) -> None:
    """Add what was being processed to the stalls file; earlier entries stay until `serve` has
    run them. Only a delivery running alone is found to be the cause."""
    stalls = read_stalls(path)
    for queue_id, delivery_id in working.items():
        stalls[queue_id] = Stall(delivery_id, alone=alone and len(working) == 1)
    write_stalls(path, stalls)


def _stalled(watched: _Watched, seen: _Seen) -> int:
    if os.getppid() != watched.pid:  # gone already (its pid may be another process's now)
        return 0
    if watched.stalls_path is None:
        cause = "an item" if not seen.working else "one of " + ", ".join(seen.working.values())
        outcome = "killing it."
    else:
        cause, outcome = "a payload, or a processor's code that blocks", "killing it so that it can be restarted. "
        outcome += _what_was_running(watched.stalls_path, seen)
    log.error("%s (pid %d) has not run for %g s (%s): a jq program that never ends on %s; %s", watched.what,
              watched.pid, watched.stall_seconds, watched.setting, cause, outcome)
    with contextlib.suppress(ProcessLookupError):
        os.kill(watched.pid, signal.SIGKILL)
    return 1


def _what_was_running(stalls_path: Path, seen: _Seen) -> str:
    """Recorded for the next start of `serve`, and said."""
    working = seen.working
    try:
        record_stall(stalls_path, working, seen.alone)
    except OSError as exc:
        log.warning("cannot write %s: %s", stalls_path, exc)
    if seen.alone and len(working) == 1:
        (queue_id, delivery_id), = working.items()
        return (f"Delivery {queue_id} (delivery {delivery_id}) was running alone: it is the cause, and the next "
                "start dead-letters it instead of running it again")
    if working:
        names = ", ".join(f"{queue_id} (delivery {delivery_id})" for queue_id, delivery_id in sorted(working.items()))
        return (f"Deliveries being processed: {names}; they stay in the journal, and the next start runs them one "
                "at a time before it listens")
    return "No delivery was being processed (a payload at the door, or a processor's code)"


def main(argv: list[str]) -> int:
    pid, stall_seconds, log_format, stalls = int(argv[0]), float(argv[1]), argv[2], argv[3]
    watched = _Watched(pid, stall_seconds, None if stalls == "-" else Path(stalls), *argv[4:6])
    from ocean_hook.logs import JsonFormatter, TextFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # Ctrl-C reaches the whole process group, and a service manager may send SIGTERM to every
    # process of the service: `serve` handles both, and this child keeps watching it drain
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return watch(watched)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
