"""Finding calls by a party's name or by part of a number: the search text, its index
and the SQL condition every page of calls (and of recordings) uses.

The index is `calls_search` (migration 7 in `storage.connection`): an FTS5 table with
the trigram tokenizer over the calls' own copies of the parties (caller and callee
extension or number, and name), kept in step with `calls` by triggers. A trigram index
answers "contains" for three or more characters, case-insensitively, without reading
every row. One or two characters cannot use it; they fall back to a LIKE over the
organisation's calls (the `calls_org_started` index narrows that to one organisation).

The text a person typed is always a bound parameter, never SQL: inside MATCH it is one
double-quoted phrase (a `"` doubled), so FTS5's operators (AND, OR, NOT, NEAR, `*`,
`^`, column filters) are plain characters; in the LIKE fallback `%`, `_` and the escape
character are escaped. "50%" finds "50%", not "50" followed by anything.

A text made of digits and the separators people write in numbers (`+31 6-1234 5678`,
`(020) 555`) is a number: the separators go, the digits (and a leading `+`) stay, so
"06 1234" finds 0612345678. The index's organisation is not in the index: the caller
adds `c.org_id = ?` (every page already does), so a match in another organisation is
never returned.
"""

from __future__ import annotations

import re
from typing import Any, Final

from storage.connection import SQLITE

__all__ = [
    "MAX_SEARCH_LENGTH",
    "SEARCH_COLUMNS",
    "escape_like",
    "normalise_search",
    "search_condition",
]

MAX_SEARCH_LENGTH: Final = 100
# The calls' columns the index holds (caller and callee: number or extension, name).
SEARCH_COLUMNS: Final = ("caller_ext", "caller_name", "callee_ext", "callee_name")
_TRIGRAM: Final = 3
_LIKE_ESCAPE: Final = "\\"
_NUMBER: Final = re.compile(r"\+?\(?[0-9][0-9 ()./-]*")
_NUMBER_SEPARATORS: Final = re.compile(r"[ ()./-]")
_SPACES: Final = re.compile(r"\s+")


def normalise_search(text: str) -> str:
    """The text to look for: spaces trimmed and collapsed, and a number's separators
    removed (see the module doc). May be empty (then there is nothing to search)."""
    cleaned = _SPACES.sub(" ", text).strip()
    if _NUMBER.fullmatch(cleaned):
        return _NUMBER_SEPARATORS.sub("", cleaned)
    return cleaned


def escape_like(text: str) -> str:
    """`text` for a LIKE ... ESCAPE '\\' pattern: its `%`, `_` and `\\` taken literally."""
    return (
        text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )


def search_condition(alias: str, text: str, dialect: str = SQLITE) -> tuple[str, list[Any]]:
    """SQL (and its parameters) for "call `alias` has `text` in a party's name or
    number". `text` is the normalised, non-empty search text. On SQLite three or more
    characters use the FTS5 trigram index; PostgreSQL has no MATCH: there the LIKE form
    always serves (its trigram indexes, migration 8, back it)."""
    if dialect == SQLITE and len(text) >= _TRIGRAM:
        phrase = '"' + text.replace('"', '""') + '"'
        return (
            f"{alias}.id IN (SELECT rowid FROM calls_search WHERE calls_search MATCH ?)",
            [phrase],
        )
    pattern = f"%{escape_like(text)}%"
    tests = " OR ".join(f"{alias}.{column} LIKE ? ESCAPE '\\'" for column in SEARCH_COLUMNS)
    return f"({tests})", [pattern] * len(SEARCH_COLUMNS)
