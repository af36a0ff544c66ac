"""What the portal needs from the rest of callrec, injected by whoever starts it.

`PortalServices.from_config(config, store, spawn=...)` wires the defaults: exports through
`callrec.services.export.ExportService` (built in background tasks started by `spawn`,
mailed as a signed link). Settings are
checked by the product rules (`callrec.policy`). Tests may build one by hand.

`defaults` are the config's settings exactly as the file gives them: a WAV file named by
`[recording] announcement` stays that file (shown as such on the settings page), so
saving any setting never puts the shipped notice in its place. `presentations` builds
each page's language and time zone from the portal's catalogues (`CATALOGUES`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from callrec.config import Config
from callrec.policy import RecordingSettings
from callrec.services.export import ExportService, Spawn
from callrec.services.presentation import Presentations
from storage.database import Store
from storage.files import RecordingFiles
from storage.models import ExportJob, OrgScope


class RequestExport(Protocol):
    """Order a month's ZIP of `org` (month "YYYY-MM"); returns the export id. Raises a
    typed StorageError (InvalidValue, Conflict) with a message a person can act on when
    refused. Audits the order."""

    def __call__(
        self,
        org: OrgScope,
        month: str,
        requested_by: str,
        *,
        email: str | None,
        address: str | None,
    ) -> Awaitable[int]: ...


# verify_export_link(org of the person following it, token from the mailed link) -> the
# export and its ZIP file if the link is signed for that organisation, unexpired and its
# export is ready, else None.
VerifyExportLink = Callable[[OrgScope, str], Awaitable[tuple[ExportJob, Path] | None]]

# The compiled message catalogues: <language>/LC_MESSAGES/messages.mo.
CATALOGUES = Path(__file__).resolve().parent / "locale"


@dataclass
class PortalServices:
    """Folders, defaults and optional hooks of the portal."""

    storage_dir: Path
    recordings_dir: Path
    # The recording settings where the store has none (the config file's values).
    defaults: RecordingSettings = field(default_factory=RecordingSettings)
    request_export: RequestExport | None = None
    verify_export_link: VerifyExportLink | None = None
    clock: Callable[[], float] = field(default=time.time)
    presentations: Presentations = field(default_factory=lambda: Presentations(CATALOGUES))
    # The owner of the recording files (with the object store, when there is one);
    # None: the local folder under `storage_dir`.
    recording_files: RecordingFiles | None = None

    @property
    def files(self) -> RecordingFiles:
        """The owner of the recording files (safe paths, local or object store)."""
        if self.recording_files is None:
            self.recording_files = RecordingFiles(self.storage_dir)
        return self.recording_files

    @classmethod
    def from_config(
        cls,
        config: Config,
        store: Store | None = None,
        *,
        spawn: Spawn | None = None,
        files: RecordingFiles | None = None,
    ) -> PortalServices:
        """Defaults from `[storage]`, `[retention]` and `[recording]`; with `store`, the
        check of mailed export links, and with `spawn` too (what starts the background
        builds), ordering exports."""
        services = cls(
            storage_dir=config.storage.dir,
            recordings_dir=config.storage.recordings_dir,
            defaults=config.recording_settings,
            recording_files=files
            if files is not None
            else RecordingFiles.from_config(config.storage),
        )
        if store is not None:
            exports = ExportService(
                store,
                config,
                spawn=spawn,
                clock=services.clock,
                presentations=services.presentations,
                files=services.files,
            )
            services.verify_export_link = exports.verify_link
            if spawn is not None:
                services.request_export = exports.request
        return services
