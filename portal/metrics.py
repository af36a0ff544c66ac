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
- `callrec_recordings_active`: recordings being written now.
- `callrec_rtp_packets_relayed_total` and `callrec_rtp_packets_dropped_total`: RTP and
  RTCP packets the relay sent out and refused (foreign source, no far end, congestion,
  SRTP failures), over the calls that have ended: a worker reports a session's counters
  when it closes it, so a long call adds its packets at its end.
- `callrec_call_setup_seconds` (histogram): from an INVITE received to the 2xx callrec
  sent for it, ringing included (`SetupLatency`, fed by the SIP side).
- `callrec_sip_auth_failures_total`: digest answers that failed (wrong password, stale
  or foreign nonce, replayed nc).
- `callrec_upload_queue_depth`: recordings waiting for the object store, when there is
  one (`[storage] objects`); absent otherwise.

No login is asked: a scraper rarely has a portal session, and the figures carry no
personal data (no numbers, names or recordings). The endpoint is off unless the config
turns it on, for an operator whose portal address is reachable from where scraping
should not be.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["METRICS_PATH", "MetricsSource", "SetupLatency", "WorkerFigures", "metrics_route"]

METRICS_PATH = "/metrics"
# Seconds from INVITE to 2xx: a trunk answers in well under a second, a person in 2-30.
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class SetupLatency:
    """A histogram of call set-up times (INVITE to 2xx), fed one figure per call by
    the SIP side (`B2bua.setup_observers`) and read at each scrape."""

    def __init__(self, buckets: Sequence[float] = SETUP_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, count of observations <= le) per bucket, +Inf last, as Prometheus has it."""
        result: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return result


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
    recordings_active: Callable[[], int] = lambda: 0
    packets_relayed: Callable[[], int] = lambda: 0
    packets_dropped: Callable[[], int] = lambda: 0
    auth_failures: Callable[[], int] = lambda: 0
    setup_latency: SetupLatency = field(default_factory=SetupLatency)
    # The object store's upload queue (None: recordings stay on the local disk).
    upload_queue_depth: Callable[[], int] | None = None


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
        source = self.source
        yield GaugeMetricFamily(
            "callrec_calls_active", "calls in progress", value=source.calls_active()
        )
        yield GaugeMetricFamily(
            "callrec_recordings_active",
            "recordings being written now",
            value=source.recordings_active(),
        )
        yield CounterMetricFamily(
            "callrec_rtp_packets_relayed",
            "RTP and RTCP packets sent on by the relay (calls that ended)",
            value=source.packets_relayed(),
        )
        yield CounterMetricFamily(
            "callrec_rtp_packets_dropped",
            "RTP and RTCP packets the relay refused or could not send (calls that ended)",
            value=source.packets_dropped(),
        )
        yield CounterMetricFamily(
            "callrec_sip_auth_failures",
            "SIP digest authentications that failed",
            value=source.auth_failures(),
        )
        latency = source.setup_latency
        yield HistogramMetricFamily(
            "callrec_call_setup_seconds",
            "seconds from an INVITE received to the 2xx sent for it",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )
        if source.upload_queue_depth is not None:
            yield GaugeMetricFamily(
                "callrec_upload_queue_depth",
                "recordings waiting to be uploaded to the object store",
                value=source.upload_queue_depth(),
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
