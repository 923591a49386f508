"""vLLM versions as comparable tuples."""

from __future__ import annotations


def version_tuple(text: str) -> tuple[int, ...]:
    """'0.32.0' -> (0, 32, 0); suffixes such as '0.11.0rc1' keep their numeric parts only."""
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())
