"""The console's pages: text from the topics is escaped; no inline script or style."""

from __future__ import annotations

import re

from rollguard.streams.approval_book import ApprovalBook
from rollguard.streams.console.pages import detail_page, index_page
from tests.unit.test_approval_book import T0, decision, request

EVIL = "<script>alert(1)</script>"


def test_pages_escape_what_the_topics_say_and_have_no_inline_code() -> None:
    book = ApprovalBook()
    book.add(request(service=EVIL, runbook=EVIL,
                     reasons=[{"code": "THRESHOLD_BREACH", "detail": EVIL}]), T0)
    book.add(decision(["THRESHOLD_BREACH"], service=EVIL), T0)
    view = book.requests["apr-1"]
    for html in (index_page(book, T0), detail_page(view, book, T0)):
        assert EVIL not in html and "&lt;script&gt;" in html
        assert len(re.findall(r"<script", html)) == 1  # the one /static/console.js
        assert 'src="/static/console.js"' in html
        assert " style=" not in html and "<style" not in html and "onclick" not in html


def test_the_answer_panel_is_shown_only_while_pending() -> None:
    book = ApprovalBook()
    book.add(request(), T0)
    view = book.requests["apr-1"]
    assert 'id="answer"' in detail_page(view, book, T0)
    book.add(decision(["APPROVAL_WITHDRAWN"]), T0)
    assert 'id="answer"' not in detail_page(view, book, T0)
