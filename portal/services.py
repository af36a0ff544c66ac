"""What the portal needs from the rest of callrec, injected by whoever starts it.

`b2bua.server.serve` builds a `PortalServices` from the config and wires the hooks it
owns (the export builder, the signed export links); tests build one by hand.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from b2bua.config import Config

# request_export(month "YYYY-MM", actor) -> export id; raises ValueError with a message a
# person can act on when the export is refused.
RequestExport = Callable[[str, str], Awaitable[int]]
# verify_export_link(export id, query parameters) -> the ZIP file if the link is signed
# and unexpired, else None.
VerifyExportLink = Callable[[int, Mapping[str, str]], Awaitable[Path | None]]
# validate_retention_days(days) raises ValueError if days is not an allowed retention.
ValidateRetention = Callable[[int], None]


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

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        request_export: RequestExport | None = None,
        verify_export_link: VerifyExportLink | None = None,
        validate_retention_days: ValidateRetention | None = None,
    ) -> PortalServices:
        """Defaults taken from `[storage]`, `[retention]` and `[recording]`."""
        announcement = config.recording.announcement
        if announcement not in ("default", "beep", "none"):
            # A custom prompt file plays like the default one as far as the portal cares.
            announcement = "default"
        return cls(
            storage_dir=config.storage.dir,
            recordings_dir=config.storage.recordings_dir,
            default_retention_days=config.retention.default_days,
            default_feature_code=config.recording.feature_code,
            default_announcement=announcement,
            default_channels=config.recording.channels,
            request_export=request_export,
            verify_export_link=verify_export_link,
            validate_retention_days=validate_retention_days,
        )
