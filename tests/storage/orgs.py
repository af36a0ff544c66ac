"""The organisation tests use: the default one every new store has (id 1)."""

from __future__ import annotations

from storage.models import OrgScope

ORG = OrgScope(1, "default")
