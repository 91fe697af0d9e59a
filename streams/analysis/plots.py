"""Figures as PNG bytes: a deployment's timeline and an anomaly-scored series (matplotlib, Agg).

Figures are built with the object API on an Agg canvas (no pyplot, no global state, no
display), so they render the same in a test, a CLI and a worker.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rollguard.streams.analysis.timeline import DeploymentTimeline, MetricSeries
from rollguard.streams.analysis.timerange import parse_time_arg

__all__ = ["ACTION_COLORS", "series_png", "timeline_png"]

ACTION_COLORS = {
    "auto_rollback": "#c62828",
    "request_approval": "#ef6c00",
    "pass": "#2e7d32",
    "watch": "#8d6e63",
    "none": "#546e7a",
}
SEVERITY_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1e88e5"}
DETECTOR_COLORS = ["#37474f", "#1565c0", "#00897b", "#8e24aa", "#f9a825", "#6d4c41"]


def _png(fig: Figure, dpi: int = 90) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _minutes(ts: float, origin: float) -> float:
    return (ts - origin) / 60.0


def _markers(ax: Axes, tl: DeploymentTimeline) -> None:
    """Deploy start, bake end and every decision, as vertical lines."""
    ax.axvline(0.0, color="black", linewidth=1.4)
    ax.axvline(_minutes(tl.bake_until, tl.deployed_at), color="grey", linestyle="--",
               linewidth=1)
    for mark in tl.decisions:
        ax.axvline(_minutes(mark.ts, tl.deployed_at), color=ACTION_COLORS.get(mark.action, "k"),
                   linestyle=":" if mark.action in ("watch", "none") else "-", linewidth=1.6)


def _metric_panel(ax: Axes, series: MetricSeries, tl: DeploymentTimeline, width: float) -> None:
    origin = tl.deployed_at
    xs = [_minutes(t, origin) for t in series.times]
    if xs:
        ax.step([xs[0] - width / 60.0, *xs], [series.values[0], *series.values], where="pre",
                color="#1565c0", linewidth=1.5, label=f"window {series.stat}")
    top_data = max((v for v in series.values if not math.isnan(v)), default=0.0)
    limits = []
    if series.baseline is not None:
        note = " (recomputed)" if series.baseline_recomputed else ""
        ax.axhline(series.baseline, color="#616161", linestyle=":", linewidth=1.2,
                   label=f"baseline {series.baseline:.4g}{note}")
        limits.append(series.baseline)
    ratio_limit = series.ratio_limit
    if ratio_limit is not None:
        ax.hlines(ratio_limit, 0.0, _minutes(tl.end, origin), color="#ef6c00", linestyle="--",
                  linewidth=1.4, label=f"{series.ratio:g}× baseline = {ratio_limit:.4g}")
        limits.append(ratio_limit)
    if series.min_traffic is not None:
        ax.axhline(series.min_traffic, color="#6a1b9a", linestyle="--", linewidth=1,
                   label=f"min_traffic {series.min_traffic:g}")
    ceiling = max([top_data, *limits, 1e-9]) * 1.3
    if series.max is not None:
        if series.max <= ceiling * 1.6:
            ceiling = max(ceiling, series.max * 1.15)
            ax.axhline(series.max, color="#c62828", linestyle="--", linewidth=1.4,
                       label=f"max {series.max:g}")
        else:
            ax.text(0.995, 0.96, f"max {series.max:g} is above this plot", ha="right",
                    va="top", transform=ax.transAxes, fontsize=8, color="#c62828")
    breaches = [
        (x - width / 120.0, v) for x, t, v in zip(xs, series.times, series.values, strict=True)
        if t - width >= tl.deployed_at and ((series.max is not None and v > series.max)
                                   or (ratio_limit is not None and v > ratio_limit))
    ]
    if breaches:
        ax.scatter([b[0] for b in breaches], [b[1] for b in breaches], color="#c62828",
                   zorder=5, s=22, label="breaching window")
    ax.set_ylim(0.0, ceiling)
    role = "traffic" if series.role == "traffic" else "threshold"
    ax.set_ylabel(f"{series.name}\n({role}, {series.stat})", fontsize=8)
    ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.85)


def _anomaly_panel(ax: Axes, tl: DeploymentTimeline) -> None:
    """Each decision's recorded scores as a small group of bars, one per detector."""
    names = sorted({name for mark in tl.decisions for name in mark.scores})
    bar = 0.1  # minutes
    for index, name in enumerate(names):
        offset = (index - (len(names) - 1) / 2) * bar
        points = [(_minutes(m.ts, tl.deployed_at) + offset, m.scores[name])
                  for m in tl.decisions if name in m.scores]
        ax.bar([p[0] for p in points], [max(p[1], 0.01) for p in points], width=bar * 0.9,
               color=DETECTOR_COLORS[index % len(DETECTOR_COLORS)], label=name, zorder=4)
    ax.axhline(tl.anomaly_threshold, color="#c62828", linestyle="--", linewidth=1,
               label=f"anomaly_threshold {tl.anomaly_threshold:g}")
    ax.set_ylim(0.0, 1.08)
    ax.set_ylabel("anomaly score\n(at decisions)", fontsize=8)
    if not names:
        ax.text(0.5, 0.5, "no decision recorded anomaly scores", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="grey")
    ax.legend(loc="upper left", fontsize=7, ncol=5, framealpha=0.85)


def _alert_panel(ax: Axes, tl: DeploymentTimeline) -> None:
    names = sorted({span.name for span in tl.alerts})
    right = _minutes(tl.end, tl.deployed_at)
    for row, name in enumerate(names):
        for span in (s for s in tl.alerts if s.name == name):
            start = _minutes(span.start, tl.deployed_at)
            end = right if span.end is None else _minutes(span.end, tl.deployed_at)
            ax.broken_barh([(start, max(end - start, 0.05))], (row - 0.35, 0.7),
                           color=SEVERITY_COLORS.get(span.severity, "grey"), alpha=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(-0.6, max(len(names), 1) - 0.4)
    ax.set_ylabel("alerts firing", fontsize=8)
    if not names:
        ax.text(0.5, 0.5, "no alerts", ha="center", va="center", transform=ax.transAxes,
                fontsize=8, color="grey")


def _decision_labels(ax: Axes, tl: DeploymentTimeline) -> None:
    """Action and reasons of each decision, above the first panel, staggered; labels in the
    right third of the plot extend to the left of their line so that they stay on the page."""
    left, right = _minutes(tl.start, tl.deployed_at), _minutes(tl.end, tl.deployed_at)
    for index, mark in enumerate(tl.decisions):
        x = _minutes(mark.ts, tl.deployed_at)
        leftwards = (x - left) / max(right - left, 1e-9) > 0.66
        text = mark.action + (": " + ", ".join(mark.reasons) if mark.reasons else "")
        ax.annotate(
            textwrap.fill(text, 38), xy=(x, 1.0), xycoords=("data", "axes fraction"),
            xytext=(-4 if leftwards else 4, 4 + 26 * (index % 3)), textcoords="offset points",
            fontsize=7.5, va="bottom", ha="right" if leftwards else "left",
            color=ACTION_COLORS.get(mark.action, "k"),
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )


def timeline_png(tl: DeploymentTimeline) -> bytes:
    """One deployment: each metric's windows against its limits, scores, alerts, decisions."""
    panels = len(tl.metrics) + 2
    height = 1.9 * panels + 1.9
    fig = Figure(figsize=(12.5, height))
    axes = fig.subplots(panels, 1, sharex=True,
                        gridspec_kw={"height_ratios": [3] * len(tl.metrics) + [2, 1.3]})
    origin = tl.deployed_at
    left, right = _minutes(tl.start, origin), _minutes(tl.end, origin)
    for ax in axes:
        ax.axvspan(left, 0.0, color="#eeeeee", zorder=0)
        ax.axvspan(0.0, _minutes(tl.bake_until, origin), color="#e3f2fd", zorder=0)
        _markers(ax, tl)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax, series in zip(axes, tl.metrics, strict=False):
        _metric_panel(ax, series, tl, tl.window_seconds)
    _anomaly_panel(axes[-2], tl)
    _alert_panel(axes[-1], tl)
    axes[-1].set_xlim(left, right)
    axes[-1].set_xlabel(f"minutes since deploy ({_clock(origin)}); grey: before the deploy "
                        f"(baseline), blue: bake, black line: deploy, dashed: bake end",
                        fontsize=8)
    _decision_labels(axes[0], tl)
    summary = f"final: {tl.action}"
    if tl.final is not None:
        summary += f" ({tl.final.action} at +{_minutes(tl.final.ts, origin):.1f} min)"
    fig.suptitle(f"{tl.deployment_id} — {tl.service} {tl.version} — {summary}", fontsize=11,
                 x=0.01, ha="left")
    fig.subplots_adjust(left=0.09, right=0.99, top=1 - 1.5 / height, bottom=0.6 / height,
                        hspace=0.12)
    return _png(fig)


def series_png(timestamps: Sequence[str], values: Sequence[float], scores: Sequence[float], *,
               threshold: float = 0.8, title: str = "") -> bytes:
    """A series with its online anomaly score underneath; points at/over ``threshold`` in red.

    The x axis is time when every timestamp reads as RFC 3339 or epoch seconds, else the row.
    """
    try:
        shown: list[Any] = [datetime.fromtimestamp(parse_time_arg(t), tz=UTC) for t in timestamps]
        time_axis = True
    except ValueError:
        shown, time_axis = list(range(len(timestamps))), False
    fig = Figure(figsize=(12, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(shown, values, color="#1565c0", linewidth=1)
    flagged = [i for i, s in enumerate(scores) if s >= threshold]
    top.scatter([shown[i] for i in flagged], [values[i] for i in flagged], color="#c62828",
                s=16, zorder=4, label=f"score ≥ {threshold:g} ({len(flagged)})")
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title, fontsize=10, loc="left")
    bottom.plot(shown, scores, color="#6a1b9a", linewidth=1)
    bottom.axhline(threshold, color="#c62828", linestyle="--", linewidth=1)
    bottom.set_ylim(-0.03, 1.05)
    bottom.set_ylabel("anomaly score")
    bottom.set_xlabel("time (UTC)" if time_axis else "row")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    if time_axis:
        fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)
