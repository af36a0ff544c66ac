"""callrec's storage: the SQLite metadata store and the recording files on disk.

The public surface is what `__all__` names; the concept modules (`connection`, `users`,
`organisations`, `registrations`, `calls`, `recordings`, `exports`, `accounts`, `audit`, `settings`,
`files`) are importable too, but callers outside `storage` should need only these.
"""

from storage.accounts import Passwords, ha1, ha1_pair
from storage.calls import CallQuery
from storage.connection import MIGRATIONS, Database, Session
from storage.database import Store
from storage.errors import (
    Conflict,
    EmptyDatabase,
    InvalidValue,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from storage.files import NewRecording, RecordingFiles
from storage.models import (
    Admin,
    ApiToken,
    AuditEntry,
    CallRecord,
    CallRow,
    Credentials,
    Device,
    Did,
    ExportJob,
    Organisation,
    OrgScope,
    Recording,
    RecordingListing,
    Registration,
    User,
    format_timestamp,
)

__all__ = [
    "MIGRATIONS",
    "Admin",
    "ApiToken",
    "AuditEntry",
    "CallQuery",
    "CallRecord",
    "CallRow",
    "Conflict",
    "Credentials",
    "Database",
    "Device",
    "Did",
    "EmptyDatabase",
    "ExportJob",
    "InvalidValue",
    "NewRecording",
    "NotFound",
    "OrgScope",
    "Organisation",
    "Passwords",
    "Recording",
    "RecordingFiles",
    "RecordingListing",
    "Registration",
    "Session",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "User",
    "format_timestamp",
    "ha1",
    "ha1_pair",
]
