"""Online anomaly models (DESIGN §5): river-compatible detectors with exact state round trips.

- ``SeriesScorer`` / ``score_series`` / ``score_csv_rows``: one univariate series, online.
- ``WindowDetector``: one (service, metric) over closed-window features.
- ``JointDetector``: one service over the joint vector of its metrics' window statistics.
"""

from __future__ import annotations

from .batch import score_csv_rows, score_series
from .joint import JointDetector
from .series import SeriesScorer
from .window import WindowDetector

__all__ = ["JointDetector", "SeriesScorer", "WindowDetector", "score_csv_rows", "score_series"]
