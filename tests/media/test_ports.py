from __future__ import annotations

import itertools

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


def test_ports_are_handed_out_in_no_predictable_order() -> None:
    allocator = PortAllocator(40000, 40999)  # 500 pairs
    ports = [allocator.allocate() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(port % 2 == 0 and 40000 <= port <= 40998 for port in ports)
    steps = {later - earlier for earlier, later in itertools.pairwise(ports)}
    # A fixed order walks the range in steps of 2; 19 random draws from 500 pairs hardly
    # ever repeat one step 19 times (a false alarm: far below 1e-40).
    assert len(steps) > 1, ports
    assert ports != sorted(ports)
    # Another pool's first ports differ: the order is not fixed per range either.
    other = PortAllocator(40000, 40999)
    assert [other.allocate() for _ in range(20)] != ports


def test_size_and_free_count_return_to_full() -> None:
    allocator = PortAllocator(50000, 50099)  # 50 pairs
    assert (allocator.size, allocator.free, allocator.in_use) == (50, 50, 0)
    ports = [allocator.allocate() for _ in range(50)]
    assert sorted(ports) == list(range(50000, 50099, 2))
    assert (allocator.free, allocator.in_use) == (0, 50)
    with pytest.raises(MediaError, match="no free RTP port"):
        allocator.allocate()
    for port in ports:
        allocator.release(port)
    assert (allocator.size, allocator.free, allocator.in_use) == (50, 50, 0)
    # Every pair comes back exactly once after a full release.
    assert sorted(allocator.allocate() for _ in range(50)) == sorted(ports)


def test_a_released_port_cools_down_behind_half_the_pool() -> None:
    allocator = PortAllocator(51000, 51039)  # 20 pairs: 10 releases before reuse
    for _ in range(50):  # random draws: repeat so that chance alone cannot pass
        port = allocator.allocate()
        allocator.release(port)
        following = [allocator.allocate() for _ in range(10)]
        assert port not in following
        for other in following:
            allocator.release(other)
    assert allocator.free == allocator.size
