"""A deployment on trial: its baseline, its observation windows and what each one shows.

``Deployment`` is the mutable per-deployment state (counters, streaks, the request it may have
raised). ``Deployment.observe`` folds one closed observation window into it, in three steps:
``count`` (bake totals and the recent windows), ``streak`` (breach, confirmation, anomaly and
critical streaks) and the frozen ``Judgement`` the rules read; ``Deployment.conclude`` runs the
rule tables (``models.rules``) over it into the ``Findings`` that ``decide`` takes.

Windows relative to the deploy time ``t`` (width ``w``):

- baseline: the last ``baseline_windows`` windows that end at or before ``t``;
- the window that straddles ``t`` (if ``t`` is not on a boundary) is neither: it mixes the old
  and the new release;
- observation: windows that start at or after ``t`` and before ``t + bake_seconds``; the bake
  is extended, window by window, while a trigger episode is under way (at most
  ``consecutive_breach_windows - 1`` windows) so that a breach in the last window is judged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from rollguard.models.alerts import AlertBook
from rollguard.models.counts import CountEvidence, error_count_test
from rollguard.models.events import ReasonCode
from rollguard.models.facts import BakeEvidence, DeploymentFacts, Findings, FleetFacts, Stage
from rollguard.models.judgement import Judgement, Streaks
from rollguard.models.memory import Memory, Tail
from rollguard.models.onset import Onset, attribute_onset
from rollguard.models.policy import Policy, ServicePolicy
from rollguard.models.quality import (
    SPAN_MAX_WINDOWS,
    TRAFFIC_DRAIN_RATIO,
    expected_samples,
    read_signals,
)
from rollguard.models.rules import judge
from rollguard.models.scoring import JOINT, Score
from rollguard.models.sequential import SequentialTest, SequentialVerdict
from rollguard.models.thresholds import ThresholdCheck
from rollguard.models.windows import (
    Baseline,
    WindowSummary,
    first_window_from,
    stat_of,
    window_index,
)

__all__ = ["Deployment", "is_error_rate"]

MIN_ONSET_BASELINE = 6
"""Baseline windows below which onset attribution does not run."""


ONSET_SHARE = 0.5
"""A pre-deploy onset is remembered when its departure is at least this part of the latest
window's (the attribution's own ``min_share``)."""

MODEL_ONLY_SHARE = 0.5
"""A threshold metric's model departure without a breach counts once the window has gone this
part of the way to its written ratio limit (half: x1.5 of a 2x limit, x2 of a 3x one)."""

SEQUENTIAL_MARGIN = 0.2
"""Relative worsening of a metric's mean over the bake that the sequential test tolerates as
healthy (a daily cycle's slope, a release's warm-up) when no ratio limit is written; it asks a
human beyond it."""

SEQUENTIAL_SHARE = 0.2
"""With a written ratio limit, the sequential test's margin is this part of the way to it
(x1.2 of a 2x latency limit, as ``SEQUENTIAL_MARGIN``; x1.4 of a 3x error-rate limit: an error
rate wanders more, and the policy calls only a 3x one a breach)."""

SEQUENTIAL_CLIP = 2.0
"""Noise units one window may add to the sequential test: a burst of a few windows is not a
sustained regression."""

COUNT_ALPHA = 1e-3
"""An error-rate breach stands only if P(at least its errors | requests, baseline rate) is
below this (``models.counts``)."""


def is_error_rate(metric: str) -> bool:
    """A threshold metric judged by its counts (``models.counts``): its name says errors.

    The policy does not name "the error rate"; a fraction of failed requests is, by
    convention, a metric whose name contains ``error``."""
    return "error" in metric.lower()


def _quantum(values: list[float]) -> float:
    """The step of a quantised series (the smallest gap between its distinct values) when it
    takes at most half as many distinct values as it has; 0 otherwise."""
    levels = sorted(set(values))
    if len(levels) < 2 or len(levels) > len(values) // 2:
        return 0.0
    return min(b - a for a, b in zip(levels, levels[1:], strict=False))


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


@dataclass(slots=True)
class Deployment:
    """A release on trial and everything its decisions need to remember."""

    facts: DeploymentFacts
    width: int
    bake_until: float
    first_k: int
    stage: Stage = Stage.OBSERVING
    baseline: Baseline | None = None
    breach_streak: dict[str, int] = field(default_factory=dict)
    confirmed_streak: dict[str, int] = field(default_factory=dict)
    anomaly_streak: dict[str, int] = field(default_factory=dict)
    critical_streak: int = 0
    trigger_windows: int = 0
    """Observation windows so far in which some trigger was actionable."""
    clear_windows: int = 0
    windows_observed: int = 0
    samples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    traffic_sum: dict[str, float] = field(default_factory=dict)
    traffic_n: dict[str, int] = field(default_factory=dict)
    recent: deque[WindowSummary] = field(default_factory=deque)
    """The latest observation windows (the deciding ones, shown in a ruling's evidence)."""
    span: deque[dict[str, int]] = field(default_factory=deque)
    """Sample counts per metric of the latest observation windows (completeness is judged over
    them, not over one window: ``models.quality.span_coverage``)."""
    request_id: str | None = None
    """The approval request this deployment raised (its state: ``FleetState.requests``)."""
    request_reasons: tuple[str, ...] = ()
    due: tuple[dict[ReasonCode, str], bool, dict[ReasonCode, str]] | None = None
    """The latest actionable (triggers, confirmed, blockers): a request that waited for another
    trigger is made from them if the triggers clear while it waits (never dropped)."""
    base_values: dict[str, list[float]] = field(default_factory=dict)
    """Each threshold metric's policy stat in the baseline windows, in order (onset
    attribution reads them)."""
    obs_values: dict[str, list[float]] = field(default_factory=dict)
    """Each threshold metric's policy stat in every observation window (NaN: no data)."""
    pre_deploy: dict[str, Onset] = field(default_factory=dict)
    """Threshold metrics whose departure, as it stood in the latest windows, was found to
    begin before the deploy: the finding stands for the rest of the trial (``onsets``)."""

    @classmethod
    def open(cls, facts: DeploymentFacts, policy: ServicePolicy) -> Deployment:
        """Start the trial of a release deployed at ``facts.deployed_at``."""
        w = policy.window_seconds
        return cls(
            facts=facts,
            width=w,
            bake_until=facts.deployed_at + policy.bake_seconds,
            first_k=first_window_from(facts.deployed_at, w),
            recent=deque(maxlen=policy.consecutive_breach_windows),
            span=deque(maxlen=max(policy.consecutive_breach_windows, SPAN_MAX_WINDOWS)),
        )

    def baseline_range(self, policy: ServicePolicy) -> tuple[int, int]:
        """Indices of the first and last baseline window (those ending by the deploy)."""
        last = window_index(self.facts.deployed_at, self.width) - 1
        return last - policy.baseline_windows + 1, last

    def keep_baseline_values(
        self, ring: Iterable[WindowSummary], policy: ServicePolicy, first: int, last: int
    ) -> None:
        """Keep each threshold metric's stat in the baseline windows (at the baseline's
        freeze)."""
        rules = policy.threshold_metrics()
        chosen = [s for s in ring if first <= s.k <= last]
        self.base_values = {
            name: [stat_of(s.metrics[name], rule.stat) for s in chosen if name in s.metrics]
            for name, rule in sorted(rules.items())
        }

    def baseline_values(self, policy: ServicePolicy) -> dict[str, float | None]:
        """The baseline value of each threshold metric's policy stat."""
        base = self.baseline
        return {
            name: (base.stat(name, rule.stat) if base is not None else None)
            for name, rule in policy.threshold_metrics().items()
        }

    def traffic_means(self, policy: ServicePolicy) -> dict[str, float | None]:
        """Mean of each traffic metric over the observation so far (None: no samples)."""
        return {
            name: (
                self.traffic_sum[name] / self.traffic_n[name] if self.traffic_n.get(name) else None
            )
            for name in sorted(policy.traffic_metrics())
        }

    def bake_evidence(self, policy: ServicePolicy) -> BakeEvidence:
        """How well the observation so far was covered by telemetry."""
        cov = {}
        for name in sorted(policy.threshold_metrics()):
            expected = self.windows_observed * expected_samples(policy, name, self.baseline)
            cov[name] = self.counts.get(name, 0) / expected if expected else 0.0
        return BakeEvidence(cov, self.traffic_means(policy), self.samples)

    def count(self, summary: WindowSummary, policy: ServicePolicy) -> None:
        """Add one observation window to the bake totals and the recent windows."""
        self.windows_observed += 1
        self.recent.append(summary)
        self.span.append({name: stats.count for name, stats in summary.metrics.items()})
        for name, stats in summary.metrics.items():
            self.samples += stats.count
            rule = policy.metrics.get(name)
            if rule is None:
                continue
            self.counts[name] = self.counts.get(name, 0) + stats.count
            if rule.role == "traffic":
                self.traffic_sum[name] = self.traffic_sum.get(name, 0.0) + stats.mean * stats.count
                self.traffic_n[name] = self.traffic_n.get(name, 0) + stats.count

    def streak(
        self,
        checks: Mapping[str, ThresholdCheck],
        scores: Mapping[str, Score],
        policy: ServicePolicy,
        critical: bool,
        tails: Mapping[str, Tail] | None = None,
        routine: frozenset[str] = frozenset(),
    ) -> Streaks:
        """Extend or reset every streak with one window; return them as they now stand."""
        threshold = policy.anomaly_threshold
        warm = policy.min_baseline_windows

        def anomalous(key: str) -> bool:
            s = scores.get(key)
            return s is not None and s.n_learned >= warm and s.score >= threshold

        for name in sorted(policy.threshold_metrics()):
            check = checks.get(name)
            if check is not None and check.breach:
                self.breach_streak[name] = self.breach_streak.get(name, 0) + 1
                # With a warm long memory, only a departure rare for this service confirms.
                tail = tails.get(name) if tails else None
                agrees = anomalous(name) and (tail is None or tail.rare)
                self.confirmed_streak[name] = (
                    self.confirmed_streak.get(name, 0) + 1 if agrees else 0
                )
            else:
                self.breach_streak[name] = 0
                self.confirmed_streak[name] = 0
        traffic = policy.traffic_metrics()
        rules = policy.threshold_metrics()
        for key in sorted(set(scores) | set(self.anomaly_streak)):
            # A cold model's score is not evidence of anything (docs/core.md), and neither is a
            # traffic level: traffic is the condition the service runs under (a daily cycle, a
            # drain), judged by LOW_TRAFFIC and the drain conflict, not a symptom of a release.
            if key in traffic:
                continue
            # Nor is a departure the service's long memory calls routine (its own bursts):
            # ``routine`` names those metrics, and ``JOINT`` when every remembered one is.
            if key in routine:
                self.anomaly_streak[key] = 0
                continue
            # A threshold metric's model departure counts only when the window has gone part
            # of the way to the written limit (``departs``): on a busy service the model sees
            # an error rate wander by 20-35 % (precise counts), and a p99 follow the daily
            # load by 20 %: departures no written limit calls a regression. A sustained
            # moderate one is the sequential test's to find.
            relevant = key not in rules or self.departs(key, policy)
            departing = anomalous(key) and relevant
            self.anomaly_streak[key] = self.anomaly_streak.get(key, 0) + 1 if departing else 0
        self.critical_streak = self.critical_streak + 1 if critical else 0
        return Streaks(
            dict(self.breach_streak),
            dict(self.confirmed_streak),
            dict(self.anomaly_streak),
            self.critical_streak,
        )

    def observe(
        self,
        summary: WindowSummary,
        checks: Mapping[str, ThresholdCheck],
        scores: Mapping[str, Score],
        policy: Policy,
        last_seen: Mapping[tuple[str, str], float],
        alerts: AlertBook,
        fleet: FleetFacts,
        memory: Mapping[str, Memory] | None = None,
    ) -> Judgement:
        """Fold one observation window; return the judgement the rules read.

        ``memory``: the service's long memory per threshold metric (issue 11): a ratio-only
        breach routine for the service is not a breach, and with a warm memory only a rare
        departure confirms one."""
        sp = policy.for_service(self.facts.service)
        critical = alerts.critical_during(summary.start)
        self.count(summary, sp)
        self.record_values(checks, sp)
        mem = memory or {}
        checks, routine, counts = self.temper(summary, checks, sp, mem)
        tails = {
            name: self.rarity(name, mem[name], summary.start, sp)
            for name, c in checks.items()
            if c.breach and name in mem and mem[name].n_learned >= mem[name].min_windows
        }
        streaks = self.streak(
            checks,
            scores,
            sp,
            bool(critical),
            tails,
            self.routine_now(mem, scores, summary.start, sp),
        )
        breaching = tuple(name for name, c in checks.items() if c.breach)
        learned = {k: s.n_learned for k, s in scores.items() if k != JOINT}
        signals = read_signals(
            summary,
            sp,
            self.baseline,
            last_seen,
            alerts,
            breaching=breaching,
            learned={m: learned.get(m, 0) for m in breaching},
            traffic_means=self.traffic_means(sp),
            span=self.span,
        )
        sequential = self.sequential(sp) if self.request_id is None else {}
        alarms = [m for m, v in sequential.items() if v.alarming]
        lasting = self.lasting(streaks, sp)
        return Judgement(
            self.facts, policy, sp, fleet, summary, self.baseline, checks, scores, streaks,
            critical, signals, memory=tails, routine=routine, counts=counts,
            onsets=self.onsets(breaching or alarms or lasting), sequential=sequential,
        )  # fmt: skip

    @staticmethod
    def lasting(streaks: Streaks, policy: ServicePolicy) -> list[str]:
        """Threshold metrics whose model departure has lasted ``anomaly_only_windows``: a
        trigger on its own, so its onset is attributed too (an ANOMALY that a trend begun
        before the deploy explains must not wait for the breach or the sequential alarm that
        would find it: noise-pre-deploy-trend seed 1032)."""
        need = policy.anomaly_only_windows
        rules = policy.threshold_metrics()
        return [m for m, n in sorted(streaks.anomaly.items()) if m in rules and n >= need]

    def record_values(self, checks: Mapping[str, ThresholdCheck], policy: ServicePolicy) -> None:
        """Append each threshold metric's stat in this observation window (NaN: absent)."""
        for name in sorted(policy.threshold_metrics()):
            check = checks.get(name)
            self.obs_values.setdefault(name, []).append(
                check.value if check is not None else math.nan
            )

    def departs(self, name: str, policy: ServicePolicy) -> bool:
        """This window's value of threshold metric ``name`` has gone at least
        ``MODEL_ONLY_SHARE`` of the way to its written ratio limit (without one: worse than
        the baseline by ``SEQUENTIAL_MARGIN``), from its baseline level (the median of the
        baseline windows; an error rate's, at least their mean). True without a baseline or
        a value to compare."""
        base = _finite(self.base_values.get(name, []))
        values = self.obs_values.get(name, [])
        if not base or not values or not math.isfinite(values[-1]):
            return True
        level = _median(base)
        if is_error_rate(name):
            level = max(level, math.fsum(base) / len(base))
        ratio = policy.metrics[name].max_ratio_to_baseline
        excess = MODEL_ONLY_SHARE * (ratio - 1.0) if ratio is not None else SEQUENTIAL_MARGIN
        return values[-1] > level * (1.0 + excess)

    def routine_now(
        self,
        memory: Mapping[str, Memory],
        scores: Mapping[str, Score],
        ts: float,
        policy: ServicePolicy,
    ) -> frozenset[str]:
        """Threshold metrics whose level over their current anomalous run (at most
        ``consecutive_breach_windows`` windows) is routine for the service's warm long memory;
        with ``JOINT`` when every threshold metric with a warm memory is routine, or when every
        threshold metric its own model finds anomalous is (the joint departure is theirs)."""
        warm = {
            name: mem
            for name, mem in sorted(memory.items())
            if name in policy.metrics and mem.n_learned >= mem.min_windows
        }
        routine = set()
        for name, mem in warm.items():
            run = self.anomaly_streak.get(name, 0) + 1
            if mem.tail(self.run_low(name, policy, run), ts).routine:
                routine.add(name)
        threshold = policy.anomaly_threshold
        departing = {
            m for m in policy.threshold_metrics() if m in scores and scores[m].score >= threshold
        }
        if (warm and len(routine) == len(warm)) or (departing and departing <= routine):
            routine.add(JOINT)
        return frozenset(routine)

    def run_low(self, name: str, policy: ServicePolicy, run: int | None = None) -> float:
        """The minimum of ``name`` over its current breaching run (or the last ``run``
        windows), this window included, at most ``consecutive_breach_windows`` windows: the
        level the departure has held."""
        if run is None:
            run = self.breach_streak.get(name, 0) + 1
        run = min(policy.consecutive_breach_windows, run)
        values = _finite(self.obs_values.get(name, [])[-run:])
        return min(values) if values else math.nan

    def rarity(self, name: str, memory: Memory, ts: float, policy: ServicePolicy) -> Tail:
        """How rare the level held by ``name``'s breaching run is for this service."""
        return memory.tail(self.run_low(name, policy), ts)

    def temper(
        self,
        summary: WindowSummary,
        checks: Mapping[str, ThresholdCheck],
        policy: ServicePolicy,
        memory: Mapping[str, Memory],
    ) -> tuple[dict[str, ThresholdCheck], dict[str, Tail], dict[str, CountEvidence]]:
        """The checks with the breaches that are not departures cleared (issue 11):

        - a breach of the baseline ratio only (under ``max``) at a level the service's warm
          long memory does not find rare (its own bursts): against days of the service's
          windows, the 20-window baseline is too short to call it a departure;
        - an error-rate breach that the window's request count cannot support
          (``models.counts``: ``low_traffic`` or not significant).
        """
        out = dict(checks)
        routine: dict[str, Tail] = {}
        counts: dict[str, CountEvidence] = {}
        for name, check in sorted(checks.items()):
            if not check.breach:
                continue
            mem = memory.get(name)
            ratio_only = check.max is None or check.value <= check.max
            if ratio_only and mem is not None and mem.n_learned >= mem.min_windows:
                tail = self.rarity(name, mem, summary.start, policy)
                if not tail.rare:
                    routine[name] = tail
                    out[name] = replace(check, breach=False)
                    continue
            if is_error_rate(name):
                evidence = self.count_test(summary, check, policy)
                # Cleared unless its errors are significant given the requests (a clear
                # excess is a breach even when a rate at the limit would not be).
                if evidence is not None and evidence.p_value >= COUNT_ALPHA:
                    counts[name] = evidence
                    out[name] = replace(check, breach=False)
        return out, routine, counts

    def count_test(
        self, summary: WindowSummary, check: ThresholdCheck, policy: ServicePolicy
    ) -> CountEvidence | None:
        """The count test of an error-rate breach, given the window's requests (the first
        traffic metric's mean rate x the window's seconds); None without a traffic metric, or
        when traffic drained below ``TRAFFIC_DRAIN_RATIO`` x its baseline."""
        for traffic in sorted(policy.traffic_metrics()):
            stats = summary.metrics.get(traffic)
            if stats is None or stats.count == 0:
                continue
            base_traffic = self.baseline.stat(traffic, "mean") if self.baseline else None
            if base_traffic is not None and stats.mean < TRAFFIC_DRAIN_RATIO * base_traffic:
                return None  # a drain: the drain conflict judges it (SIGNALS_CONFLICT)
            limits = [check.max] if check.max is not None else []
            if check.max_ratio_to_baseline is not None and check.baseline is not None:
                limits.append(check.max_ratio_to_baseline * check.baseline)
            limit = min(limits) if limits else check.value
            base = check.baseline if check.baseline is not None else 0.0
            return error_count_test(
                check.value, stats.mean * self.width, base, limit, alpha=COUNT_ALPHA
            )
        return None

    def onsets(self, metrics: Iterable[str]) -> dict[str, Onset]:
        """Metrics whose departure began before the deploy (``models.onset``): the breaching
        ones, or, when none breaches, those whose sequential test alarms (or, failing that,
        whose model departure has lasted ``anomaly_only_windows``).

        A finding that accounts for the departure of the latest window (its departure is at
        least ``ONSET_SHARE`` of that window's value above the baseline's median) stands
        for the rest of the trial (``pre_deploy``): as the bake goes on, a trend that began
        before the deploy keeps climbing and its attribution flickers with the noise, yet it
        did not begin with the release and is never automated (issue 11). A finding about a
        smaller departure than the one now breaching (the observation's median still mostly
        before a release's step) holds for its window only."""
        out: dict[str, Onset] = {}
        for name in sorted(set(metrics)):
            base = _finite(self.base_values.get(name, []))
            if len(base) < MIN_ONSET_BASELINE:
                continue
            obs = _finite(self.obs_values.get(name, []))
            onset = attribute_onset(base, obs)
            if onset.before_deploy:
                if onset.departure >= ONSET_SHARE * (obs[-1] - _median(base)):
                    self.pre_deploy[name] = onset
                out[name] = onset
            elif name in self.pre_deploy:
                out[name] = self.pre_deploy[name]
        return out

    def binomial_sd(self, rate: float, policy: ServicePolicy) -> float:
        """Standard deviation of an error rate of ``rate`` (floored at 1e-4) over one window of
        the baseline's traffic (the first traffic metric); 0 without one."""
        for traffic in sorted(policy.traffic_metrics()):
            mean = self.baseline.stat(traffic, "mean") if self.baseline is not None else None
            if mean is not None and mean > 0.0:
                p = min(1.0, max(rate, 1e-4))
                return math.sqrt(p * (1.0 - p) / max(1.0, mean * self.width))
        return 0.0

    def sequential(self, policy: ServicePolicy) -> dict[str, SequentialVerdict]:
        """Each threshold metric's sequential test over the observation so far (recomputed
        from the kept values: no state beyond them). Read until the deployment raises a
        request: it asks a human once, and a pending request then follows the windows (it is
        withdrawn when they clear, as DESIGN §1 says)."""
        out: dict[str, SequentialVerdict] = {}
        for name in sorted(policy.threshold_metrics()):
            base = _finite(self.base_values.get(name, []))
            if len(base) < MIN_ONSET_BASELINE:
                continue
            test = self.sequential_test(name, base, policy)
            verdict = test.verdict()
            for value in self.obs_values.get(name, []):
                verdict = test.update(value)
            out[name] = verdict
        return out

    def sequential_test(
        self, name: str, base: list[float], policy: ServicePolicy
    ) -> SequentialTest:
        """The sequential test of threshold metric ``name`` against its baseline values.

        It may start at any of the first ``anomaly_only_windows`` windows (a release reaches
        its pods over a minute or two: the windows before its effect do not count against
        it), and it knows the bake's length: the windows from the first observation window
        to ``bake_until`` (``models.sequential``, "a known horizon"). Its margin is
        ``SEQUENTIAL_SHARE`` of the way to the written ratio limit (``SEQUENTIAL_MARGIN``
        without one)."""
        horizon = max(1, math.ceil(self.bake_until / self.width) - self.first_k)
        robust = SequentialTest.from_baseline(base)
        # Quantised values (histogram buckets): one step is noise, not a regression.
        reference, scale = robust.reference, max(robust.scale, _quantum(base))
        if is_error_rate(name):
            # Errors are counts: the baseline rate is their mean (a median of mostly-zero
            # windows says nothing), and its noise unit at least the binomial spread.
            reference = max(reference, math.fsum(base) / len(base))
            scale = max(scale, self.binomial_sd(reference, policy))
        ratio = policy.metrics[name].max_ratio_to_baseline
        margin = SEQUENTIAL_SHARE * (ratio - 1.0) if ratio is not None else SEQUENTIAL_MARGIN
        return SequentialTest(
            reference, scale, margin=margin, clip=SEQUENTIAL_CLIP,
            starts=policy.anomaly_only_windows, horizon=horizon,
        )  # fmt: skip

    def conclude(self, j: Judgement) -> Findings:
        """Run the rule tables over a judgement of this deployment; count what they found."""
        found = judge(j)
        self.trigger_windows += 1 if found.triggers else 0
        summary, sp = j.summary, j.service_policy
        # A window only shows the breach has cleared if it saw the metrics that breached:
        # silence is missing evidence (stale telemetry), never a recovery.
        observed = all(
            summary.metrics.get(name) is not None and summary.metrics[name].count > 0
            for name in sp.threshold_metrics()
        )
        anomalous = any(n > 0 for n in j.streaks.anomaly.values())
        breaching = any(c.breach for c in j.checks.values())
        nothing = not breaching and not anomalous and not j.critical and observed
        self.clear_windows = self.clear_windows + 1 if nothing else 0
        bake_over = summary.end >= self.bake_until and not found.episode
        triggers, confirmed, blockers = dict(found.triggers), j.confirmed, dict(found.blockers)
        # A request due but waiting for another trigger is never dropped (DESIGN §1, issue 11):
        # if the triggers clear while it waits, it is made as it was due.
        if triggers:
            self.due = (dict(triggers), confirmed, dict(blockers))
        elif self.due is not None and self.trigger_windows < sp.consecutive_breach_windows:
            was, confirmed, held = self.due
            triggers = {code: f"{text} (the window before)" for code, text in was.items()}
            blockers = {**held, **blockers}
            self.trigger_windows += 1
        return Findings(
            triggers=triggers,
            confirmed=confirmed,
            blockers=blockers,
            episode=found.episode,
            clear_windows=self.clear_windows,
            trigger_windows=self.trigger_windows,
            bake_over=bake_over,
            bake=self.bake_evidence(sp) if bake_over else None,
        )
