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
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


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
    ) -> ProcessGroup:
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
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
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
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline and self._group_alive():
                self.popen.poll()
                time.sleep(0.1)
            if self._group_alive():
                self._signal_group(signal.SIGKILL)
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

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def _group_alive(self) -> bool:
        self.popen.poll()  # reap the leader so a zombie does not count as alive
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
