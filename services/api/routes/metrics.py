"""Prometheus metrics, read from the job store at scrape time: the store is the truth, and
every API replica reports the same numbers."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator import repository
from orchestrator.db import session_scope

router = APIRouter(tags=["system"])


class JobStoreCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("relaytune_jobs", "Jobs by status", labels=["status"])
        phases = GaugeMetricFamily("relaytune_phases", "Phases by pool and status",
                                   labels=["pool", "status"])
        cost = GaugeMetricFamily("relaytune_billed_cost", "GPU cost of finished runs by pool",
                                 labels=["pool", "currency"])
        with session_scope() as session:
            for status, count in repository.job_counts(session):
                jobs.add_metric([status], count)
            for pool, status, count in repository.phase_counts(session):
                phases.add_metric([pool, status], count)
            for pool, currency, amount in repository.billed_cost(session):
                cost.add_metric([pool, currency], amount)
        yield from (jobs, phases, cost)


registry = CollectorRegistry()
registry.register(JobStoreCollector())


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus text format: jobs by status, phases by pool and status, billed cost."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
