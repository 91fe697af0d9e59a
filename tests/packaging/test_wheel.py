"""rollguard installs under its own name: the wheel holds ``rollguard.models`` and
``rollguard.streams`` and nothing at the top level that could shadow another project's
``models`` or ``streams`` package (issue 10).

The wheel is built from this checkout and installed, without its dependencies, into a fresh
virtualenv; the dependencies come from the project's own environment through ``PYTHONPATH``
(which, unlike a site directory, runs no ``.pth`` file, so the editable install of this
checkout stays out of the way). An unrelated ``models`` package sits next to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

UNRELATED_MODELS = '"""Somebody else\'s models package."""\nOWNER = "not rollguard"\n'


def test_every_package_folder_is_installed() -> None:
    """A new sub-package under models/ or streams/ must be listed in pyproject.toml."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        "rollguard." + ".".join(init.parent.relative_to(REPO).parts)
        for top in ("models", "streams")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("rollguard-*.whl")
    return built


def test_the_wheel_claims_only_the_rollguard_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    assert {top for top in tops if not top.endswith((".dist-info", ".data"))} == {"rollguard"}
    assert "rollguard/models/engine.py" in names
    assert "rollguard/streams/cli/__init__.py" in names
    assert "rollguard/streams/console/static/console.js" in names


def test_installed_beside_an_unrelated_models_package(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (Path(site) / "models").mkdir()
    (Path(site) / "models" / "__init__.py").write_text(UNRELATED_MODELS)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLLGUARD_")},
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    where = run(str(python), "-c", "import models, rollguard.models; print(models.OWNER); "
                "print(rollguard.models.__file__)")
    assert where.returncode == 0, where.stderr
    owner, core = where.stdout.splitlines()
    assert owner == "not rollguard"
    assert core.startswith(site)

    rollguard = str(env_dir / "bin" / "rollguard")
    helped = run(rollguard, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "replay" in helped.stdout
    policy = str(REPO / "config" / "policy.yaml")
    simulated = run(rollguard, "simulate", "bad-deploy", "--out", "bad.jsonl")
    assert simulated.returncode == 0, simulated.stderr
    replayed = run(rollguard, "replay", "bad.jsonl", "--policy", policy, "--out", "decisions.jsonl")
    assert replayed.returncode == 0, replayed.stderr
    assert '"auto_rollback"' in (work / "decisions.jsonl").read_text()
