"""Prometheus metrics: served over HTTP by the daemon (127.0.0.1 unless configured otherwise,
off without a port), written to a node-exporter textfile by a one-off ``retention run``.

The metrics to alert on are ``retention_last_success_timestamp_seconds{rule}`` against
``retention_previous_run_timestamp_seconds{rule}`` (a rule with no success since its last
scheduled run, plus a grace), and ``retention_overdue_records{rule}`` (records past their cutoff
plus a grace period: a purge that cannot keep up with new data shows here). Labels are rule names
and outcomes, never record values. The schedule and audit-trail gauges are read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client import write_to_textfile as _write_to_textfile
from prometheus_client.core import GaugeMetricFamily

from retention import __version__
from retention.config import Config, Rule
from retention.run_report import FAILED, RunReport, Status
from retention.scheduler import next_run, previous_run

# Given an audit directory, when its trail last wrote a signed checkpoint and when one was last
# anchored. The caller hands in the audit trail's own reading: the trail sits above this module.
TrailMoments = Callable[[Path], tuple[datetime | None, datetime | None]]

# A `_created` sample per counter doubles the series and says nothing an alert uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

OUTCOMES = get_args(Status)
# A purge takes seconds to hours.
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, float("inf"))


@dataclass(frozen=True)
class Metrics:
    """The metrics of one process, in their own registry."""

    registry: CollectorRegistry
    last_success: Gauge
    runs: Counter
    deleted: Counter
    anonymised: Counter
    failures: Counter
    duration: Histogram
    overdue: Gauge
    reload_success: Gauge
    reload_time: Gauge


def new_metrics(
    rules: Iterable[str],
    config: Callable[[], Config] | None = None,
    clock: Callable[[], datetime] | None = None,
    trail_moments: TrailMoments | None = None,
) -> Metrics:
    """Given the rule names, return fresh metrics, every per-rule counter present at 0 (so that
    a rate or an increase is defined from the first scrape). With ``config`` (the config in
    force, asked at each scrape) and ``clock``, also each rule's previous and next scheduled run;
    with ``trail_moments`` too, the audit trail's last checkpoint and anchor."""
    registry = CollectorRegistry()
    _build_info(registry)
    if config is not None and clock is not None:
        registry.register(ScheduleCollector(config, clock, trail_moments))
    metrics = Metrics(
        registry=registry,
        last_success=_last_success_gauge(registry),
        runs=Counter(
            "retention_runs",
            "Runs of each rule, by outcome.",
            ["rule", "outcome"],
            registry=registry,
        ),
        deleted=Counter(
            "retention_records_deleted", "Records deleted.", ["rule"], registry=registry
        ),
        anonymised=Counter(
            "retention_records_anonymised", "Records anonymised.", ["rule"], registry=registry
        ),
        failures=Counter(
            "retention_failures",
            "Runs that failed (store unreachable, audit trail, error).",
            ["rule"],
            registry=registry,
        ),
        duration=Histogram(
            "retention_run_duration_seconds",
            "How long each rule's run took.",
            ["rule"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        ),
        overdue=_overdue_gauge(registry),
        reload_success=Gauge(
            "retention_config_last_reload_successful",
            "Whether the last config load (start or SIGHUP) succeeded (1) or was rejected (0).",
            registry=registry,
        ),
        reload_time=Gauge(
            "retention_config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (Unix time).",
            registry=registry,
        ),
    )
    for rule in rules:
        for outcome in OUTCOMES:
            metrics.runs.labels(rule, outcome)
        for counter in (metrics.deleted, metrics.anonymised, metrics.failures):
            counter.labels(rule)
    return metrics


def _last_success_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "retention_last_success_timestamp_seconds",
        "When each rule last finished a successful run (Unix time).",
        ["rule"],
        registry=registry,
    )


def _overdue_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "retention_overdue_records",
        "Records already past their cutoff plus the grace period ([daemon].overdue_grace).",
        ["rule"],
        registry=registry,
    )


def observe_report(metrics: Metrics, report: RunReport, finished_at: datetime) -> None:
    """Given a run's report and when it finished, count its outcomes, records and durations."""
    for outcome in report.outcomes:
        metrics.runs.labels(outcome.rule, outcome.status).inc()
        metrics.deleted.labels(outcome.rule).inc(outcome.deleted)
        metrics.anonymised.labels(outcome.rule).inc(outcome.anonymised)
        metrics.duration.labels(outcome.rule).observe(outcome.seconds)
        if outcome.status in FAILED:
            metrics.failures.labels(outcome.rule).inc()
        elif outcome.status == "ok" and not report.dry_run:
            metrics.last_success.labels(outcome.rule).set(finished_at.timestamp())


def observe_failure(metrics: Metrics, rule: str) -> None:
    """Given a rule whose run failed before it could start (planning, audit trail), count it."""
    metrics.runs.labels(rule, "failed").inc()
    metrics.failures.labels(rule).inc()


def set_last_successes(metrics: Metrics, successes: Mapping[str, datetime | None]) -> None:
    """Given each rule's last success as the run ledger has it, set the alerting gauge (a rule
    that never succeeded has no sample: alert on its absence too)."""
    for rule, moment in successes.items():
        if moment is not None:
            metrics.last_success.labels(rule).set(moment.timestamp())


def set_overdue(metrics: Metrics, counts: Mapping[str, int]) -> None:
    """Given each rule's overdue record count, set the gauge."""
    for rule, count in counts.items():
        metrics.overdue.labels(rule).set(count)


def set_config_loaded(metrics: Metrics, succeeded: bool, moment: datetime) -> None:
    """Given whether a config load (start, SIGHUP) succeeded and when, set the reload gauges (a
    rejected file keeps the time of the config still in force)."""
    metrics.reload_success.set(1 if succeeded else 0)
    if succeeded:
        metrics.reload_time.set(moment.timestamp())


def _build_info(registry: CollectorRegistry) -> None:
    Gauge(
        "retention_build_info",
        "Always 1; the version of retention that runs.",
        ["version"],
        registry=registry,
    ).labels(__version__).set(1)


class ScheduleCollector:
    """The gauges read at each scrape: every rule's previous and next scheduled run (without
    jitter) from the config in force, and, given ``trail_moments``, the audit trail's last
    checkpoint and anchor."""

    def __init__(
        self,
        config: Callable[[], Config],
        clock: Callable[[], datetime],
        trail_moments: TrailMoments | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.trail_moments = trail_moments

    def collect(self) -> Iterator[GaugeMetricFamily]:
        config, now = self.config(), self.clock()
        previous = GaugeMetricFamily(
            "retention_previous_run_timestamp_seconds",
            "When each rule was last scheduled to run, jitter aside (Unix time): a success "
            "older than this plus a grace is a missed run.",
            labels=["rule"],
        )
        following = GaugeMetricFamily(
            "retention_next_run_timestamp_seconds",
            "When each rule is next scheduled to run, jitter aside (Unix time).",
            labels=["rule"],
        )
        zone = config.daemon.timezone
        for rule in config.rules:
            schedule = _scheduled_by(rule).schedule
            before, after = previous_run(schedule, zone, now), next_run(schedule, zone, now)
            if before is not None:
                previous.add_metric([rule.name], before.timestamp())
            if after is not None:
                following.add_metric([rule.name], after.timestamp())
        yield previous
        yield following
        if self.trail_moments is None or config.audit is None or not config.audit.enabled:
            return
        last_checkpoint, last_anchor = self.trail_moments(config.audit.directory)
        for name, text, moment in (
            (
                "retention_audit_last_checkpoint_timestamp_seconds",
                "When the audit trail's last signed checkpoint was written (Unix time).",
                last_checkpoint,
            ),
            (
                "retention_audit_last_anchor_timestamp_seconds",
                "When `retention audit anchor` last exported a checkpoint (Unix time).",
                last_anchor,
            ),
        ):
            family = GaugeMetricFamily(name, text)
            if moment is not None:
                family.add_metric([], moment.timestamp())
            yield family


def _scheduled_by(rule: Rule) -> Rule:
    """A cross-store rule runs with its subjects' rule, on that rule's schedule."""
    if rule.objects is not None and rule.objects.subjects is not None:
        return rule.objects.subjects.rule
    return rule


def serve_metrics(metrics: Metrics, address: str, port: int) -> WSGIServer:
    """Given an address and a port, serve /metrics there from a thread; return the server (its
    ``shutdown()`` stops it). OSError when the port is taken."""
    server, _thread = start_http_server(port, addr=address, registry=metrics.registry)
    return server


def write_run_textfile(
    path: Path,
    report: RunReport,
    finished_at: datetime,
    config: Config,
    successes: Mapping[str, datetime | None],
    overdue: Mapping[str, int],
    trail_moments: TrailMoments,
) -> None:
    """Given a path in node-exporter's textfile directory, a one-off run's report, when it
    finished, the config of its rules, their last successes and overdue counts, and the reading
    of the audit trail's freshness, write there
    atomically: the run's counts as gauges ``retention_last_run_*{rule}`` (a textfile holds one
    run: counters would go back to 0 at each run, which rate() reads as a reset), each rule's
    last success, overdue records, previous and next scheduled run, the build and the audit
    trail's last checkpoint and anchor."""
    registry = CollectorRegistry()
    _build_info(registry)
    registry.register(ScheduleCollector(lambda: config, lambda: finished_at, trail_moments))
    last_success = _last_success_gauge(registry)
    for rule, moment in successes.items():
        if moment is not None:
            last_success.labels(rule).set(moment.timestamp())
    overdue_gauge = _overdue_gauge(registry)
    for rule, count in overdue.items():
        overdue_gauge.labels(rule).set(count)
    _run_gauges(report, finished_at, registry)
    _write_to_textfile(str(path), registry)


def _run_gauges(report: RunReport, finished_at: datetime, registry: CollectorRegistry) -> None:
    finished = Gauge(
        "retention_last_run_timestamp_seconds",
        "When the last run written here finished (Unix time).",
        ["rule"],
        registry=registry,
    )
    outcome_gauge = Gauge(
        "retention_last_run_outcome",
        "1 for the outcome of the last run written here, 0 for the others.",
        ["rule", "outcome"],
        registry=registry,
    )
    duration = Gauge(
        "retention_last_run_duration_seconds",
        "How long the last run written here took.",
        ["rule"],
        registry=registry,
    )
    counts = {
        name: Gauge(
            f"retention_last_run_records_{name}",
            f"Records {name.replace('_', ' ')} in the last run written here.",
            ["rule"],
            registry=registry,
        )
        for name in (
            "due",
            "held",
            "deleted",
            "anonymised",
            "children_deleted",
            "failed",
            "skipped",
        )
    }
    for outcome in report.outcomes:
        finished.labels(outcome.rule).set(finished_at.timestamp())
        duration.labels(outcome.rule).set(outcome.seconds)
        for status in OUTCOMES:
            outcome_gauge.labels(outcome.rule, status).set(1 if status == outcome.status else 0)
        for name, count in outcome.counters().items():
            counts[name].labels(outcome.rule).set(count)
