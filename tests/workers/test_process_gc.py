"""A media worker keeps the cyclic garbage collector from stalling its relay: what its
imports made is frozen, and young collections wait for many more allocations."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from callrec.workers.process import GC_YOUNG_THRESHOLD, _quiet_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    _quiet_garbage_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)
