"""Byte sizes as people read them."""

from __future__ import annotations


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'; binary units, as vLLM and nvidia-smi report them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
