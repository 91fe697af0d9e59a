"""``rollguard simulate``: labelled synthetic scenarios (the generator lives in streams.scenarios).

>>> from streams.simulate import generate
>>> scenario = generate("bad-deploy", seed=1)
>>> scenario.labels
{'dep-bad-deploy-1-1': 'rollback'}
"""

from __future__ import annotations

from rollguard.streams.scenarios import (
    DEFAULT_START,
    NOISE_SCENARIOS,
    SCENARIOS,
    Scenario,
    generate,
    generate_all,
)

__all__ = ["DEFAULT_START", "NOISE_SCENARIOS", "SCENARIOS", "Scenario", "generate", "generate_all"]
