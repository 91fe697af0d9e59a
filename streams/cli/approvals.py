"""``rollguard approvals list|show``: the pending requests, and one request's evidence in words."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from rollguard.streams.approval_book import ApprovalBook, RequestView
from rollguard.streams.approval_evidence import (
    THRESHOLD_HEADERS,
    age,
    clock,
    evidence_view,
    response_command,
)
from rollguard.streams.cli.common import BOOTSTRAP_OPTION
from rollguard.streams.settings import ConfigError, load_settings

__all__ = ["approvals"]

def _book(bootstrap_servers: str | None) -> ApprovalBook:
    from rollguard.streams.approval_feed import read_book

    try:
        settings = load_settings(bootstrap_servers=bootstrap_servers)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    try:
        return asyncio.run(read_book(settings))
    except (LookupError, TimeoutError) as err:
        raise click.ClickException(str(err)) from None


@click.group()
def approvals() -> None:
    """Approval requests waiting for a human, read from the topics."""


@approvals.command("list")
@click.option("--all", "show_all", is_flag=True, help="Decided and expired requests too.")
@BOOTSTRAP_OPTION
def approvals_list(show_all: bool, bootstrap_servers: str | None) -> None:
    """Pending requests: service, versions, reasons, age and expiry."""
    book = _book(bootstrap_servers)
    now = time.time()
    views = book.recent(limit=10_000) if show_all else book.pending(now)
    console = Console(highlight=False, width=200)
    if not views:
        console.print("no pending approval requests" if not show_all else "no approval requests")
        return
    table = Table(box=None, header_style="bold")
    for header in ("request", "service", "deployment", "versions", "reasons", "role", "age",
                   "expires in", "state"):
        table.add_column(header, overflow="fold")
    for view in views:
        table.add_row(*_row(view, now))
    console.print(table)
    if not show_all:
        console.print("\nrollguard approvals show REQUEST_ID   (evidence and the command "
                      "to answer)")


def _row(view: RequestView, now: float) -> list[str]:
    request = view.request
    version = (request.get("evidence") or {}).get("deployment", {}).get("version", "?")
    codes = ", ".join(str(r.get("code")) for r in request.get("reasons", []))
    state = view.state if view.state != "requested" else (
        "pending" if view.pending(now) else "expired")
    return [view.request_id, view.service, str(request.get("deployment_id", "")),
            f"{version} → {request.get('to_version') or '-'}", codes,
            str(request.get("required_role", "")), age(now - view.seen_at),
            age(view.expires_at - now) if view.pending(now) else "-", state]


@approvals.command("show")
@click.argument("request_id")
@BOOTSTRAP_OPTION
def approvals_show(request_id: str, bootstrap_servers: str | None) -> None:
    """One request's evidence in words, and the exact command to approve or deny it."""
    book = _book(bootstrap_servers)
    view = book.requests.get(request_id)
    if view is None:
        raise click.ClickException(f"approval request {request_id} not found")
    console = Console(highlight=False, width=160)
    _show(console, view, time.time())


def _show(console: Console, view: RequestView, now: float) -> None:
    request = view.request
    shown = evidence_view(request)
    state = view.state if view.state != "requested" else (
        "pending" if view.pending(now) else "expired")
    console.rule(f"{view.request_id} — {view.service} — {state}")
    facts = Table.grid(padding=(0, 2))
    for name, value in shown.facts:
        facts.add_row(name, value)
    console.print(facts)
    console.print("\n[bold]Why a human is asked[/bold]")
    for code, detail, words in shown.reasons:
        console.print(f"  [bold]{code}[/bold]: {detail}\n      {words}")
    _table(console, "Thresholds (last window against the policy and the baseline)",
           THRESHOLD_HEADERS, shown.thresholds)
    _table(console, "Windows that decided", ["window end", *shown.window_metrics], shown.windows)
    _table(console, "Anomaly scores", ["detector", "score"], [list(r) for r in shown.anomaly])
    _table(console, "Signal quality", ["check", "value"], [list(r) for r in shown.quality])
    if len(view.changes) > 1:
        console.print("\n[bold]What happened since[/bold]")
        for change in view.changes[1:]:
            console.print(f"  {clock(change.ts)}  {change.state}  {change.approver or ''}  "
                          f"{change.detail}")
    if view.pending(now):
        console.print("\n[bold]To answer[/bold] (signs with your key; needs role "
                      f"{request.get('required_role')}):")
        console.print(f"  {response_command(request, 'approve')}", soft_wrap=True)
        console.print(f"  {response_command(request, 'deny')}", soft_wrap=True)


def _table(console: Console, title: str, headers: list[str], rows: list[Any]) -> None:
    if not rows:
        return
    console.print(f"\n[bold]{title}[/bold]")
    table = Table(box=None, header_style="bold", padding=(0, 2))
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console.print(table)
