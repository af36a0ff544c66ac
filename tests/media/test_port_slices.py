"""`split_port_range`: each media worker's slice of the RTP port range."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.ports import PortAllocator, port_pairs, split_port_range
from media.rtp import MediaError


def test_slices_are_contiguous_even_and_as_even_as_can_be() -> None:
    assert split_port_range(20000, 20019, 3) == [(20000, 20007), (20008, 20013), (20014, 20019)]


@given(st.integers(1024, 60000), st.integers(4, 4000), st.integers(1, 16))
def test_slices_cover_the_pairs_of_the_range_once(first: int, span: int, parts: int) -> None:
    first -= first % 2
    last = first + span
    if port_pairs(first, last) < 2 * parts:
        with pytest.raises(MediaError, match="too few"):
            split_port_range(first, last, parts)
        return
    slices = split_port_range(first, last, parts)
    assert len(slices) == parts
    sizes = [PortAllocator(low, high).size for low, high in slices]
    assert sum(sizes) == PortAllocator(first, last).size
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2
    for (_, high), (low, _) in itertools.pairwise(slices):
        assert low == high + 1 and low % 2 == 0
    assert slices[0][0] == first and slices[-1][1] <= last
