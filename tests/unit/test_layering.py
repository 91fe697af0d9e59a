"""The decision core is pure: models/ imports no Kafka, no shell, no clock (STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_IMPORTS = {"streams", "faust", "aiokafka", "orjson", "mode", "time", "socket",
                     "asyncio", "requests", "urllib", "os", "subprocess"}
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"),
                   ("time", "time"), ("time", "monotonic"), ("random", "random")}


def _core_modules() -> list[Path]:
    return sorted((REPO / "models").rglob("*.py"))


def test_core_imports_nothing_from_the_shell_or_the_outside_world() -> None:
    offenders = []
    for path in _core_modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.removeprefix("rollguard.").split(".")[0] in FORBIDDEN_IMPORTS:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_core_never_reads_the_clock() -> None:
    offenders = []
    for path in _core_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in FORBIDDEN_CALLS):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_import_linter_contract_holds() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_imports_the_folders_by_their_bare_names() -> None:
    """models/ and streams/ install as rollguard.models and rollguard.streams; importing a
    module under both names would load it twice, with two copies of every class."""
    offenders = []
    for top in ("models", "streams", "tests", "bench", "scripts"):
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {name}"
                              for name in names if name.split(".")[0] in {"models", "streams"}]
    assert not offenders, "\n".join(offenders)


def test_no_function_of_the_core_is_longer_than_sixty_lines() -> None:
    # Issue 10: a core the next engineer can read in one place (docstrings count).
    long = []
    for path in sorted((REPO / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length})")
    assert not long, long
