"""The worker's hand-off to the decision core: one entry point, ``Pipeline.process``."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from models.policy import Policy

__all__ = ["Pipeline"]


class Pipeline:
    """Feeds valid input records to the decision core and returns what it decided."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._by_service: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def process(self, record: Any) -> list[Any]:
        """Hand one valid record to the core; return the output records to publish."""
        service = getattr(record, "service", None) or "(none)"
        self._by_service[service][record.type] += 1
        return []

    def counts_by_service(self) -> dict[str, dict[str, int]]:
        return {s: dict(c) for s, c in sorted(self._by_service.items())}

    def counts_by_type(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for counts in self._by_service.values():
            total.update(counts)
        return dict(sorted(total.items()))
