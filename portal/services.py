"""What the portal needs from the rest of callrec, injected by whoever starts it.

`PortalServices.from_config(config, store)` wires the defaults: exports through
`callrec.services.export` (ordered in the background, mailed as a signed link), retention checked
by `callrec.services.retention.validate_retention_days`. Tests may build one by hand.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher

from callrec.config import Config
from storage.database import StorageError, Store


class RequestExport(Protocol):
    """Order a month's ZIP (month "YYYY-MM"); returns the export id. Raises ValueError
    (or StorageError) with a message a person can act on when refused. Audits the order."""

    def __call__(
        self, month: str, requested_by: str, *, email: str | None, address: str | None
    ) -> Awaitable[int]: ...


# verify_export_link(token from the mailed link) -> the ZIP file if the link is signed,
# unexpired and its export is ready, else None.
VerifyExportLink = Callable[[str], Awaitable[Path | None]]
# validate_retention_days(days) raises ValueError if days is not an allowed retention.
ValidateRetention = Callable[[int], object]


@dataclass
class PortalServices:
    """Folders, defaults and optional hooks of the portal."""

    storage_dir: Path
    recordings_dir: Path
    default_retention_days: int = 90
    default_feature_code: str = "*1"
    default_announcement: str = "default"
    default_channels: str = "mono"
    request_export: RequestExport | None = None
    verify_export_link: VerifyExportLink | None = None
    validate_retention_days: ValidateRetention | None = None
    clock: Callable[[], float] = field(default=time.time)
    # Hashes users' portal passwords; verification follows the parameters in each hash.
    password_hasher: PasswordHasher = field(default_factory=PasswordHasher)

    @classmethod
    def from_config(cls, config: Config, store: Store | None = None) -> PortalServices:
        """Defaults from `[storage]`, `[retention]` and `[recording]`; with `store`, the
        export hooks of `callrec.services.export` too."""
        announcement = config.recording.announcement
        if announcement not in ("default", "beep", "none"):
            # A custom prompt file plays like the default one as far as the portal cares.
            announcement = "default"
        services = cls(
            storage_dir=config.storage.dir,
            recordings_dir=config.storage.recordings_dir,
            default_retention_days=config.retention.default_days,
            default_feature_code=config.recording.feature_code,
            default_announcement=announcement,
            default_channels=config.recording.channels,
        )
        from callrec.services.retention import validate_retention_days

        services.validate_retention_days = validate_retention_days
        if store is not None:
            services.request_export, services.verify_export_link = export_hooks(config, store)
        return services


def export_hooks(config: Config, store: Store) -> tuple[RequestExport, VerifyExportLink]:
    """`request_export` and `verify_export_link` backed by `callrec.services.export`."""
    from callrec.services import export

    async def request(
        month: str, requested_by: str, *, email: str | None, address: str | None
    ) -> int:
        return await export.request_export(
            store, config, month, requested_by, email, address=address
        )

    async def verify(token: str) -> Path | None:
        secret = await export.portal_secret(store, config)
        try:
            export_id = export.verify_download(secret, token, time.time())
        except StorageError:
            return None
        job = await store.get_export(export_id)
        if job is None:
            return None
        path = export.export_file(config.storage.dir, job)
        return path if path is not None and path.is_file() else None

    return request, verify
