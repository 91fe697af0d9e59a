"""The HTML report: one self-contained file, a readable plot per deployment, seen by a browser.

Headless Chromium renders the report and takes a screenshot. Chromium comes from
``scripts/ensure-chromium.sh`` (called by ``make test``); with ROLLGUARD_REQUIRE_BROKER=1 (make
test, CI) a missing browser is a failure, elsewhere the browser test skips.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from matplotlib import image

from rollguard.streams.simulate import generate

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))
SCENARIOS = ("stale-exporter", "healthy", "bad-deploy")
IMAGE = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def non_blank(png: bytes) -> float:
    """Standard deviation of the RGB pixels (0 for a blank image)."""
    pixels = image.imread(io.BytesIO(png), format="png")
    return float(np.std(pixels[..., :3]))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A report over three scenarios on one timeline, scored against their labels."""
    directory = tmp_path_factory.mktemp("report")
    events: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    start = None
    for name in SCENARIOS:
        scenario = generate(name, 2, start=start)
        events.extend(scenario.events)
        labels.update(scenario.labels)
        start = max(e["ts"] for e in scenario.events) + 120
    (directory / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    (directory / "labels.json").write_bytes(orjson.dumps(labels))
    html = directory / "report.html"
    result = subprocess.run(
        [ROLLGUARD, "replay", str(directory / "events.jsonl"), "--labels",
         str(directory / "labels.json"), "--report", str(html), "--out",
         str(directory / "decisions.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return {"path": html, "text": html.read_text(encoding="utf-8"), "labels": labels,
            "directory": directory}


def test_one_self_contained_file_with_a_plot_per_deployment(report: dict[str, Any]) -> None:
    text = report["text"]
    images = IMAGE.findall(text)
    assert len(images) == len(report["labels"]) == len(SCENARIOS)
    for encoded in images:
        png = base64.b64decode(encoded, validate=True)
        assert png.startswith(b"\x89PNG")
        assert non_blank(png) > 0.05
    # Nothing to fetch: no scripts, stylesheets or remote images.
    assert "<script" not in text and "<link" not in text
    assert not re.search(r'src="(?!data:)', text)
    # The summary and the scoring are there, with every deployment and its reasons.
    for ident in report["labels"]:
        assert f'id="{ident}"' in text
    assert "Scoring against the labels" in text and "TELEMETRY_STALE" in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium is not installed (scripts/ensure-chromium.sh installs it)"
    if os.environ.get("ROLLGUARD_REQUIRE_BROKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def test_headless_chromium_renders_the_report(report: dict[str, Any], tmp_path: Path) -> None:
    browser = _chromium()
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1400,2000", report["path"].resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    png = shot.read_bytes()
    pixels = image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (2000, 1400)
    assert non_blank(png) > 0.05
    # The top of the page is the summary table, not an error page: dark text on white
    # in the first 400 rows, and colour (the plots' lines and pills) further down.
    top = pixels[:400, :, :3]
    assert (top.mean(axis=2) < 0.3).mean() > 0.002
    saturation = pixels[..., :3].max(axis=2) - pixels[..., :3].min(axis=2)
    assert (saturation > 0.3).mean() > 0.002
