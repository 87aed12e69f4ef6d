"""Prometheus metrics: served over HTTP by the daemon (127.0.0.1 unless configured otherwise,
off without a port), written to a node-exporter textfile by a one-off ``retention run``.

The metric to alert on is ``retention_last_success_timestamp_seconds{rule}`` (a rule that stopped
succeeding), with ``retention_overdue_records{rule}`` (records past their cutoff plus a grace
period: a purge that cannot keep up with new data shows here). Labels are rule names and
outcomes, never record values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import write_to_textfile as _write_to_textfile

from retention.executor import FAILED, RunReport, Status

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


def new_metrics(rules: Iterable[str]) -> Metrics:
    """Given the rule names, return fresh metrics, every per-rule counter present at 0 (so that
    a rate or an increase is defined from the first scrape)."""
    registry = CollectorRegistry()
    metrics = Metrics(
        registry=registry,
        last_success=Gauge(
            "retention_last_success_timestamp_seconds",
            "When each rule last finished a successful run (Unix time).",
            ["rule"],
            registry=registry,
        ),
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
        overdue=Gauge(
            "retention_overdue_records",
            "Records already past their cutoff plus the grace period ([daemon].overdue_grace).",
            ["rule"],
            registry=registry,
        ),
    )
    for rule in rules:
        for outcome in OUTCOMES:
            metrics.runs.labels(rule, outcome)
        for counter in (metrics.deleted, metrics.anonymised, metrics.failures):
            counter.labels(rule)
    return metrics


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


def serve_metrics(metrics: Metrics, address: str, port: int) -> WSGIServer:
    """Given an address and a port, serve /metrics there from a thread; return the server (its
    ``shutdown()`` stops it). OSError when the port is taken."""
    server, _thread = start_http_server(port, addr=address, registry=metrics.registry)
    return server


def write_textfile(metrics: Metrics, path: Path) -> None:
    """Given a path in node-exporter's textfile directory, write the metrics there atomically
    (a temporary file renamed over it)."""
    _write_to_textfile(str(path), metrics.registry)
