"""A recording's bytes over HTTP, from whichever backend holds them.

The audio and download routes (`portal.api`) answer with `serve_recording`. The file is
asked of `storage.files.RecordingFiles.open_audio`:
- a **local file** (the local folder, or a recording still waiting for its upload) is
  served by aiohttp's `FileResponse` (ranges, 416, HEAD);
- an **object** in the object store is streamed: the client's `Range` (checked and put
  in its plain form first) goes to GetObject, the store's answer (200 or 206 with its
  `Content-Range`) is passed on, and the body is written chunk by chunk as it comes,
  never read whole first. A range outside the object is a 416 with `bytes */size`.

A purged recording is 410, a missing file 404; a store that is down is a
`StorageUnavailable` (503 at the edge). The answer never names a path or the bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from portal.context import ApiError, PortalContext
from storage.errors import NotFound
from storage.models import Recording
from storage.objects import ObjectStream, RangeNotSatisfiable

__all__ = ["RecordingSource", "open_recording", "plain_range", "serve_recording"]

log = logging.getLogger("callrec.portal")


def plain_range(request: web.Request) -> str | None:
    """The request's single byte range as "bytes=A-B", "bytes=A-" or "bytes=-N"; None
    without one; ValueError for one that cannot be served (malformed, several)."""
    if "Range" not in request.headers:
        return None
    wanted = request.http_range  # ValueError when malformed
    start, stop = wanted.start, wanted.stop
    if start is None and stop is None:
        return None
    if start is None:
        raise ValueError("a range needs a start")
    if start < 0:
        return f"bytes={start}"  # the last -start bytes
    if stop is None:
        return f"bytes={start}-"
    return f"bytes={start}-{stop - 1}"


@dataclass
class RecordingSource:
    """Where a recording's bytes come from for one request: a local file, an object
    being streamed, or nothing to serve but a 416 (`unsatisfiable`)."""

    recording: Recording
    file: Path | None = None
    stream: ObjectStream | None = None
    unsatisfiable: bool = False

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


async def open_recording(
    request: web.Request, context: PortalContext, recording: Recording
) -> RecordingSource:
    """Find the recording's bytes for this request (the range it asks for). ApiError
    410 if purged, 404 if it has no file."""
    if recording.status == "purged" or recording.purged_at is not None:
        raise ApiError(410, f"recording {recording.id} was purged after its retention")
    try:
        byte_range = plain_range(request)
        valid = True
    except ValueError:
        byte_range, valid = None, False
    try:
        found = await context.services.files.open_audio(recording.path, byte_range)
    except NotFound:
        raise ApiError(404, f"recording {recording.id} has no file") from None
    except RangeNotSatisfiable:
        return RecordingSource(recording, unsatisfiable=True)
    if not isinstance(found, ObjectStream):
        return RecordingSource(recording, file=found)  # FileResponse answers bad ranges
    if not valid:
        found.close()
        return RecordingSource(recording, unsatisfiable=True)
    return RecordingSource(recording, stream=found)


async def serve_recording(
    request: web.Request, source: RecordingSource, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Answer with the recording's bytes (whole or the range asked for)."""
    if source.file is not None:
        return web.FileResponse(source.file, headers=dict(headers))
    if source.stream is None:
        return _unsatisfiable(source.recording, headers)
    return await _stream(request, source.stream, headers)


def _unsatisfiable(recording: Recording, headers: Mapping[str, str]) -> web.Response:
    answer = web.Response(status=416, headers=dict(headers))
    if recording.bytes is not None:
        answer.headers["Content-Range"] = f"bytes */{recording.bytes}"
    return answer


async def _stream(
    request: web.Request, source: ObjectStream, headers: Mapping[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(status=source.status, headers=dict(headers))
    response.headers["Accept-Ranges"] = "bytes"
    response.content_length = source.length
    if source.content_range is not None:
        response.headers["Content-Range"] = source.content_range
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in source.chunks():
                await response.write(chunk)
    finally:
        source.close()
    await response.write_eof()
    return response
