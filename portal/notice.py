"""An organisation's own notice in the portal: reading the upload, checking and
converting it, keeping it and making it the announcement callers hear.

The upload is read from the multipart stream in chunks and refused past
`MAX_NOTICE_BYTES` (the portal's general body limit is smaller and does not apply to a
streamed part). `media.notice_upload` checks and converts it (in a worker thread: the
resampling is numpy work), `storage.notices.NoticeFiles` keeps the file, and the
organisation's settings then say "uploaded" with the record of the file
(`NOTICE_SETTING`): from the next call on (the recording manager re-reads settings every
2 s) callers hear exactly the converted file, and the settings page plays the same file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from callrec.policy import ANNOUNCEMENT_UPLOADED, InvalidChoice, SettingKey
from callrec.services.presentation import N_, Presentation, Text
from media.notice_upload import MAX_NOTICE_BYTES, NoticeRejected, convert_notice
from portal.auth import Identity
from portal.context import PortalContext
from storage.models import OrgScope
from storage.notices import NOTICE_SETTING, NoticeFiles, UploadedNotice, shown_name

__all__ = [
    "NOTICE_FIELD",
    "NoticeForm",
    "check_uploaded_choice",
    "current_notice",
    "notice_file",
    "read_notice_form",
    "rejection_text",
    "save_notice",
]

NOTICE_FIELD = "notice"
_CHUNK = 64 * 1024
_SMALL_FIELD = 1024  # the CSRF token

# The portal's sentence for each rule a notice can break (`NoticeRejected.reason`).
_REJECTIONS: dict[str, Text] = {
    "too-large": N_("The file is larger than {limit} MB."),
    "not-wav": N_("The file is not a WAV file. Save the notice as WAV (PCM, A-law or µ-law)."),
    "encoding": N_("The WAV file holds {encoding} audio. Save it as PCM, A-law or µ-law."),
    "unreadable": N_("The WAV file is damaged or incomplete."),
    "empty": N_("The file holds no audio."),
    "too-long": N_("The notice lasts {seconds} seconds; at most {limit} seconds is allowed."),
    "silent": N_("The notice is silent."),
    "missing": N_("Choose a WAV file to upload."),
}


@dataclass(frozen=True)
class NoticeForm:
    """The upload form as posted: its CSRF token, the file's name and bytes."""

    csrf_token: str | None
    filename: str
    data: bytes


async def _read_bounded(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or None once it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_notice_form(request: web.Request) -> NoticeForm:
    """The posted upload form (multipart/form-data); raises NoticeRejected for a file
    over MAX_NOTICE_BYTES or no file, ValueError for a body that is no such form."""
    if not request.content_type.startswith("multipart/"):
        raise ValueError(f"expected multipart/form-data, got {request.content_type}")
    reader = await request.multipart()
    token: str | None = None
    filename = ""
    data: bytes | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart is nothing this form sends
        if part.name == "csrf_token":
            raw = await _read_bounded(part, _SMALL_FIELD)
            token = raw.decode("utf-8", "replace") if raw is not None else None
        elif part.name == NOTICE_FIELD:
            filename = part.filename or ""
            data = await _read_bounded(part, MAX_NOTICE_BYTES)
            if data is None:
                raise NoticeRejected(
                    "too-large",
                    f"the file is larger than {MAX_NOTICE_BYTES // (1024 * 1024)} MB",
                )
        else:
            await part.release()
    if not data:
        raise NoticeRejected("missing", "no file was uploaded")
    return NoticeForm(token, filename, data)


def rejection_text(error: NoticeRejected, presentation: Presentation) -> str:
    """What the settings page says about a refused notice, in the reader's language."""
    template = _REJECTIONS.get(error.reason)
    if template is None:
        return str(error)
    values: dict[str, object] = {"limit": MAX_NOTICE_BYTES // (1024 * 1024)}
    for name, value in error.values.items():
        values[name] = presentation.number(value, 1) if isinstance(value, float) else value
    return presentation.gettext(template.msgid).format(**values)


async def current_notice(context: PortalContext, org: OrgScope) -> UploadedNotice | None:
    """`org`'s uploaded notice, if it has one and its file is there."""
    stored = await context.store.get_org_setting(org, NOTICE_SETTING)
    notice = UploadedNotice.from_setting(stored)
    if notice is None or notice_file(context, org, notice) is None:
        return None
    return notice


async def check_uploaded_choice(
    context: PortalContext, org: OrgScope, changes: Mapping[str, str]
) -> None:
    """Refuse the announcement "uploaded" (InvalidChoice) while `org` has no notice."""
    chosen = changes.get(SettingKey.ANNOUNCEMENT.value) == ANNOUNCEMENT_UPLOADED
    if chosen and await current_notice(context, org) is None:
        raise InvalidChoice(SettingKey.ANNOUNCEMENT, "upload a notice first; there is none to play")


def notice_file(context: PortalContext, org: OrgScope, notice: UploadedNotice) -> str | None:
    """The absolute path of `notice`'s file, None if it is missing."""
    path = NoticeFiles(context.services.storage_dir).existing(org.id, notice.file)
    return str(path) if path is not None else None


async def save_notice(
    context: PortalContext,
    request: web.Request,
    identity: Identity,
    org: OrgScope,
    form: NoticeForm,
) -> UploadedNotice:
    """Check, convert and keep an uploaded notice, make it `org`'s announcement and audit
    it; raises NoticeRejected saying why a file is refused."""
    converted = await asyncio.to_thread(convert_notice, form.data)
    files = NoticeFiles(context.services.storage_dir)
    file = await asyncio.to_thread(files.save, org.id, converted.wav)
    notice = UploadedNotice(
        file=file,
        name=shown_name(form.filename),
        seconds=round(converted.seconds, 2),
        uploaded_at=context.now(),
        uploaded_by=identity.actor,
    )
    await context.store.set_org_settings(
        org,
        {NOTICE_SETTING: notice.to_setting(), SettingKey.ANNOUNCEMENT.value: ANNOUNCEMENT_UPLOADED},
    )
    await context.audit(
        request,
        identity,
        "notice.upload",
        "settings",
        f"{notice.name}: {notice.seconds:.1f} s, was {converted.source_encoding}"
        f" {converted.source_rate} Hz x{converted.source_channels}; file {file}",
    )
    return notice
