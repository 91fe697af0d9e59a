"""Synthetic telemetry of one service: a realistic healthy baseline, plus what goes wrong.

A service is scraped every ``SCRAPE_INTERVAL`` seconds at a fixed phase of the 10-second grid,
the way a Prometheus target is: ``error_rate`` (a fraction), ``latency_p99_ms`` and
``request_rate`` (req/s). The healthy signal is built from

- traffic with a daily cycle, a slow hourly wave and a little autocorrelated wander;
- an error rate that is *counted*, not drawn from a bell curve: a sample is errors/requests
  over the one-minute rate window behind it, so a quiet service is noisier than a busy one and
  a service with almost no traffic reports exact zeros;
- a p99 latency with a small daily drift, load sensitivity, multiplicative noise and the lone
  spikes a p99 always has;
- now and then a small error bump (one to three samples, well under the policy's ratios).

What goes wrong is a list of ``Shift``/``Climb`` effects on the true level of one metric, and
``Silence`` spans in which an exporter publishes nothing. Everything draws from the
``random.Random`` it is given: no clock, no I/O.

>>> import random
>>> profile = ServiceProfile.draw("search", random.Random(1))
>>> ticks = list(scrape(profile, 1795586400.0, 1795586460.0, random.Random(2)))
>>> [len(t.values) for t in ticks]
[3, 3, 3, 3, 3, 3]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict, Unpack

__all__ = [
    "ERROR_RATE",
    "LATENCY",
    "METRICS",
    "REQUEST_RATE",
    "SCRAPE_INTERVAL",
    "Climb",
    "Effect",
    "ProfileOverrides",
    "ScrapeTick",
    "ServiceProfile",
    "Shift",
    "Silence",
    "scrape",
]

ERROR_RATE = "error_rate"
LATENCY = "latency_p99_ms"
REQUEST_RATE = "request_rate"
METRICS: tuple[str, ...] = (ERROR_RATE, LATENCY, REQUEST_RATE)

SCRAPE_INTERVAL = 10.0
# Every error_rate sample is rate(errors[1m]) / rate(requests[1m]).
RATE_WINDOW_SECONDS = 60.0
# Scrape jitter: timestamps wander this far either side of the scrape phase. Phases are kept
# inside [1 + JITTER, 9 - JITTER] of each 10-s slot, so a sample never crosses a 10-s (hence
# 30-s window) boundary: a healthy window always holds exactly three samples of each metric.
JITTER_SECONDS = 1.0
_DAY = 86400.0
_HOUR = 3600.0


class ProfileOverrides(TypedDict, total=False):
    """Fields of a drawn ``ServiceProfile`` to set rather than draw."""

    error_rate: float
    latency_ms: float
    traffic: float
    scrape_phase: float
    day_phase: float
    noisy: float
    error_bumps: bool


@dataclass(frozen=True)
class ServiceProfile:
    """The healthy character of one service.

    ``error_rate`` is the baseline fraction of failed requests, ``latency_ms`` the baseline
    p99, ``traffic`` the baseline request rate (req/s). ``scrape_phase`` is where in each 10-s
    slot the target is scraped; ``day_phase`` shifts the daily cycle; ``noisy`` scales the
    per-sample noise (1.0 = an ordinary service).
    """

    name: str
    error_rate: float
    latency_ms: float
    traffic: float
    scrape_phase: float
    day_phase: float
    noisy: float = 1.0
    error_bumps: bool = True

    @classmethod
    def draw(cls, name: str, rng: random.Random,
             **overrides: Unpack[ProfileOverrides]) -> ServiceProfile:
        """A plausible service: 0.2-0.6 % errors, 120-260 ms p99, 50-300 req/s."""
        profile = cls(
            name=name,
            error_rate=round(rng.uniform(0.002, 0.006), 5),
            latency_ms=round(rng.uniform(120.0, 260.0), 1),
            traffic=round(rng.uniform(50.0, 300.0), 1),
            scrape_phase=round(rng.uniform(2.0 + JITTER_SECONDS, 8.0 - JITTER_SECONDS), 3),
            day_phase=rng.uniform(0.0, 2 * math.pi),
        )
        return replace(profile, **overrides)


@dataclass(frozen=True)
class Shift:
    """From ``start`` until ``end``, move the true level of ``metric``.

    Either multiply it by ``factor`` or set it to ``level``; the change ramps in linearly over
    ``ramp`` seconds (a rollout reaching every pod, a one-minute rate window filling up).
    """

    metric: str
    start: float
    end: float = math.inf
    factor: float | None = None
    level: float | None = None
    ramp: float = 0.0

    def __post_init__(self) -> None:
        if (self.factor is None) == (self.level is None):
            raise ValueError("a Shift sets exactly one of 'factor' and 'level'")

    def apply(self, metric: str, t: float, value: float) -> float:
        if metric != self.metric or not self.start <= t < self.end:
            return value
        target = value * self.factor if self.factor is not None else float(self.level or 0.0)
        weight = 1.0 if self.ramp <= 0 else min(1.0, (t - self.start) / self.ramp)
        return value + (target - value) * weight


@dataclass(frozen=True)
class Climb:
    """From ``start``, a slow burn: add ``per_second`` x elapsed seconds, up to ``ceiling``."""

    metric: str
    start: float
    per_second: float
    ceiling: float

    def apply(self, metric: str, t: float, value: float) -> float:
        if metric != self.metric or t < self.start:
            return value
        return min(self.ceiling, value + self.per_second * (t - self.start))


Effect = Shift | Climb


@dataclass(frozen=True)
class Silence:
    """No samples of ``metrics`` in [``start``, ``end``): a dead exporter, a dark service."""

    metrics: tuple[str, ...]
    start: float
    end: float = math.inf

    def covers(self, metric: str, t: float) -> bool:
        return metric in self.metrics and self.start <= t < self.end


@dataclass(frozen=True)
class ScrapeTick:
    """One scrape: the sampled time, the delay before it reached Kafka, and the values."""

    ts: float
    delay: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class _Wander:
    """AR(1) in log space: slow, autocorrelated drift around 1.0 (stationary sd ~ ``sd``)."""

    rng: random.Random
    sd: float
    keep: float = 0.97
    x: float = 0.0

    def __post_init__(self) -> None:
        self.x = self.rng.gauss(0.0, self.sd)

    def next(self) -> float:
        step_sd = self.sd * math.sqrt(1.0 - self.keep * self.keep)
        self.x = self.keep * self.x + self.rng.gauss(0.0, step_sd)
        return math.exp(self.x)


def count_errors(rng: random.Random, requests: int, p: float) -> int:
    """Failed requests among ``requests``, each failing with probability ``p``.

    Exact for small counts, Poisson for rare errors, normal approximation for large counts.
    """
    p = min(max(p, 0.0), 1.0)
    if p == 0.0 or requests <= 0:
        return 0
    if requests <= 200:
        return sum(1 for _ in range(requests) if rng.random() < p)
    mean = requests * p
    if mean < 30.0:
        # Knuth: multiply uniforms until the product falls below e^-mean.
        limit, k, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return min(k, requests)
    draw = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
    return min(max(draw, 0), requests)


def scrape(
    profile: ServiceProfile,
    start: float,
    end: float,
    rng: random.Random,
    *,
    effects: Sequence[Effect] = (),
    silences: Sequence[Silence] = (),
    metrics: Sequence[str] = METRICS,
    phase: float | None = None,
    missing_rate: float = 0.01,
    late_rate: float = 0.03,
) -> Iterator[ScrapeTick]:
    """Yield every scrape of ``profile`` in [``start``, ``end``), oldest first.

    ``effects`` move the true levels, ``silences`` drop samples. A whole scrape is lost with
    probability ``missing_rate`` (all its metrics at once, as when a target times out); a scrape
    reaches Kafka 1.5-5 s late, behind newer samples, with probability ``late_rate``.
    """
    phase = profile.scrape_phase if phase is None else phase
    traffic_wander = _Wander(rng, 0.05)
    error_wander = _Wander(rng, 0.08)
    latency_wander = _Wander(rng, 0.05)
    bump_left, bump_factor = 0, 1.0
    first = math.ceil((start - phase) / SCRAPE_INTERVAL)
    slot = first
    while True:
        nominal = slot * SCRAPE_INTERVAL + phase
        slot += 1
        if nominal >= end:
            return
        # Draw every random number of a scrape whether or not it is kept, so that one dropped
        # sample does not reshuffle the rest of the series.
        jitter = rng.uniform(-JITTER_SECONDS, JITTER_SECONDS)
        ts = nominal + jitter
        late = rng.random() < late_rate
        delay = rng.uniform(1.5, 5.0) if late else rng.uniform(0.05, 0.8)
        lost = rng.random() < missing_rate
        traffic_drift = traffic_wander.next()
        error_drift = error_wander.next()
        latency_drift = latency_wander.next()
        traffic_noise = rng.gauss(0.0, 0.03 * profile.noisy)
        latency_noise = rng.gauss(0.0, 0.06 * profile.noisy)
        spike = rng.uniform(1.2, 1.7) if rng.random() < 0.025 else 1.0
        if bump_left == 0 and profile.error_bumps and rng.random() < 0.012:
            bump_left, bump_factor = rng.randint(1, 3), rng.uniform(1.3, 1.9)
        bump = bump_factor if bump_left > 0 else 1.0
        bump_left = max(0, bump_left - 1)

        day = math.sin(2 * math.pi * nominal / _DAY + profile.day_phase)
        hour = math.sin(2 * math.pi * nominal / _HOUR + profile.day_phase * 3)
        traffic = profile.traffic * (1 + 0.25 * day + 0.05 * hour) * traffic_drift
        traffic = _apply(effects, REQUEST_RATE, nominal, traffic)
        errors = _apply(effects, ERROR_RATE, nominal, profile.error_rate * error_drift * bump)
        load = 1 + 0.15 * (traffic / profile.traffic - 1)
        latency = profile.latency_ms * (1 + 0.06 * day) * max(load, 0.8) * latency_drift
        latency = _apply(effects, LATENCY, nominal, latency)

        requests = max(1, round(traffic * RATE_WINDOW_SECONDS))
        failed = count_errors(rng, requests, errors)
        if traffic < 5.0:
            # A p99 over a handful of requests is little more than their maximum.
            latency_noise *= 2.5
        observed = {
            ERROR_RATE: round(failed / requests, 6),
            LATENCY: round(latency * math.exp(latency_noise) * spike, 2),
            REQUEST_RATE: round(traffic * math.exp(traffic_noise), 3),
        }
        if lost:
            continue
        values = {
            m: observed[m] for m in metrics if not any(s.covers(m, nominal) for s in silences)
        }
        if values:
            yield ScrapeTick(ts=round(ts, 3), delay=delay, values=values)


def _apply(effects: Sequence[Effect], metric: str, t: float, value: float) -> float:
    for effect in effects:
        value = effect.apply(metric, t, value)
    return max(value, 0.0)
