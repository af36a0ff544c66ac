"""The message catalogues are complete and their compiled .mo files current.

The .mo files are committed (not built at install): `scripts/setup.sh` installs callrec
editable (`pip install -e`), which runs no build step, and the portal must speak Dutch
straight from a checkout. These tests are what keeps the committed files honest: a
message marked in a template or in Python code without a Dutch translation, a .po edited
without recompiling, or a translation that drops or renames a `{field}` fails here.
Fix with `scripts/catalogues.sh`.
"""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from callrec.policy import DEFAULT_LANGUAGE, LANGUAGES
from portal.services import CATALOGUES

ROOT = Path(__file__).resolve().parents[2]
TRANSLATED = [language for language in LANGUAGES if language != DEFAULT_LANGUAGE]
_FIELDS = re.compile(r"\{(\w+)\}|%\((\w+)\)s")


def _po(language: str) -> Catalog:
    with (CATALOGUES / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def _extracted() -> set[str]:
    """Every msgid marked in the code and templates babel.cfg names."""
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    found: set[str] = set()
    for _, _, message, _, _ in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=keywords
    ):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def _fields(text: str) -> set[str]:
    return {a or b for a, b in _FIELDS.findall(text)}


def test_every_language_but_english_has_a_catalogue() -> None:
    assert TRANSLATED == ["nl"]
    for language in TRANSLATED:
        assert (CATALOGUES / language / "LC_MESSAGES" / "messages.po").is_file()


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_marked_message_is_translated(language: str) -> None:
    catalogue = _po(language)
    extracted = _extracted()
    assert len(extracted) > 150  # the extraction itself works (templates and Python)
    assert "Recording settings" in extracted and "When (%(zone)s)" in extracted
    translated = {
        (message.id[0] if isinstance(message.id, tuple) else message.id): message
        for message in catalogue
        if message.id
    }
    missing = sorted(extracted - set(translated))
    assert missing == [], f"not in the {language} catalogue; run scripts/catalogues.sh"
    untranslated = sorted(
        key
        for key, message in translated.items()
        if message.fuzzy
        or not (all(message.string) if isinstance(message.string, tuple) else message.string)
    )
    assert untranslated == []


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_every_field(language: str) -> None:
    for message in _po(language):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        expected = set().union(*(_fields(text) for text in ids))
        for string in strings:
            assert _fields(string) == expected, (message.id, string)


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_committed_mo_is_what_the_po_compiles_to(language: str) -> None:
    folder = CATALOGUES / language / "LC_MESSAGES"
    with (folder / "messages.mo").open("rb") as handle:
        committed = read_mo(handle)
    compiled_bytes = BytesIO()
    write_mo(compiled_bytes, _po(language))
    compiled_bytes.seek(0)
    compiled = read_mo(compiled_bytes)

    def pairs(catalogue: Catalog) -> dict[object, object]:
        def plain(value: object) -> object:
            return tuple(value) if isinstance(value, list | tuple) else value

        return {plain(message.id): plain(message.string) for message in catalogue if message.id}

    assert pairs(committed) == pairs(compiled), "stale .mo: run scripts/catalogues.sh"
    assert committed.plural_forms == compiled.plural_forms
