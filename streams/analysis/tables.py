"""The scorecard and the policy comparison as rich tables (the terminal side of the report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from rollguard.streams.analysis.compare import Difference
from rollguard.streams.analysis.labels import ACTIONS, Scorecard

__all__ = ["fmt_seconds", "fmt_value", "print_comparison", "print_scorecard"]


def fmt_seconds(seconds: float | None) -> str:
    """``95.0`` → ``1m35s``; None → ``—``."""
    if seconds is None:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def fmt_value(value: Any) -> str:
    """A policy or evidence value, short."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def print_scorecard(console: Console, card: Scorecard) -> None:
    """Confusion matrix, misses, false rollbacks, time to decision, reason counts."""
    matrix = Table(title=f"Labels vs final action ({card.agreed}/{card.labeled} agree)")
    matrix.add_column("label \\ action")
    for action in ACTIONS:
        matrix.add_column(action, justify="right")
    for label, row in card.confusion.items():
        cells = [f"[bold]{n}[/bold]" if action == label and n else str(n)
                 for action, n in row.items()]
        matrix.add_row(label, *cells)
    console.print(matrix)
    facts = Table(title="Scoring", show_header=False)
    facts.add_column("what")
    facts.add_column("value")
    facts.add_row("false automatic rollbacks", _ids(card.false_rollbacks))
    facts.add_row("missed bad deploys", _ids(card.missed))
    facts.add_row("deploy → first decisive decision",
                  f"median {fmt_seconds(card.median_seconds)}, p90 {fmt_seconds(card.p90_seconds)}"
                  f" (n={len(card.seconds_to_decision)})")
    if card.unlabeled:
        facts.add_row("decided but not labelled", _ids(card.unlabeled))
    console.print(facts)
    reasons = Table(title="Reason codes of decisive decisions")
    reasons.add_column("reason")
    reasons.add_column("count", justify="right")
    for code, count in card.reason_counts.items():
        reasons.add_row(code, str(count))
    console.print(reasons)


def _ids(idents: Sequence[str]) -> str:
    return f"{len(idents)}" + (": " + ", ".join(idents) if idents else "")


def print_comparison(console: Console, diffs: Sequence[Difference], name_a: str,
                     name_b: str) -> None:
    """Every deployment decided differently, with the policy fields and thresholds involved."""
    if not diffs:
        console.print(f"[green]{name_a} and {name_b} decide every deployment alike.[/green]")
        return
    table = Table(title=f"Deployments decided differently: A={name_a}  B={name_b}")
    for column in ("deployment", "A", "B", "policy A → B", "deciding thresholds A → B"):
        table.add_column(column, overflow="fold")
    for diff in diffs:
        table.add_row(
            f"{diff.deployment_id}\n({diff.service})",
            f"{diff.action_a}\n{', '.join(diff.reasons_a) or '—'}",
            f"{diff.action_b}\n{', '.join(diff.reasons_b) or '—'}",
            "\n".join(f"{f}: {fmt_value(a)} → {fmt_value(b)}" for f, a, b in diff.policy) or "—",
            "\n".join(f"{m}.{f}: {fmt_value(a)} → {fmt_value(b)}"
                      for m, f, a, b in diff.thresholds) or "—",
        )
    console.print(table)
