"""The replay report: ONE self-contained HTML file (inline CSS, PNG plots as base64 data URIs).

Sections: what was replayed; a summary row per deployment; the labels scoring (``--labels``);
the policy comparison (``--compare``); then, per deployment, its timeline plot
(``streams.analysis.plots.timeline_png``) and its decisions in words. No script, no external
resource: the file opens the same from a mail attachment as from a disk.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

from rollguard.streams.analysis.compare import Difference
from rollguard.streams.analysis.labels import ACTIONS, DeploymentOutcome, Scorecard
from rollguard.streams.analysis.plots import ACTION_COLORS, timeline_png
from rollguard.streams.analysis.tables import fmt_seconds, fmt_value
from rollguard.streams.analysis.timeline import DeploymentTimeline
from rollguard.streams.replay import ReplayStats

__all__ = ["ReportInput", "render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#212121;
max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:22px 0 6px} .meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right} .agree{background:#e8f5e9}
.disagree{background:#ffebee} .pill{display:inline-block;padding:0 6px;border-radius:8px;
color:#fff;font-size:12px} img{max-width:100%;border:1px solid #eee}
ul.decisions{font-size:13px;margin:4px 0 8px}
"""


@dataclass
class ReportInput:
    """Everything the report shows."""

    source: str
    policy_path: str
    policy_version: str
    stats: ReplayStats
    outcomes: Mapping[str, DeploymentOutcome]
    timelines: Sequence[DeploymentTimeline]
    labels: Mapping[str, str] | None = None
    scorecard: Scorecard | None = None
    comparison: Sequence[Difference] | None = None
    compare_policy: str | None = None
    notes: list[str] = field(default_factory=list)


def _pill(action: str) -> str:
    color = {"rollback": ACTION_COLORS["auto_rollback"],
             "approval": ACTION_COLORS["request_approval"],
             "pass": ACTION_COLORS["pass"]}.get(action, ACTION_COLORS.get(action, "#546e7a"))
    return f'<span class="pill" style="background:{color}">{escape(action)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]],
           classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _summary(data: ReportInput) -> str:
    headers = ["deployment", "service", "version", "deployed (UTC)", "final action"]
    if data.labels is not None:
        headers.append("label")
    headers += ["deploy → decision", "reasons of the final decision", "decisions"]
    rows, classes = [], []
    for tl in data.timelines:
        outcome = data.outcomes.get(tl.deployment_id)
        row = [f'<a href="#{escape(tl.deployment_id)}">{escape(tl.deployment_id)}</a>',
               escape(tl.service), escape(tl.version), _clock(tl.deployed_at), _pill(tl.action)]
        css = ""
        if data.labels is not None:
            label = data.labels.get(tl.deployment_id)
            row.append(_pill(label) if label else "—")
            css = "" if label is None else ("agree" if label == tl.action else "disagree")
        row += [fmt_seconds(outcome.seconds_to_decision if outcome else None),
                escape(", ".join(outcome.reasons) if outcome else "") or "—",
                str(len(outcome.decisions) if outcome else 0)]
        rows.append(row)
        classes.append(css)
    return "<h2>Deployments</h2>" + _table(headers, rows, classes)


def _scoring(card: Scorecard) -> str:
    rows = []
    for label, counts in card.confusion.items():
        rows.append([f"<b>{escape(label)}</b>"] + [
            f"<b>{n}</b>" if action == label else str(n) for action, n in counts.items()])
    matrix = _table(["label \\ action", *ACTIONS], rows)
    facts = _table(["what", "value"], [
        ["agreement", f"{card.agreed} / {card.labeled}"],
        ["false automatic rollbacks",
         escape(f"{len(card.false_rollbacks)} {', '.join(card.false_rollbacks)}")],
        ["missed bad deploys", escape(f"{len(card.missed)} {', '.join(card.missed)}")],
        ["deploy → first decisive decision",
         f"median {fmt_seconds(card.median_seconds)}, p90 {fmt_seconds(card.p90_seconds)} "
         f"(n={len(card.seconds_to_decision)})"],
    ])
    reasons = _table(["reason code", "count"],
                     [[escape(code), str(n)] for code, n in card.reason_counts.items()])
    return ("<h2>Scoring against the labels</h2><p class=meta>Rows: the label (what a careful "
            "operator wanted); columns: rollguard's final action.</p>" + matrix + facts + reasons)


def _comparison(diffs: Sequence[Difference], name: str) -> str:
    if not diffs:
        return f"<h2>Policy comparison</h2><p>{escape(name)} decides every deployment alike.</p>"
    rows = []
    for d in diffs:
        rows.append([
            f'<a href="#{escape(d.deployment_id)}">{escape(d.deployment_id)}</a>',
            _pill(d.action_a) + " " + escape(", ".join(d.reasons_a)),
            _pill(d.action_b) + " " + escape(", ".join(d.reasons_b)),
            "<br>".join(escape(f"{f}: {fmt_value(a)} → {fmt_value(b)}") for f, a, b in d.policy),
            "<br>".join(escape(f"{m}.{f}: {fmt_value(a)} → {fmt_value(b)}")
                        for m, f, a, b in d.thresholds),
        ])
    return (f"<h2>Policy comparison: A = this policy, B = {escape(name)}</h2>"
            + _table(["deployment", "A", "B", "policy A → B", "deciding thresholds A → B"],
                     rows))


def _decision_list(tl: DeploymentTimeline) -> str:
    items = []
    for mark in tl.decisions:
        offset = (mark.ts - tl.deployed_at) / 60.0
        details = "".join(f"<li><b>{escape(code)}</b>: {escape(text)}</li>"
                          for code, text in mark.details.items())
        items.append(f"<li>{_clock(mark.ts)} (+{offset:.1f} min) {_pill(mark.action)} "
                     f"{escape(', '.join(mark.reasons))}"
                     + (f"<ul>{details}</ul>" if details else "") + "</li>")
    if not items:
        items.append("<li>no decision in this range (the bake had not ended?)</li>")
    late = f"<p class=meta>{tl.late_events} late events reported</p>" if tl.late_events else ""
    return f"<ul class=decisions>{''.join(items)}</ul>{late}"


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def render_report(data: ReportInput) -> str:
    """The whole HTML document, as text."""
    outputs = ", ".join(f"{n} {t}" for t, n in sorted(data.stats.outputs.items())) or "none"
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>rollguard replay report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>rollguard replay report</h1>",
        f"<p class=meta>Events: {escape(data.source)} — {data.stats.lines} lines, "
        f"{data.stats.dead_letters} dead letters. Policy: {escape(data.policy_path)} "
        f"(version {escape(data.policy_version[:12])}). Outputs: {escape(outputs)}.</p>",
        *(f"<p class=meta>{escape(note)}</p>" for note in data.notes),
        _summary(data),
    ]
    if data.scorecard is not None:
        parts.append(_scoring(data.scorecard))
    if data.comparison is not None:
        parts.append(_comparison(data.comparison, data.compare_policy or "policy B"))
    parts.append("<h2>Timelines</h2><p class=meta>Each plot: the window statistic of every "
                 "policy metric (recomputed from the input events with the core's window code) "
                 "against its absolute <code>max</code> (red dashed) and "
                 "<code>max_ratio_to_baseline</code> × baseline (orange dashed), the baseline "
                 "(dotted); the anomaly scores each decision recorded; the alerts firing; and "
                 "a vertical line per decision, coloured by action "
                 "(red: auto_rollback, orange: request_approval, green: pass, dotted: watch / "
                 "none).</p>")
    for tl in data.timelines:
        parts.append(f'<h3 id="{escape(tl.deployment_id)}">{escape(tl.deployment_id)} — '
                     f"{escape(tl.service)} {escape(tl.version)} {_pill(tl.action)}</h3>")
        parts.append(_decision_list(tl))
        parts.append(_image(timeline_png(tl), f"timeline of {tl.deployment_id}"))
    parts.append("</body></html>\n")
    return "\n".join(parts)

