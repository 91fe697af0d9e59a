"""The rollguard command: exit statuses of DESIGN §8 and the policy/schema verbs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROLLGUARD, *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=120)


def test_policy_check_prints_the_effective_table() -> None:
    result = run("policy", "check", "config/policy.yaml")
    assert result.returncode == 0, result.stderr
    assert "checkout" in result.stdout and "0.02" in result.stdout
    assert "policy_version" in result.stdout
    assert "alone×" in result.stdout  # anomaly_persist_windows (anomaly-only episodes)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("version: 1\ndefaults:\n  window_secnds: 30\n", "defaults.window_secnds"),  # typo
        ("version: 1\ndefaults:\n  metrics:\n    error_rate: {max: -0.5}\n",
         "defaults.metrics.error_rate.max"),  # negative threshold
        ("version: 1\ndefaults: [\n", "not valid YAML"),  # broken YAML
    ],
)
def test_bad_policy_exits_2_naming_file_and_field(tmp_path: Path, text: str,
                                                  fragment: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = run("policy", "check", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line on stderr


def test_bad_usage_exits_2() -> None:
    assert run("no-such-verb").returncode == 2
    assert run("simulate", "no-such-scenario").returncode == 2


def test_schema_export_writes_one_schema_per_record(tmp_path: Path) -> None:
    result = run("schema", "export", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "metric.schema.json" in names and "rollback_command.schema.json" in names
    metric = json.loads((tmp_path / "metric.schema.json").read_text())
    assert set(metric["required"]) >= {"service", "name", "value", "ts"}


def test_keys_generate_makes_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    result = run("keys", "generate", "gate", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert oct((tmp_path / "gate.key").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "gate.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in result.stdout


@pytest.mark.parametrize("verb", ["approve", "deny", "executor", "notify", "console"])
def test_verifiers_need_the_gates_key(tmp_path: Path, verb: str) -> None:
    """approve|deny, the executor, notify and the console verify what the gate signed: without
    a gate key or a keyring they refuse to start (bad usage), before touching Kafka."""
    key = tmp_path / "alice.key"
    key.write_text("unused")
    (tmp_path / "notify.yaml").write_text("webhooks: [{name: a, url: 'http://127.0.0.1:9/'}]\n")
    args = {"approve": ["apr-1", "--as", "user:alice", "--key", str(key)],
            "deny": ["apr-1", "--as", "user:alice", "--key", str(key)],
            "executor": ["--exec", "true"],
            "notify": ["--config", str(tmp_path / "notify.yaml")],
            "console": ["--port", "0"]}[verb]
    env_free = {k: v for k, v in os.environ.items()
                if k not in ("ROLLGUARD_VERIFY_KEY", "ROLLGUARD_KEYRING")}
    result = subprocess.run([ROLLGUARD, verb, *args], cwd=REPO, env=env_free,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "--verify-key FILE or --keyring FILE" in result.stderr


@pytest.mark.parametrize("verb", ["notify", "console"])
def test_a_bad_keyring_exits_2_naming_the_file_and_entry(tmp_path: Path, verb: str) -> None:
    (tmp_path / "notify.yaml").write_text("webhooks: [{name: a, url: 'http://127.0.0.1:9/'}]\n")
    (tmp_path / "keyring.yaml").write_text("keys: {ed25519-0000: {not_after: null}}\n")
    args = ["--config", str(tmp_path / "notify.yaml")] if verb == "notify" else ["--port", "0"]
    env_free = {k: v for k, v in os.environ.items()
                if k not in ("ROLLGUARD_VERIFY_KEY", "ROLLGUARD_KEYRING")}
    result = subprocess.run([ROLLGUARD, verb, *args, "--keyring",
                             str(tmp_path / "keyring.yaml")], cwd=REPO, env=env_free,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "keyring.yaml: keys.ed25519-0000: needs public_key" in result.stderr
