"""Media workers: the RTP relay and the recorders run in processes of their own.

`callrec serve` keeps SIP, the store and the portal in its own process and starts
`[media] workers` worker processes (one per core by default), each owning one slice of
the RTP port range, driven over a Unix socket pair (the shape of Kamailio + rtpengine):
so the SIP event loop never waits behind media, and media uses every core.

- `protocol`: the control channel's framing (sans-IO).
- `worker`: a worker's core, `MediaWorker` (relay sessions + recorders).
- `channel`: reading the channel in asyncio (both ends).
- `process`: the worker process's entry point.
- `remote`: `RemoteMedia`, one call's media as the SIP process drives it.
- `pool`: `WorkerPool`, the SIP side's media factory: starts, assigns, restarts.
"""

from callrec.workers.pool import PortStats, WorkerPool, WorkerStartError, WorkerStatus
from callrec.workers.remote import RemoteMedia

__all__ = ["PortStats", "RemoteMedia", "WorkerPool", "WorkerStartError", "WorkerStatus"]
