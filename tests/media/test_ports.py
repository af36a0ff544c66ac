from __future__ import annotations

import pytest

from media.ports import PortAllocator
from media.rtp import MediaError


def test_ports_are_even_and_leave_room_for_rtcp() -> None:
    allocator = PortAllocator(10001, 10010)  # odd first: 10002..10008 are the RTP ports
    ports = [allocator.allocate() for _ in range(allocator.capacity)]
    assert sorted(ports) == [10002, 10004, 10006, 10008]
    assert all(port % 2 == 0 and port + 1 <= 10010 for port in ports)
    assert allocator.in_use == 4


def test_exhaustion_raises_media_error_and_release_makes_room() -> None:
    allocator = PortAllocator(20000, 20003)
    first = allocator.allocate()
    second = allocator.allocate()
    assert {first, second} == {20000, 20002}
    with pytest.raises(MediaError, match="no free RTP port"):
        allocator.allocate()
    allocator.release(first)
    assert allocator.in_use == 1
    assert allocator.allocate() == first


def test_released_port_is_not_reused_before_the_others() -> None:
    allocator = PortAllocator(30000, 30009)  # five pairs
    port = allocator.allocate()
    allocator.release(port)
    following = [allocator.allocate() for _ in range(4)]
    assert port not in following
    assert allocator.allocate() == port


def test_double_release_is_refused() -> None:
    allocator = PortAllocator(30000, 30009)
    port = allocator.allocate()
    allocator.release(port)
    with pytest.raises(MediaError, match="not allocated"):
        allocator.release(port)
    with pytest.raises(MediaError):
        allocator.release(12345)
    # A refused release must not have put a duplicate into the pool.
    handed_out = [allocator.allocate() for _ in range(allocator.capacity)]
    assert len(set(handed_out)) == len(handed_out) == 5


@pytest.mark.parametrize(("first", "last"), [(0, 100), (100, 99), (60000, 70000), (4000, 4000)])
def test_bad_ranges_are_rejected(first: int, last: int) -> None:
    with pytest.raises(MediaError):
        PortAllocator(first, last)
