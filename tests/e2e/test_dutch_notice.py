"""End-to-end: a Dutch organisation's call is announced with the shipped Dutch legal
notice. A real call (pjsua2 phones through `callrec serve`) from a user of an
organisation whose language is Dutch: what the caller and the trunk's phone hear, and
the recording, correlate with the shipped Dutch notice and not with the English one.
The call's CDR names its caller by user id (migration 12), not only by number."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from media.announce import load_announcement
from testkit.audio import peak_correlation
from testkit.harness import CallrecServer, make_server
from tests.e2e.notice_heard import call_and_hear

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CallrecServer]:
    # The server's own language stays English: the organisation's Dutch must decide.
    srv = make_server(tmp_path / "callrec")
    srv.add_user("202", "Bram Altijd", "pw-202", "--mode", "always")
    srv.cli("orgs", "set", "default", "--language", "nl", "--timezone", "Europe/Amsterdam")
    yield from srv.serving()


def test_a_dutch_organisations_caller_hears_the_dutch_notice(
    server: CallrecServer, tmp_path: Path
) -> None:
    dutch = load_announcement("default", "nl")
    english = load_announcement("default", "en")
    assert dutch is not None and english is not None
    # The two shipped notices are told apart by correlation at all.
    assert peak_correlation(dutch, english) < 0.3

    heard, recorded, call = call_and_hear(server, tmp_path)

    # What a pjsua2 phone heard passed its jitter buffer, which may drop the first
    # frames of a prompt that starts at the answer: a clipped notice still correlates
    # above 0.5 (tests/e2e/test_announcement.py), another notice stays below 0.3.
    for side, audio in heard.items():
        window = audio[: 8000 * 5]
        assert peak_correlation(dutch, window) > 0.5, side
        assert peak_correlation(english, window) < 0.3, side
    assert peak_correlation(dutch, recorded[: 8000 * 5]) > 0.5
    assert peak_correlation(english, recorded[: 8000 * 5]) < 0.3

    # The CDR names Bram (202) as the caller by user id; the trunk's number is nobody.
    database = sqlite3.connect(f"file:{server.data_dir / 'callrec.db'}?mode=ro", uri=True)
    try:
        row = database.execute(
            "SELECT c.caller_user_id, c.callee_user_id, u.extension FROM calls c"
            " JOIN users u ON u.id = c.caller_user_id WHERE c.id = ?",
            (call["id"],),
        ).fetchone()
    finally:
        database.close()
    assert row is not None and (row[1], row[2]) == (None, "202")
