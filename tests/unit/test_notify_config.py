"""config/notify.yaml is validated at start: the message names the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollguard.streams.notify_config import RetryPolicy, load_notify_config
from rollguard.streams.settings import ConfigError


@pytest.mark.parametrize(("text", "names"), [
    # no webhooks at all
    ("webhooks: []\n", "webhooks"),
    # pagerduty without its integration key
    ("webhooks: [{name: p, url: 'https://events.pagerduty.com/v2/enqueue', "
     "format: pagerduty}]\n", "routing_key"),
    # not a URL
    ("webhooks: [{name: a, url: 'not a url'}]\n", "webhooks.0.url"),
    # an unknown format
    ("webhooks: [{name: a, url: 'http://x', format: teams}]\n", "webhooks.0.format"),
    # a misspelt field
    ("webhooks: [{name: a, url: 'http://x', service: [a]}]\n", "webhooks.0.service"),
])
def test_bad_config_is_refused_with_file_and_field(tmp_path: Path, text: str,
                                                   names: str) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_notify_config(path)
    assert str(path) in str(caught.value) and names in str(caught.value)


def test_the_example_config_loads() -> None:
    config = load_notify_config(Path(__file__).resolve().parents[2] / "config" /
                                "notify.example.yaml")
    assert {w.format for w in config.webhooks} == {"generic", "slack", "pagerduty"}


def test_backoff_doubles_up_to_the_cap() -> None:
    retry = RetryPolicy(initial_backoff_seconds=0.5, max_backoff_seconds=3)
    assert [retry.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
