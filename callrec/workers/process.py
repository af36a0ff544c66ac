"""A media worker process: `python -m callrec.workers.process --fd N ...`.

`callrec serve` (`callrec.workers.pool`) starts one per worker with one end of a Unix
socket pair as file descriptor `--fd`, and `serve_channel` runs a `MediaWorker` on it
until the channel closes. The worker never outlives its parent: it exits when the
channel reaches end-of-file (the parent closed it, or died and the kernel closed it)
and, where Linux offers it, the kernel sends it SIGTERM when the parent dies
(`prctl(PR_SET_PDEATHSIG)`). Either way it first seals its recordings, so what a crash
of the SIP process leaves is playable; the SIP process files them at its next start.
SIGINT is ignored: a Ctrl-C at the terminal reaches the whole process group, and the
SIP process must be the one that decides the order of the shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys

from callrec.config import EVENT_LOOPS, event_loop_factory
from callrec.workers.channel import read_messages
from callrec.workers.protocol import ProtocolError, encode
from callrec.workers.worker import MediaWorker

log = logging.getLogger("callrec.worker")

_PR_SET_PDEATHSIG = 1
GC_YOUNG_THRESHOLD = 20_000


async def serve_channel(sock: socket.socket, worker_args: tuple[str, int, int]) -> None:
    """Run a `MediaWorker` on the control channel `sock` until it closes or SIGTERM."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    address, first, last = worker_args

    def send(message: dict[str, object]) -> None:
        if not writer.is_closing():
            writer.write(encode(message))

    worker = MediaWorker(address, first, last, send)
    terminated = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, terminated.set)
    send(worker.ready())
    ticker = loop.create_task(worker.tick_forever())
    reading = loop.create_task(_read_commands(reader, worker))
    stopping = loop.create_task(terminated.wait())
    await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
    for task in (reading, stopping, ticker):
        task.cancel()
    await worker.close_all()
    with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.drain(), timeout=2)
    writer.close()


async def _read_commands(reader: asyncio.StreamReader, worker: MediaWorker) -> None:
    try:
        async for message in read_messages(reader):
            await worker.handle(message)
    except ProtocolError as exc:
        log.error("the control channel is broken: %s", exc)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies; exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(0)


def _quiet_garbage_collector() -> None:
    """Keep the cyclic garbage collector from stalling the relay.

    A full collection walked every object the worker's imports made (numpy, PyAV,
    soundfile...) and held the loop for 44-58 ms with 150 recorded calls in a worker; the
    young collections ran about 12 times a second, for the per-packet tuples the
    recorders queue, which are freed by reference counting anyway. So what exists at
    start-up is frozen out of the collector's sight (`gc.freeze`), and a young collection
    waits for GC_YOUNG_THRESHOLD allocations instead of 700: measured in bench/RESULTS.md
    "Profile".
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _port_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callrec-media-worker")
    parser.add_argument("--fd", type=int, required=True, help="the control channel's socket")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--address", required=True, help="the address the relay binds")
    parser.add_argument("--ports", type=_port_range, required=True, help="FIRST-LAST")
    parser.add_argument("--parent", type=int, required=True, help="the SIP process's PID")
    parser.add_argument(
        "--loop", choices=EVENT_LOOPS, default="auto", help="the event loop, as [server] loop"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(args.parent)
    logging.basicConfig(
        level=os.environ.get("CALLREC_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s %(name)s [worker {args.index}] %(message)s",
    )
    sock = socket.socket(fileno=args.fd)
    first, last = args.ports
    _quiet_garbage_collector()
    with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
        runner.run(serve_channel(sock, (args.address, first, last)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
