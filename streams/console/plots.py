"""The replay report's per-metric plot for one approval request, from the topics.

The input topics are read over the deployment's baseline and bake (``read_range``: Kafka
timestamps from the baseline's start to now), the records fed to the report's
``TimelineCollector``, the deployment's decisions taken from ``rollguard.decisions``, and the
very ``timeline_png`` of ``rollguard replay --report`` draws them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rollguard.models.events import parse_ts
from rollguard.models.policy import Policy
from rollguard.streams.analysis.kafka_range import TimeRange, input_topics, read_range
from rollguard.streams.analysis.labels import final_outcomes
from rollguard.streams.analysis.plots import timeline_png
from rollguard.streams.analysis.timeline import TimelineCollector, build_timelines
from rollguard.streams.serde import decode_line
from rollguard.streams.settings import Settings

__all__ = ["request_png"]

_MARGIN_WINDOWS = 8


def request_png(settings: Settings, policy: Policy, request: dict[str, Any],
                decisions: Iterable[dict[str, Any]], now: float | None = None) -> bytes | None:
    """The timeline PNG of the request's deployment; None when nothing can be drawn."""
    evidence = request.get("evidence") or {}
    deployed = (evidence.get("deployment") or {}).get("deployed_at")
    if deployed is None:
        return None
    service = str(request["service"])
    sp = policy.for_service(service)
    since = parse_ts(deployed) - (sp.baseline_windows + _MARGIN_WINDOWS) * sp.window_seconds
    until = now if now is not None else time.time()
    collector = TimelineCollector(policy)
    topics = input_topics(settings, ["deploys", "metrics", "alerts"])
    for item in read_range(settings, TimeRange(since, until), topics):
        if isinstance(item, bytes):
            record = decode_line(item).record
            if record is not None and getattr(record, "service", None) == service:
                collector.add(record)
    ident = str(request["deployment_id"])
    ours = [d for d in decisions if d.get("deployment_id") == ident]
    for timeline in build_timelines(collector, final_outcomes(ours), policy):
        if timeline.deployment_id == ident:
            return timeline_png(timeline)
    return None
