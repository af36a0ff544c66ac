"""The portal's view of the store: scoped pages of calls and recordings, logins, tokens.

A thin adapter over `Store`'s public methods (the queries themselves live in the
concept modules `calls`, `recordings`, `users`, `accounts` and `audit`), so the portal's
handlers ask one object for what one person may see. Every method takes the asker's
organisation (`OrgScope`) first: there is no way to ask it for another organisation's
rows without naming that organisation.
"""

from __future__ import annotations

from storage.accounts import token_digest
from storage.calls import CallQuery
from storage.connection import MAX_ROW_ID
from storage.database import Store
from storage.models import ApiToken, CallRow, OrgScope, RecordingListing, User

__all__ = [
    "MAX_ROW_ID",
    "ApiToken",
    "CallQuery",
    "CallRow",
    "OrgScope",
    "PortalRepository",
    "token_digest",
]


class PortalRepository:
    """Portal queries on one `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def calls_page(
        self, org: OrgScope, query: CallQuery, limit: int, offset: int
    ) -> tuple[list[CallRow], int]:
        """One page of calls newest first, each with its recordings, and the total."""
        return await self.store.calls_page(org, query, limit, offset)

    async def get_call(self, org: OrgScope, call_id: int, scope_ext: str | None) -> CallRow | None:
        return await self.store.get_visible_call(org, call_id, scope_ext)

    async def get_recording(
        self, org: OrgScope, recording_id: int, scope_ext: str | None
    ) -> RecordingListing | None:
        """A recording with its call, None if unknown or not visible to `scope_ext`."""
        return await self.store.get_visible_recording(org, recording_id, scope_ext)

    async def recordings_page(
        self,
        org: OrgScope,
        *,
        since: float | None,
        until: float | None,
        extension: str | None,
        scope_ext: str | None,
        limit: int,
        offset: int,
        search: str | None = None,
    ) -> tuple[list[RecordingListing], int]:
        return await self.store.recordings_page(
            org,
            since=since,
            until=until,
            extension=extension,
            scope_ext=scope_ext,
            limit=limit,
            offset=offset,
            search=search,
        )

    async def set_portal_password(self, org: OrgScope, extension: str, password: str) -> None:
        await self.store.set_portal_password(org, extension, password)

    async def verify_user_password(
        self, org: OrgScope, extension: str, password: str
    ) -> User | None:
        """The user if `password` is their portal password, else None."""
        return await self.store.verify_user_password(org, extension, password)

    async def create_api_token(
        self, org: OrgScope | None, name: str, actor: str, role: str
    ) -> tuple[int, str]:
        """A new bearer token (returned once, stored as its SHA-256) and its id."""
        return await self.store.create_api_token(org, name, actor, role)

    async def verify_api_token(self, token: str) -> ApiToken | None:
        return await self.store.verify_api_token(token)

    async def list_api_tokens(self, org: OrgScope | None) -> list[ApiToken]:
        return await self.store.list_api_tokens(org)

    async def revoke_api_token(self, org: OrgScope | None, token_id: int) -> bool:
        return await self.store.revoke_api_token(org, token_id)

    async def audit_total(self, org: OrgScope | None) -> int:
        return await self.store.audit_total(org)
