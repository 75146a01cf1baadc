"""Prometheus metrics, read from the job store at scrape time: the store is the truth, and
every API replica reports the same numbers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.auth import authenticate_key, require_admin
from orchestrator.db import session_scope
from orchestrator.timings import COMPONENTS
from services.api.deps import BearerCredentials, SessionDep, SettingsDep

router = APIRouter(tags=["system"])


class JobStoreCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("relaytune_jobs", "Jobs by status", labels=["status"])
        phases = GaugeMetricFamily(
            "relaytune_phases", "Phases by pool and status", labels=["pool", "status"]
        )
        cost = GaugeMetricFamily(
            "relaytune_billed_cost",
            "GPU cost of finished runs by pool",
            labels=["pool", "currency"],
        )
        with session_scope() as session:
            for status, count in repository.job_counts(session):
                jobs.add_metric([status], count)
            for pool, status, count in repository.phase_counts(session):
                phases.add_metric([pool, status], count)
            for pool, currency, amount in repository.billed_cost(session):
                cost.add_metric([pool, currency], amount)
            timing = list(_timing_metrics(session))
        yield from (jobs, phases, cost, *timing)


def _timing_metrics(session: Session) -> Iterator[Metric]:
    """Sums over every recorded run (PhaseTiming row), so rates follow from two scrapes."""
    labels = ["phase", "pool"]
    seconds = CounterMetricFamily(
        "relaytune_phase_seconds",
        "Billed seconds of finished runs by component (claim to "
        "release; the components add up to the billed seconds)",
        labels=[*labels, "component"],
    )
    billed = CounterMetricFamily(
        "relaytune_phase_billed_seconds",
        "Billed seconds of finished runs, claim to release",
        labels=labels,
    )
    waited = CounterMetricFamily(
        "relaytune_phase_queue_wait_seconds",
        "Seconds finished runs waited in the queue (not billed)",
        labels=labels,
    )
    samples = CounterMetricFamily(
        "relaytune_phase_samples", "Training samples processed by finished runs", labels=labels
    )
    tokens = CounterMetricFamily(
        "relaytune_phase_tokens", "Input tokens processed by finished runs", labels=labels
    )
    runs = CounterMetricFamily(
        "relaytune_phase_runs",
        "Finished runs by the status they ended in",
        labels=[*labels, "outcome"],
    )
    for row in repository.timing_totals(session):
        key = [row.phase, row.pool]
        for component in (*COMPONENTS, "other"):
            seconds.add_metric([*key, component], float(getattr(row, component)))
        billed.add_metric(key, float(row.billed))
        waited.add_metric(key, float(row.queue_wait))
        samples.add_metric(key, float(row.samples))
        tokens.add_metric(key, float(row.tokens))
    for phase, pool, outcome, count in repository.timing_outcomes(session):
        runs.add_metric([phase, pool, outcome], count)
    yield from (seconds, billed, waited, samples, tokens, runs)


registry = CollectorRegistry()
registry.register(JobStoreCollector())


def operator_scrape(
    session: SessionDep, settings: SettingsDep, credentials: BearerCredentials
) -> None:
    """Every tenant's jobs and cost are in the metrics: the metrics token or an admin key."""
    token = credentials.credentials if credentials else ""
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if expected and token and secrets.compare_digest(token.encode(), expected.encode()):
        return
    require_admin(authenticate_key(session, token), "GET /metrics")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(operator_scrape)],
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics() -> Response:
    """Prometheus text format: jobs by status, phases by pool and status, billed cost, and
    per-run time by component, runs by outcome and work done. Needs the metrics token
    (RELAYTUNE_METRICS_TOKEN) or an admin key as the bearer."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
