"""Prometheus metrics of `callrec serve` at GET /metrics (`[portal] metrics = true`).

What is exposed, read at each scrape from a `MetricsSource` the application hands in
(the portal imports nothing of the media workers or the SIP side):

- `callrec_media_port_pairs{worker}` and `callrec_media_port_pairs_free{worker}`: each
  media worker's slice of the RTP port range and how much of it is free now (a worker
  that is down has none free); `sum()` them for the whole pool.
- `callrec_media_worker_up{worker}`: 1 while the worker is live, and
  `callrec_media_workers_alive`: how many are.
- `callrec_media_worker_calls{worker}`: the calls each worker relays now.
- `callrec_media_worker_restarts_total`: workers restarted after dying.
- `callrec_calls_active`: calls in progress on the SIP side (set-up or answered).

No login is asked: a scraper rarely has a portal session, and the figures carry no
personal data (no numbers, names or recordings). The endpoint is off unless the config
turns it on, for an operator whose portal address is reachable from where scraping
should not be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["METRICS_PATH", "MetricsSource", "WorkerFigures", "metrics_route"]

METRICS_PATH = "/metrics"


class WorkerFigures(Protocol):
    """One media worker's figures (`callrec.workers.WorkerStatus`)."""

    @property
    def index(self) -> int: ...
    @property
    def alive(self) -> bool: ...
    @property
    def port_pairs(self) -> int: ...
    @property
    def port_pairs_free(self) -> int: ...
    @property
    def calls(self) -> int: ...


@dataclass(frozen=True)
class MetricsSource:
    """Where the figures come from, read at each scrape."""

    workers: Callable[[], Sequence[WorkerFigures]]
    restarts: Callable[[], int]
    calls_active: Callable[[], int]


class _Collector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        workers = self.source.workers()
        pairs = GaugeMetricFamily(
            "callrec_media_port_pairs", "RTP port pairs of the worker's slice", labels=["worker"]
        )
        free = GaugeMetricFamily(
            "callrec_media_port_pairs_free", "RTP port pairs free now", labels=["worker"]
        )
        up = GaugeMetricFamily(
            "callrec_media_worker_up", "1 if the worker is live", labels=["worker"]
        )
        calls = GaugeMetricFamily(
            "callrec_media_worker_calls", "calls relayed by the worker now", labels=["worker"]
        )
        for worker in workers:
            label = [str(worker.index)]
            pairs.add_metric(label, worker.port_pairs)
            free.add_metric(label, worker.port_pairs_free)
            up.add_metric(label, 1 if worker.alive else 0)
            calls.add_metric(label, worker.calls)
        yield from (pairs, free, up, calls)
        yield GaugeMetricFamily(
            "callrec_media_workers_alive",
            "media workers live now",
            value=sum(1 for worker in workers if worker.alive),
        )
        yield CounterMetricFamily(
            "callrec_media_worker_restarts",
            "media workers restarted after dying",
            value=self.source.restarts(),
        )
        yield GaugeMetricFamily(
            "callrec_calls_active", "calls in progress", value=self.source.calls_active()
        )


def metrics_route(source: MetricsSource) -> web.RouteDef:
    """The GET /metrics route over `source`, in its own registry (no global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(source))

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return web.get(METRICS_PATH, metrics)
