"""``mypy --strict`` holds on the core and the shell, under their installed names (make lint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mypy_strict_on_models_and_streams(tmp_path: Path) -> None:
    # mypy reads files, not the editable install's import hook: give it the folders under
    # the names they install as.
    (tmp_path / "rollguard").mkdir()
    (tmp_path / "rollguard" / "models").symlink_to(REPO / "models")
    (tmp_path / "rollguard" / "streams").symlink_to(REPO / "streams")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(REPO / ".mypy_cache"),
         "-p", "rollguard.models", "-p", "rollguard.streams"],
        cwd=REPO, env={**os.environ, "MYPYPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
