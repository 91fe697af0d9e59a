"""Labelled synthetic scenarios: pure generation of replay files (DESIGN §9).

``generate(name, seed)`` records a fleet publishing telemetry around one or two deploys and
returns the events with the label a careful operator would give each deployment. Generation is
pure: a seeded ``random.Random``, no Kafka, no clock, no I/O (``streams.simulate_io`` writes).
"""

from rollguard.streams.scenarios.catalog import (
    DEFAULT_START,
    NOISE_SCENARIOS,
    SCENARIOS,
    generate,
    generate_all,
)
from rollguard.streams.scenarios.fleet import Scenario

__all__ = ["DEFAULT_START", "NOISE_SCENARIOS", "SCENARIOS", "Scenario", "generate", "generate_all"]
