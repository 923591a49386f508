"""Child processes that never outlive Tokengate.

Each child leads its own process group, so stopping it stops everything it
spawned (vLLM forks an engine-core process and compiler workers). On Linux the
child also gets SIGTERM if Tokengate dies without cleaning up, via
PR_SET_PDEATHSIG, and then stops its own children the way it does on Ctrl-C.
That signal fires when the *thread* that spawned the child exits, so spawn from
a long-lived thread (the main one), never from a worker pool.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A loopback TCP port nothing listens on right now, for a child about to be started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessGroup:
    """A started command leading its own process group, with its output sent to a log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_file: IO[bytes]) -> None:
        self.popen = popen
        self.log_path = log_path
        self._log_file = log_file

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ) -> ProcessGroup:
        """Start `argv` as a new group leader. `die_with_parent=False` is for engines that `up` leaves
        running on purpose; their group id is recorded in the fleet's state so `down` can stop them."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509 - only prctl
            )
        except BaseException:
            log_file.close()
            raise
        return cls(popen, log_path, log_file)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_seconds: float = 15.0) -> int | None:
        """SIGTERM the whole group, wait up to `grace_seconds`, then SIGKILL what is left."""
        try:
            stop_group(self.popen.pid, grace_seconds, reap=self.popen.poll)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        finally:
            self._log_file.close()
        return self.popen.returncode

    def log_tail(self, max_lines: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-max_lines:])


def stop_group(pgid: int, grace_seconds: float = 15.0, reap: Callable[[], object] | None = None) -> bool:
    """SIGTERM a process group, wait up to `grace_seconds`, then SIGKILL it. True if anything was running.

    `reap` lets a parent collect its own child so a zombie leader does not look alive.
    """
    if not group_alive(pgid, reap):
        return False
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and group_alive(pgid, reap):
        time.sleep(0.1)
    if group_alive(pgid, reap):
        signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and group_alive(pgid, reap):
            time.sleep(0.05)
    return True


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int, reap: Callable[[], object] | None = None) -> bool:
    if reap is not None:
        reap()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    """killpg(0) succeeds while zombies remain; look for a member that is not one (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid`, to tell a recorded process from a later one that reused its pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
