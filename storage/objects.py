"""Recording files in S3-compatible object storage, through aiobotocore.

`S3Objects` is the object-store backend of `storage.files.RecordingFiles` (the one owner
of recording files; nothing else talks to the bucket). A recording's object key is the
configured prefix plus the path its row stores (`recordings/YYYY/MM/DD/<uuid>.wav`), so
a row names its file the same way whichever backend holds it.

The rules:
- **Upload** (`put_file`): one PUT with `x-amz-checksum-sha256` set to the SHA-256 the
  writer computed when it sealed the file, so the store itself refuses bytes that are
  not the sealed ones (`BadDigest`); the hex digest also goes in the object's metadata
  (`x-amz-meta-sha256`). The upload counts only once **verified**: a HEAD with checksum
  mode on must give back the same size and SHA-256, or, from a store that keeps no
  checksum, a full read-back must hash to it. Only then may the caller delete the local
  copy.
- **Reads** stream: `get` passes the client's byte range to GetObject and hands back
  the body to be read chunk by chunk, never the whole object first. `open_sync` gives
  a blocking reader over the same stream for code running in a worker thread (the
  month's ZIP).
- **Deletion** (`delete`) is the retention purge's: a HEAD (was it there?) then a
  DeleteObject. Object lock is not used: a bucket with a default retention refuses the
  delete until its lock runs out, and the purge reports that recording as failed.
- **Errors** are typed: an unreachable store, a timeout or a 5xx is
  `ObjectStoreUnavailable` (a `StorageUnavailable`: retry later); a missing object is
  `NotFound`; bytes that do not match their SHA-256 are `ChecksumMismatch`; a range
  outside the object is `RangeNotSatisfiable`. No message names the endpoint's
  credentials.

Endpoint, region and credentials come from the caller (`[storage] s3_*` keys) and, where
unset, from the environment as botocore reads it (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`). The client is created on
first use on the running event loop and closed by `close()`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.errors import InvalidValue, NotFound, StorageError, StorageUnavailable

__all__ = [
    "ChecksumMismatch",
    "ObjectInfo",
    "ObjectStoreUnavailable",
    "ObjectStream",
    "RangeNotSatisfiable",
    "S3Objects",
    "S3Settings",
    "file_digest",
]

log = logging.getLogger("callrec.objects")

CHUNK_BYTES = 256 * 1024
# How long the export's worker thread waits for one chunk from the event loop.
SYNC_READ_TIMEOUT_S = 120.0
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class ObjectStoreUnavailable(StorageUnavailable):
    """The object store cannot be reached or failed (timeout, connection refused, 5xx):
    try again later."""


class ChecksumMismatch(StorageError):
    """The bytes in (or sent to) the object store are not the ones their SHA-256 names."""


class RangeNotSatisfiable(StorageError):
    """The byte range asked for lies outside the object; `size` if known."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class S3Settings:
    """Where recordings go: `s3://bucket/prefix`, and how to reach the store (None:
    botocore's environment and defaults)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> S3Settings:
        """From `s3://bucket[/prefix]`; InvalidValue("objects") if it is not one."""
        match = re.fullmatch(r"s3://([^/]+)(?:/(.*))?", url.strip())
        if match is None or not _BUCKET.fullmatch(match.group(1)):
            raise InvalidValue("objects", f"expected 's3://BUCKET[/PREFIX]', got {url!r}")
        prefix = (match.group(2) or "").strip("/")
        if ".." in prefix.split("/"):
            raise InvalidValue("objects", f"the prefix may not climb with '..': {url!r}")
        return cls(
            bucket=match.group(1),
            prefix=f"{prefix}/" if prefix else "",
            endpoint=endpoint,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, relative: str) -> str:
        return self.prefix + relative


@dataclass(frozen=True)
class ObjectInfo:
    """An object's size and, when the store keeps one, its SHA-256 (hex)."""

    size: int
    sha256: str | None


@dataclass
class ObjectStream:
    """A GetObject answer being streamed: `status` 200 (whole) or 206 (`content_range`
    set, as the store gave it), `length` the bytes that follow, `size` the object's."""

    status: int
    length: int
    size: int | None
    content_range: str | None
    _body: Any

    async def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body.iter_chunks(chunk_bytes):
                yield chunk
        except Exception as exc:
            raise _translate(exc, "read") from exc

    async def read(self, amount: int) -> bytes:
        try:
            data: bytes = await self._body.read(amount)
        except Exception as exc:
            raise _translate(exc, "read") from exc
        return data

    def close(self) -> None:
        self._body.close()


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file (blocking)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _hex(b64_digest: str | None) -> str | None:
    if not b64_digest or "-" in b64_digest:  # a composite (multipart) checksum
        return None
    try:
        return base64.b64decode(b64_digest, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _error_code(exc: BaseException) -> tuple[str, int]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return str(error.get("Code", "")), int(status)


def _translate(exc: BaseException, doing: str) -> StorageError:
    """A botocore/aiohttp failure as a typed storage error."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return NotFound(f"object store: {doing}: no such object")
        if code == "BadDigest" or code == "XAmzContentChecksumMismatch":
            return ChecksumMismatch(f"object store: {doing}: the bytes do not match their checksum")
        if code == "InvalidRange" or status == 416:
            return RangeNotSatisfiable(f"object store: {doing}: range not satisfiable")
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return ObjectStoreUnavailable(f"object store: {doing}: {code or status}")
        return StorageError(f"object store: {doing} refused: {code or status}")
    import aiohttp

    # The exception's own text names the endpoint, bucket and key: the log has it, the
    # message (which may reach a client) only its type.
    log.debug("object store: %s failed: %r", doing, exc)
    if isinstance(exc, BotoCoreError | OSError | asyncio.TimeoutError | aiohttp.ClientError):
        return ObjectStoreUnavailable(f"object store unreachable ({doing}): {type(exc).__name__}")
    return StorageError(f"object store: {doing} failed: {type(exc).__name__}")


class S3Objects:
    """Recordings in one bucket (under one prefix) of an S3-compatible store."""

    remote = True

    def __init__(
        self,
        settings: S3Settings,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._stack: contextlib.AsyncExitStack | None = None
        self._client_obj: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:  # never the credentials
        return f"S3Objects({self.settings.url!r}, endpoint={self.settings.endpoint!r})"

    async def _client(self) -> Any:
        if self._client_obj is not None:
            return self._client_obj
        async with self._opening:
            if self._client_obj is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                settings = self.settings
                config = AioConfig(
                    s3={"addressing_style": "path"},
                    # Our own queue retries an upload; one call fails fast.
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=self.read_timeout_s,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                stack = contextlib.AsyncExitStack()
                region = settings.region or os.environ.get("AWS_REGION") or "us-east-1"
                self._client_obj = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=settings.endpoint,
                        region_name=region,
                        aws_access_key_id=settings.access_key,
                        aws_secret_access_key=settings.secret_key,
                        config=config,
                    )
                )
                self._stack = stack
                self._loop = asyncio.get_running_loop()
        return self._client_obj

    async def close(self) -> None:
        stack, self._stack, self._client_obj = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def check(self) -> None:
        """Raise unless the bucket answers (for health checks)."""
        client = await self._client()
        try:
            await client.head_bucket(Bucket=self.settings.bucket)
        except Exception as exc:
            raise _translate(exc, "check the bucket") from exc

    # -- upload -------------------------------------------------------------------------
    async def put_file(self, relative: str, path: Path, sha256: str | None) -> ObjectInfo:
        """Upload the file at `path` as `relative` with its SHA-256 (computed here if
        None) and verify it; the verified info. ChecksumMismatch if the file is not the
        `sha256` given (the store refused it) or the stored object differs afterwards."""
        if sha256 is None:
            digest, size = await asyncio.to_thread(file_digest, path)
        else:
            digest, size = sha256, (await asyncio.to_thread(path.stat)).st_size
        client = await self._client()
        key = self.settings.key(relative)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            await client.put_object(
                Bucket=self.settings.bucket,
                Key=key,
                Body=handle,
                ContentLength=size,
                ChecksumSHA256=_b64(digest),
                Metadata={"sha256": digest},
                ContentType=_content_type(relative),
            )
        except Exception as exc:
            raise _translate(exc, "upload") from exc
        finally:
            await asyncio.to_thread(handle.close)
        return await self.verify(relative, digest, size)

    async def verify(self, relative: str, sha256: str, size: int) -> ObjectInfo:
        """The object `relative` holds exactly `size` bytes hashing to `sha256`: checked
        by the store's own checksum when it keeps one, else by reading it back."""
        info = await self.head(relative)
        if info is None:
            raise NotFound(f"object store: {relative} is not there after its upload")
        if info.size != size:
            raise ChecksumMismatch(
                f"object store: {relative} holds {info.size} bytes, the file {size}"
            )
        stored = info.sha256
        if stored is None:
            stored = await self._read_back_digest(relative)
        if stored != sha256:
            raise ChecksumMismatch(f"object store: {relative}: SHA-256 differs after upload")
        return ObjectInfo(size, stored)

    async def _read_back_digest(self, relative: str) -> str:
        stream = await self.get(relative, None)
        digest = hashlib.sha256()
        try:
            async for chunk in stream.chunks():
                digest.update(chunk)
        finally:
            stream.close()
        return digest.hexdigest()

    # -- reads --------------------------------------------------------------------------
    async def head(self, relative: str) -> ObjectInfo | None:
        """The object's size and SHA-256, None if there is no such object."""
        client = await self._client()
        try:
            answer = await client.head_object(
                Bucket=self.settings.bucket,
                Key=self.settings.key(relative),
                ChecksumMode="ENABLED",
            )
        except Exception as exc:
            error = _translate(exc, "look up")
            if isinstance(error, NotFound):
                return None
            raise error from exc
        return ObjectInfo(int(answer["ContentLength"]), _hex(answer.get("ChecksumSHA256")))

    async def get(self, relative: str, byte_range: str | None) -> ObjectStream:
        """Start streaming the object (the part `byte_range`, an HTTP Range value such
        as "bytes=100-199" or "bytes=-50", names). NotFound, RangeNotSatisfiable."""
        client = await self._client()
        arguments: dict[str, Any] = {
            "Bucket": self.settings.bucket,
            "Key": self.settings.key(relative),
        }
        if byte_range:
            arguments["Range"] = byte_range
        try:
            answer = await client.get_object(**arguments)
        except Exception as exc:
            raise _translate(exc, "read") from exc
        content_range = answer.get("ContentRange")
        size: int | None = None
        if content_range:
            total = content_range.rpartition("/")[2]
            size = int(total) if total.isdigit() else None
        else:
            size = int(answer["ContentLength"])
        status = int(answer["ResponseMetadata"]["HTTPStatusCode"])
        return ObjectStream(
            status=206 if status == 206 else 200,
            length=int(answer["ContentLength"]),
            size=size,
            content_range=content_range if status == 206 else None,
            _body=answer["Body"],
        )

    def open_sync(self, relative: str) -> io.BufferedReader:
        """A blocking reader of the whole object, for a worker thread (never the event
        loop's own thread, which it waits on). FileNotFoundError if there is none."""
        loop = self._loop
        if loop is None:
            # The client is created on the loop; a thread cannot create it.
            raise ObjectStoreUnavailable("object store: no client yet (nothing read on the loop)")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None  # a worker thread, as it should be
        if running is loop:
            raise RuntimeError("open_sync would block the event loop it waits on")
        future = asyncio.run_coroutine_threadsafe(self.get(relative, None), loop)
        try:
            stream = future.result(SYNC_READ_TIMEOUT_S)
        except NotFound:
            raise FileNotFoundError(relative) from None
        return io.BufferedReader(_ThreadReader(stream, loop), CHUNK_BYTES)

    async def ready(self) -> None:
        """Create the client on this loop now (so `open_sync` works from threads)."""
        await self._client()

    # -- deletion -----------------------------------------------------------------------
    async def delete(self, relative: str) -> bool:
        """Delete the object: True if it was there, False if it was already gone."""
        existed = await self.head(relative) is not None
        client = await self._client()
        try:
            await client.delete_object(Bucket=self.settings.bucket, Key=self.settings.key(relative))
        except Exception as exc:
            raise _translate(exc, "delete") from exc
        return existed


class _ThreadReader(io.RawIOBase):
    """A raw reader over an `ObjectStream`, each read run on the stream's event loop."""

    def __init__(self, stream: ObjectStream, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        future = asyncio.run_coroutine_threadsafe(self.stream.read(len(view)), self.loop)
        try:
            data = future.result(SYNC_READ_TIMEOUT_S)
        except StorageError as exc:
            raise OSError(str(exc)) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.loop.call_soon_threadsafe(self.stream.close)
        super().close()


def _content_type(relative: str) -> str:
    return "audio/flac" if relative.endswith(".flac") else "audio/wav"
