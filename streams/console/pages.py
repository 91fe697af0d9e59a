"""The console's HTML pages: server-rendered, no inline script or style (the CSP forbids both)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from rollguard.models.events import parse_ts
from rollguard.streams.approval_book import ApprovalBook, RefusedRequest, RequestView
from rollguard.streams.approval_evidence import (
    THRESHOLD_HEADERS,
    age,
    clock,
    evidence_view,
    explain,
    response_command,
)

__all__ = ["detail_page", "index_page", "not_found_page", "refused_page"]


def _layout(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)} · rollguard</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<link rel=\"stylesheet\" href=\"/static/console.css\">"
        "<script src=\"/static/console.js\" defer></script></head><body>"
        "<header><a class=\"brand\" href=\"/\">rollguard console</a>"
        "<span class=\"tagline\">approvals: automatic rollback only where the evidence "
        "earns it</span></header>"
        f"<main>{body}</main></body></html>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    cls = f" class=\"{css}\"" if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _state(view: RequestView, now: float) -> str:
    if view.state == "requested":
        return "pending" if view.pending(now) else "expired"
    return view.state


def _pill(state: str) -> str:
    return f"<span class=\"pill state-{escape(state)}\">{escape(state)}</span>"


def _codes(request: dict[str, Any]) -> str:
    return " ".join(f"<abbr class=\"code\" title=\"{escape(explain(str(r.get('code'))))}\">"
                    f"{escape(str(r.get('code')))}</abbr>" for r in request.get("reasons", []))


def _request_row(view: RequestView, now: float) -> list[str]:
    request = view.request
    rid = escape(view.request_id)
    version = (request.get("evidence") or {}).get("deployment", {}).get("version", "?")
    pending = view.pending(now)
    return [f"<a href=\"/requests/{rid}\">{rid}</a>", escape(view.service),
            escape(str(request.get("deployment_id", ""))),
            f"{escape(str(version))} → {escape(str(request.get('to_version') or '-'))}",
            _codes(request), escape(str(request.get("required_role", ""))),
            age(now - view.seen_at), age(view.expires_at - now) if pending else "-",
            _pill(_state(view, now))]


_LIST_HEADERS = ["request", "service", "deployment", "versions", "reasons", "role", "age",
                 "expires in", "state"]


def index_page(book: ApprovalBook, now: float) -> str:
    pending = book.pending(now)
    recent = [v for v in book.recent(50) if not v.pending(now)]
    body = [f"<h1>Approval requests <span class=\"count\" id=\"pending-count\">{len(pending)} "
            "pending</span></h1>"]
    if pending:
        body.append(_table(_LIST_HEADERS, [_request_row(v, now) for v in pending],
                           "requests pending"))
    else:
        body.append("<p class=\"empty\">No request is waiting for a human.</p>")
    body.append("<h2>Recent</h2>")
    body.append(_table(_LIST_HEADERS, [_request_row(v, now) for v in recent], "requests")
                if recent else "<p class=\"empty\">Nothing decided yet.</p>")
    if book.refused:
        body.append(_refused_list(book, now))
    return _layout("Approval requests", "".join(body))


_REFUSED_NOTE = ("Records on the approvals topic that are not signed by a key of the gate's "
                 "keyring: forged, tampered, or signed by an unknown or retired key. They are "
                 "not requests of the gate; nobody is asked about them and they cannot be "
                 "answered.")


def _refused_list(book: ApprovalBook, now: float) -> str:
    refused = sorted(book.refused.values(), key=lambda r: r.seen_at, reverse=True)[:50]
    rows = [[f"<a href=\"/requests/{escape(r.request_id)}\">{escape(r.request_id or '?')}</a>",
             escape(r.service or "?"), age(now - r.seen_at), escape(r.reason),
             _pill("refused")] for r in refused]
    return (f"<h2>Refused <span class=\"count\" id=\"refused-count\">{book.refused_total} "
            f"not verified</span></h2><p class=\"note\">{escape(_REFUSED_NOTE)}</p>"
            + _table(["record", "service", "age", "why", "state"], rows, "requests refused"))


def refused_page(refusal: RefusedRequest, now: float) -> str:
    """A record that claims to be a request but does not verify: why, and no way to answer."""
    rid = escape(refusal.request_id or "?")
    return _layout(refusal.request_id or "refused", (
        f"<h1>{rid} {_pill('refused')}</h1>"
        f"<p class=\"lead refused\" id=\"refusal\">Not a request of the gate: it cannot be "
        f"verified ({escape(refusal.reason)}). It cannot be answered here, and "
        "<code>rollguard approve|deny</code> refuses it too.</p>"
        f"<p class=\"note\">{escape(_REFUSED_NOTE)}</p>"
        + _table(["", ""], [["service (as claimed)", escape(refusal.service or "?")],
                            ["read", escape(clock(refusal.seen_at))],
                            ["age", age(now - refusal.seen_at)]], "facts")
        + "<p><a href=\"/\">All requests</a></p>"))


def not_found_page(request_id: str) -> str:
    return _layout("Not found", f"<h1>No approval request {escape(request_id)}</h1>"
                   "<p><a href=\"/\">All requests</a></p>")


def _answer_panel(view: RequestView) -> str:
    request = view.request
    commands = "\n".join(response_command(request, verb) for verb in ("approve", "deny"))
    return (
        f"<section id=\"answer\" class=\"answer\" data-request-id=\"{escape(view.request_id)}\" "
        f"data-service=\"{escape(view.service)}\">"
        "<h2>Answer</h2>"
        "<p class=\"note\">Your private key is read and used <strong>in this browser "
        "only</strong> (WebCrypto, not extractable) and is never sent: the page sends only "
        "the signed answer, which the server verifies against <code>approvers.yaml</code> "
        f"before publishing it. Needs role <code>{escape(str(request.get('required_role')))}"
        "</code>.</p>"
        "<div class=\"form\">"
        "<label><span>Identity</span><input id=\"identity\" name=\"identity\" "
        "autocomplete=\"username\" placeholder=\"user:alice\"></label>"
        "<label><span>Private key file (<code>NAME.key</code> from <code>rollguard keys "
        "generate</code>)</span><input id=\"keyfile\" type=\"file\" accept=\".key,.pem\">"
        "</label>"
        "<button id=\"load-key\" type=\"button\">Import key</button>"
        "<span id=\"key-status\" class=\"status\">no key imported</span>"
        "<label class=\"wide\"><span>Comment</span><input id=\"comment\" name=\"comment\" "
        "maxlength=\"4096\" placeholder=\"what you checked\"></label>"
        "<button id=\"approve\" class=\"approve\" type=\"button\" disabled>Approve rollback"
        "</button><button id=\"deny\" class=\"deny\" type=\"button\" disabled>Deny</button>"
        "</div><pre id=\"result\" class=\"result\" role=\"status\"></pre>"
        f"<details><summary>Or from a terminal</summary><pre>{escape(commands)}</pre></details>"
        "</section>"
    )


def _history(book: ApprovalBook, service: str) -> str:
    decisions = list(book.history.get(service, ()))[-30:]
    rows = []
    for decision in reversed(decisions):
        try:
            when = clock(parse_ts(decision.get("ts")))
        except (ValueError, TypeError):
            when = str(decision.get("ts"))
        rows.append([escape(when), escape(str(decision.get("deployment_id") or "-")),
                     f"<span class=\"action action-{escape(str(decision.get('action')))}\">"
                     f"{escape(str(decision.get('action')))}</span>",
                     escape(", ".join(decision.get("reasons") or ()) or "-")])
    if not rows:
        return "<p class=\"empty\">No decisions read for this service yet.</p>"
    return _table(["event time", "deployment", "action", "reasons"], rows, "history")


def detail_page(view: RequestView, book: ApprovalBook, now: float) -> str:
    request = view.request
    shown = evidence_view(request)
    rid = escape(view.request_id)
    parts = [f"<h1>{rid} {_pill(_state(view, now))}</h1>",
             f"<p class=\"lead\">Roll back <strong>{escape(view.service)}</strong>? "
             f"{escape(shown.facts[2][1])}</p>",
             _table(["", ""], [[escape(k), escape(v)] for k, v in shown.facts], "facts")]
    problem = book.problem(request, now) if view.pending(now) else None
    if problem is not None:  # its key was retired since it was published
        parts.append(f"<p class=\"lead refused\" id=\"refusal\">This request can no longer "
                     f"be answered: it cannot be verified now ({escape(problem)}).</p>")
    elif view.pending(now):
        parts.append(_answer_panel(view))
    parts.append("<h2>Why a human is asked</h2><ul class=\"reasons\">")
    for code, detail, words in shown.reasons:
        parts.append(f"<li><span class=\"code\">{escape(code)}</span> {escape(detail)}"
                     f"<br><span class=\"words\">{escape(words)}</span></li>")
    parts.append("</ul>")
    parts.append("<h2>Telemetry around the deploy</h2>"
                 f"<img class=\"plot\" src=\"/requests/{rid}/plot.png\" alt=\"each metric's "
                 "windows against its thresholds and baseline, anomaly scores, alerts and "
                 "decisions, as in the replay report\">")
    parts.append("<h2>Thresholds</h2><p class=\"note\">The last window that decided, against "
                 "the policy's limit and the pre-deploy baseline.</p>")
    parts.append(_table(THRESHOLD_HEADERS, [[escape(c) for c in row]
                                            for row in shown.thresholds], "numbers"))
    if shown.windows:
        parts.append("<h2>Windows that decided</h2>")
        parts.append(_table(["window end", *shown.window_metrics],
                            [[escape(c) for c in row] for row in shown.windows], "numbers"))
    if shown.anomaly:
        parts.append("<h2>Anomaly scores</h2>")
        parts.append(_table(["detector", "score"],
                            [[escape(a), escape(b)] for a, b in shown.anomaly], "numbers"))
    if shown.quality:
        parts.append("<h2>Signal quality</h2>")
        parts.append(_table(["check", "value"],
                            [[escape(a), escape(b)] for a, b in shown.quality]))
    if len(view.changes) > 1:
        parts.append("<h2>What happened to this request</h2>")
        parts.append(_table(["event time", "state", "who", "detail"], [
            [escape(clock(c.ts)), _pill(c.state), escape(c.approver or ""), escape(c.detail)]
            for c in view.changes[1:]]))
    parts.append(f"<h2>Decisions for {escape(view.service)}</h2>")
    parts.append(_history(book, view.service))
    return _layout(view.request_id, "".join(parts))
