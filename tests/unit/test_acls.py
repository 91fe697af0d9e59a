"""`rollguard acls`: the least-privilege ACL set per role (DESIGN §6, docs/security.md).

Who may write what is the security property; these tests pin it per topic, without a broker.
tests/broker/test_secure_acls.py applies the same set to the secured broker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rollguard.streams.acls import PrincipalMap, acl_set, load_principals, render
from rollguard.streams.settings import ConfigError, Settings

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = str(Path(sys.executable).with_name("rollguard"))
EVERYONE = PrincipalMap(gate=("User:gate",), executor=("User:exec-a", "User:exec-b"),
                        approver=("User:approver",), producer=("User:ci",),
                        analyst=("User:analyst",), notifier=("User:notifier",),
                        console=("User:console",))


def _principals(settings: Settings, operation: str, topic: str) -> set[str]:
    return {e.principal for e in acl_set(settings, EVERYONE)
            if e.resource_type == "TOPIC" and e.operation == operation and e.name == topic}


@pytest.mark.parametrize(
    ("topic", "writers"),
    [
        ("rollback.commands", {"User:gate"}),  # only the gate issues commands
        ("rollback.approvals", {"User:gate"}),  # ... and approval requests
        ("release.verdicts", {"User:gate"}),
        ("rollguard.decisions", {"User:gate"}),
        # ... dead letters: the gate's, and the notifier's (failed posts, unverifiable requests)
        ("rollguard.dead-letters", {"User:gate", "User:notifier"}),
        ("rg-test-state-changelog", {"User:gate"}),  # its state
        ("rollback.results", {"User:exec-a", "User:exec-b"}),  # every executor, nobody else
        # approvers, and the console for the answers approvers sign in their browsers
        ("rollback.approval-responses", {"User:approver", "User:console"}),
        ("deploys", {"User:ci"}),  # telemetry and deploys: the producers only
        ("telemetry.metrics", {"User:ci"}),
        ("telemetry.alerts", {"User:ci"}),
        ("rg-test-leader", set()),  # the lease is a consumer group: nobody writes the topic
    ],
)
def test_each_topic_has_exactly_its_writers(topic: str, writers: set[str]) -> None:
    settings = Settings(app_id="rg-test")
    assert _principals(settings, "WRITE", topic) == writers


@pytest.mark.parametrize(
    ("topic", "readers"),
    [
        ("rollback.commands", {"User:exec-a", "User:exec-b", "User:analyst"}),
        ("rollback.approvals",
         {"User:approver", "User:analyst", "User:notifier", "User:console"}),
        ("rollguard.decisions", {"User:analyst", "User:notifier", "User:console"}),
        ("telemetry.metrics", {"User:gate", "User:analyst"}),
        ("rollback.approval-responses", {"User:gate", "User:analyst"}),
        ("rollback.results", {"User:analyst"}),
        ("rg-test-state-changelog", {"User:gate"}),  # not even analysts read the gate's state
    ],
)
def test_each_topic_has_exactly_its_readers(topic: str, readers: set[str]) -> None:
    assert _principals(Settings(app_id="rg-test"), "READ", topic) == readers


def test_analysts_and_producers_write_and_read_as_their_role_says() -> None:
    entries = acl_set(Settings(), EVERYONE)
    assert not [e for e in entries if e.role == "analyst" and e.operation == "WRITE"]
    assert not [e for e in entries if e.role == "producer" and e.operation == "READ"]


def test_prefix_and_app_id_name_every_resource() -> None:
    settings = Settings(topic_prefix="stg.", app_id="rg-stg")
    entries = acl_set(settings, EVERYONE)
    topics = {e.name for e in entries if e.resource_type == "TOPIC"}
    assert all(t.startswith("stg.") or t.startswith("rg-stg-") for t in topics), topics
    assert ("TRANSACTIONAL_ID", "PREFIXED", "rg-stg-engine", "User:gate") in {
        (e.resource_type, e.pattern, e.name, e.principal) for e in entries}
    groups = {(e.principal, e.pattern, e.name) for e in entries if e.resource_type == "GROUP"}
    assert groups == {
        ("User:gate", "LITERAL", "rg-stg"),  # the leader lease
        ("User:exec-a", "PREFIXED", "rg-stg-executor"),
        ("User:exec-b", "PREFIXED", "rg-stg-executor"),
        ("User:approver", "PREFIXED", "rg-stg-approver"),
        ("User:analyst", "PREFIXED", "rg-stg-analyst"),
        ("User:notifier", "PREFIXED", "rg-stg-notify"),  # the console reads with no group
    }


def test_unmapped_roles_get_nothing() -> None:
    entries = acl_set(Settings(), PrincipalMap(executor=("User:exec",)))
    assert {e.role for e in entries} == {"executor"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("gate: gate\n", "not a Kafka principal"),  # no principal type
        ("gate: User:x\nanalyst: [User:x]\n", "plays both gate and analyst"),  # shared principal
        ("gates: User:x\n", "gates"),  # unknown role
        ("gate: [\n", "not valid YAML"),
    ],
)
def test_bad_mapping_names_file_and_fault(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="principals.yaml") as raised:
        load_principals(path)
    assert fragment in str(raised.value)


def test_shipped_mapping_names_the_secured_brokers_users() -> None:
    mapping = load_principals(REPO / "config" / "principals.yaml")
    assert mapping.gate == ("User:gate",) and mapping.analyst == ("User:analyst",)


def test_kafka_acls_output_is_kafkas_own_command() -> None:
    entries = acl_set(Settings(), PrincipalMap(executor=("User:exec",)))
    lines = render(entries, "kafka-acls").splitlines()
    assert len(lines) == len(entries)
    assert ("kafka-acls.sh --bootstrap-server 127.0.0.1:9092 --command-config admin.properties "
            "--add --allow-principal User:exec --operation Write --topic rollback.results "
            "--resource-pattern-type literal") in lines


def test_cli_prints_json_and_refuses_a_bad_mapping(tmp_path: Path) -> None:
    result = subprocess.run([ROLLGUARD, "acls", "--output", "json"], cwd=REPO, text=True,
                            capture_output=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert len(printed) == len(acl_set(Settings(), load_principals(
        REPO / "config" / "principals.yaml")))
    (tmp_path / "bad.yaml").write_text("gate: nobody\n")
    bad = subprocess.run([ROLLGUARD, "acls", "--principals", str(tmp_path / "bad.yaml")],
                         cwd=REPO, text=True, capture_output=True, check=False, timeout=60)
    assert bad.returncode == 2 and "bad.yaml" in bad.stderr, bad.stderr
