"""The store's errors: one type per thing a caller can do about it.

Every failure of `storage` is a `StorageError`, and every raise in `storage` uses the
subclass that says what happened, so callers decide on the type and never on the text:

- `InvalidValue(field, message)`: a value given to the store is not acceptable; `field`
  names it (an HTTP edge answers 422 naming the field).
- `NotFound`: the user, call, recording, export or admin named does not exist (404).
- `Conflict`: the change contradicts what is stored: a duplicate, a username already
  taken, a constraint (409).
- `StorageUnavailable`: the database cannot be used right now: disk full, locked by
  another process, unreadable, read-only, an I/O error (503). Its message is written for
  a client and never contains a server path; the details go to the server log.
  `EmptyDatabase`, one of them, is a 0-byte database file refused at open.

The message (`str(error)`, also `.message`) is one line a person can act on.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "Conflict",
    "EmptyDatabase",
    "InvalidValue",
    "NotFound",
    "StorageError",
    "StorageUnavailable",
]


class StorageError(Exception):
    """A store operation failed; `message` is one line a person can act on. `field`
    names the value at fault when there is one."""

    field: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidValue(StorageError, ValueError):
    """A value given to the store is not acceptable; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotFound(StorageError):
    """What the operation names does not exist (an id, an extension, an admin)."""


class Conflict(StorageError):
    """The change contradicts what is stored (a duplicate, a taken username); `field`
    names the value that clashes when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StorageUnavailable(StorageError):
    """The database cannot be used now (disk full, locked, unreadable, I/O error). The
    message never contains a server path: it may reach a client as it is."""


class EmptyDatabase(StorageUnavailable):
    """The database file exists but holds nothing (0 bytes, no write-ahead log). Opening
    it would start an empty store beside the recordings of the lost one, so it is
    refused unless the caller asks for a new database (`create_empty`). `path` is for
    the operator (the CLI); the message names none."""

    def __init__(self, path: Path) -> None:
        super().__init__("the database file is empty")
        self.path = path
