"""``--since`` / ``--until`` arguments: RFC 3339 text or epoch seconds, to epoch seconds.

>>> parse_time_arg("2026-11-25T08:00:00Z"), parse_time_arg("1795593600")
(1795593600.0, 1795593600.0)
"""

from __future__ import annotations

from rollguard.models.events import parse_ts

__all__ = ["parse_time_arg"]


def parse_time_arg(text: str) -> float:
    """Epoch seconds of a command-line time; ValueError naming the accepted forms."""
    try:
        number = float(text)
    except ValueError:
        return parse_ts(text)
    return parse_ts(number)
