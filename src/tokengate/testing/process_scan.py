"""Which live processes mention a path: how tests prove that nothing Tokengate started outlives it."""

from __future__ import annotations

from pathlib import Path


def processes_mentioning(marker: Path | str) -> dict[int, str]:
    """pid → command line of every live (not zombie) process whose command line contains `marker`."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # it exited while we looked
        if str(marker) in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found
