"""The portal's view of the store: scoped pages of calls and recordings, logins, tokens.

A thin adapter over `Store`'s public methods (the queries themselves live in the
concept modules `calls`, `recordings`, `users`, `accounts` and `audit`), so the portal's
handlers ask one object for what one person may see.
"""

from __future__ import annotations

from storage.accounts import token_digest
from storage.calls import CallQuery
from storage.connection import MAX_ROW_ID
from storage.database import Store
from storage.models import ApiToken, CallRow, RecordingListing, User

__all__ = ["MAX_ROW_ID", "ApiToken", "CallQuery", "CallRow", "PortalRepository", "token_digest"]


class PortalRepository:
    """Portal queries on one `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def calls_page(
        self, query: CallQuery, limit: int, offset: int
    ) -> tuple[list[CallRow], int]:
        """One page of calls newest first, each with its recordings, and the total."""
        return await self.store.calls_page(query, limit, offset)

    async def get_call(self, call_id: int, scope_ext: str | None) -> CallRow | None:
        return await self.store.get_visible_call(call_id, scope_ext)

    async def get_recording(
        self, recording_id: int, scope_ext: str | None
    ) -> RecordingListing | None:
        """A recording with its call, None if unknown or not visible to `scope_ext`."""
        return await self.store.get_visible_recording(recording_id, scope_ext)

    async def recordings_page(
        self,
        *,
        since: float | None,
        until: float | None,
        extension: str | None,
        scope_ext: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[RecordingListing], int]:
        return await self.store.recordings_page(
            since=since,
            until=until,
            extension=extension,
            scope_ext=scope_ext,
            limit=limit,
            offset=offset,
        )

    async def set_portal_password(self, extension: str, password: str) -> None:
        await self.store.set_portal_password(extension, password)

    async def verify_user_password(self, extension: str, password: str) -> User | None:
        """The user if `password` is their portal password, else None."""
        return await self.store.verify_user_password(extension, password)

    async def create_api_token(self, name: str, actor: str, role: str = "admin") -> tuple[int, str]:
        """A new bearer token (returned once, stored as its SHA-256) and its id."""
        return await self.store.create_api_token(name, actor, role)

    async def verify_api_token(self, token: str) -> ApiToken | None:
        return await self.store.verify_api_token(token)

    async def list_api_tokens(self) -> list[ApiToken]:
        return await self.store.list_api_tokens()

    async def revoke_api_token(self, token_id: int) -> bool:
        return await self.store.revoke_api_token(token_id)

    async def audit_total(self) -> int:
        return await self.store.audit_total()
