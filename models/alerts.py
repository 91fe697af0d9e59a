"""The alert state of one service, folded window by window in event-time order.

Alerts are keyed by name (several ``alert_id`` of one name are one signal). A *flip* is a change
of an alert name's status; an alert that was never seen counts as resolved, so its first
``firing`` is a flip and a re-notification of an alert already firing is not.

>>> from models.events import Alert
>>> def a(ts, status):
...     return Alert(alert_id="x", service="s", name="High", severity="critical",
...                  status=status, ts=ts)
>>> book = AlertBook()
>>> book.record([a(1, "firing"), a(2, "firing"), a(3, "resolved"), a(4, "firing")],
...             keep_after=0.0)
>>> book.flips_since(0.0)
{'High': 3}
>>> book.critical_during(0.0)
('High',)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from rollguard.models.events import Alert

__all__ = ["AlertBook"]


@dataclass(slots=True)
class AlertBook:
    """Latest status, recent flips and recent resolutions of every alert name of a service."""

    status: dict[str, str] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)
    flips: dict[str, deque[float]] = field(default_factory=dict)
    resolved_at: dict[str, float] = field(default_factory=dict)
    critical_seen_at: dict[str, float] = field(default_factory=dict)
    """Per critical alert name, the newest time it was seen firing (or still firing)."""

    def record(self, alerts: Iterable[Alert], keep_after: float) -> None:
        """Fold alert events (already in event-time order); forget flips at or before
        ``keep_after``."""
        for alert in alerts:
            name = alert.name
            before = self.status.get(name, "resolved")
            if alert.status != before:
                self.flips.setdefault(name, deque()).append(alert.ts)
            self.status[name] = alert.status
            self.severity[name] = alert.severity
            if alert.status == "resolved":
                self.resolved_at[name] = alert.ts
            elif alert.severity == "critical":
                self.critical_seen_at[name] = alert.ts
        for name in list(self.flips):
            times = self.flips[name]
            while times and times[0] <= keep_after:
                times.popleft()
            if not times:
                del self.flips[name]

    def carry_firing(self, until: float) -> None:
        """Mark critical alerts still firing at ``until`` (a window end) as seen then."""
        for name, status in self.status.items():
            if status == "firing" and self.severity.get(name) == "critical":
                self.critical_seen_at[name] = until

    def flips_since(self, since: float) -> dict[str, int]:
        """Flips per alert name strictly after ``since``."""
        counts = {name: sum(1 for t in times if t > since) for name, times in self.flips.items()}
        return {name: n for name, n in sorted(counts.items()) if n}

    def resolved_since(self, since: float) -> dict[str, float]:
        """Alert names that resolved at or after ``since`` and are still resolved."""
        return {
            name: ts
            for name, ts in sorted(self.resolved_at.items())
            if ts >= since and self.status.get(name) == "resolved"
        }

    def critical_during(self, since: float) -> tuple[str, ...]:
        """Critical alert names seen firing at or after ``since``."""
        return tuple(sorted(n for n, ts in self.critical_seen_at.items() if ts >= since))
