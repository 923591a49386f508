from __future__ import annotations

import os
import time
from pathlib import Path

from tokengate.processes import ProcessGroup


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once its state is Z.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def wait_for_file(path: Path) -> str:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_stop_ends_grandchildren_too(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; wait"
    group = ProcessGroup.start(["sh", "-c", script], log_path=tmp_path / "log")
    grandchild = int(wait_for_file(pids))
    assert pid_alive(grandchild)
    group.stop(grace_seconds=5)
    assert not group.is_running()
    assert not pid_alive(grandchild)


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = f"trap '' TERM; echo up > {ready}; while true; do sleep 0.1; done"
    group = ProcessGroup.start(["sh", "-c", script], log_path=tmp_path / "log")
    wait_for_file(ready)
    group.stop(grace_seconds=0.5)
    assert group.returncode == -9


def test_output_goes_to_the_log_and_its_tail(tmp_path: Path) -> None:
    group = ProcessGroup.start(["sh", "-c", "for i in 1 2 3; do echo line$i; done"], log_path=tmp_path / "x.log")
    group.popen.wait(timeout=10)
    group.stop()
    assert group.log_tail(max_lines=2) == "line2\nline3"
