"""Policy schema (DESIGN §10): merging defaults and overrides, and refusing bad policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollguard.models.policy import Policy, PolicyError
from rollguard.streams.settings import ConfigError, load_policy

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_policy_loads_and_merges_field_by_field() -> None:
    policy = load_policy(REPO / "config" / "policy.yaml")
    checkout = policy.for_service("checkout")
    assert checkout.metrics["error_rate"].max == 0.02  # overridden
    assert checkout.metrics["error_rate"].max_ratio_to_baseline == 3.0  # kept from defaults
    assert checkout.metrics["latency_p99_ms"].max == 1000  # metric merged by name
    assert checkout.runbook == "https://runbooks.example.com/checkout"
    assert policy.for_service("payments").auto_rollback is False
    assert policy.for_service("unknown-service") == policy.defaults
    assert len(policy.version) == 64  # sha256 of the file


def test_policy_version_changes_with_the_bytes(tmp_path: Path) -> None:
    original = (REPO / "config" / "policy.yaml").read_text()
    changed = tmp_path / "p.yaml"
    changed.write_text(original + "\n# a comment\n")
    assert load_policy(changed).version != load_policy(REPO / "config" / "policy.yaml").version


def test_an_empty_policy_means_the_defaults_of_design_10() -> None:
    policy = Policy.from_mapping({"version": 1}, version="v")
    assert policy.defaults.window_seconds == 30
    assert policy.defaults.metrics["latency_p99_ms"].max_ratio_to_baseline == 2.0
    assert policy.fleet.fleet_anomaly_limit == 3


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        # a typo never silently falls back to a default
        ({"defaults": {"window_secnds": 30}}, "defaults.window_secnds", "window_seconds"),
        # negative thresholds are refused
        ({"defaults": {"metrics": {"error_rate": {"max": -1}}}},
         "defaults.metrics.error_rate.max", "greater than or equal to 0"),
        # a typo inside a service's metric override
        ({"services": {"checkout": {"metrics": {"error_rate": {"maxx": 0.1}}}}},
         "services.checkout.metrics.error_rate.maxx", "did you mean 'max'"),
        # an enum with a wrong value
        ({"services": {"checkout": {"tier": "wide"}}}, "services.checkout.tier", "'narrow'"),
        # a new metric must say how often it reports
        ({"services": {"x": {"metrics": {"cpu": {"max": 0.9}}}}},
         "services.x.metrics.cpu.expected_interval_seconds", "required"),
        # a threshold metric with no threshold can never breach
        ({"defaults": {"metrics": {"cpu": {"expected_interval_seconds": 10}}}},
         "defaults.metrics.cpu", "needs 'max'"),
        # min_baseline_windows above baseline_windows could never warm up
        ({"defaults": {"baseline_windows": 5, "min_baseline_windows": 10}},
         "defaults", "cannot exceed"),
        # a pre-authorisation's 'when' names triggers, not blockers
        ({"preauthorizations": [{"id": "r", "owner": "o", "service": "s",
                                 "expires": "2027-01-31", "when": ["TELEMETRY_STALE"]}]},
         "preauthorizations.0", "triggers only"),
        # unknown top-level field
        ({"fleets": {}}, "fleets", "did you mean 'fleet'"),
        # a ratio of 1 or less would breach on the baseline itself
        ({"defaults": {"metrics": {"error_rate": {"max_ratio_to_baseline": 0.5}}}},
         "defaults.metrics.error_rate.max_ratio_to_baseline", "greater than 1"),
        # an anomaly-only episode lasts at least one window
        ({"defaults": {"anomaly_persist_windows": 0}}, "defaults.anomaly_persist_windows",
         "greater than or equal to 1"),
        ({"services": {"x": {"anomaly_persist_windows": "long"}}},
         "services.x.anomaly_persist_windows", "valid integer"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(
    document: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(document, version="v", source="p.yaml")
    paths = [p for p, _ in caught.value.problems]
    assert path in paths, caught.value
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("p.yaml: ")


def test_anomaly_persist_windows_defaults_to_four_and_never_undercuts_a_breach() -> None:
    shipped = load_policy(REPO / "config" / "policy.yaml")
    assert shipped.defaults.anomaly_persist_windows == 4
    assert Policy.from_mapping({"version": 1}, version="v").defaults.anomaly_persist_windows == 4
    policy = Policy.from_mapping(
        {"services": {"slow": {"consecutive_breach_windows": 6}}}, version="v"
    )
    # A model score alone never pages sooner than a written threshold does.
    assert policy.for_service("slow").anomaly_only_windows == 6
    assert policy.for_service("other").anomaly_only_windows == 4


def test_unreadable_and_invalid_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the policy"):
        load_policy(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("defaults: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+"):
        load_policy(broken)


def test_preauthorization_is_valid_through_its_expiry_day() -> None:
    policy = Policy.from_mapping(
        {"preauthorizations": [{"id": "r", "owner": "o", "service": "s", "expires": "2027-01-31",
                                "when": ["THRESHOLD_BREACH"]}]},
        version="v",
    )
    rule = policy.preauthorizations[0]
    assert rule.active_at(1801439999.0)  # 2027-01-31T23:59:59Z
    assert not rule.active_at(1801440000.0)  # 2027-02-01T00:00:00Z
