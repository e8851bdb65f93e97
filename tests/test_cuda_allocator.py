"""The caching allocator replay against PyTorch's documented rules (CUDACachingAllocator.cpp)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nncost.analyses.cuda_allocator import CachingAllocator, replay, round_request, segment_size

MiB = 1 << 20


def test_requests_round_to_512_bytes_and_pick_their_segment_size() -> None:
    assert round_request(1) == 512 and round_request(513) == 1024
    assert round_request(0) == 0  # an empty tensor takes no block
    assert segment_size(MiB) == 2 * MiB  # small pool
    assert segment_size(MiB + 512) == 20 * MiB  # large, under 10 MiB
    assert segment_size(10 * MiB + 1) == 12 * MiB  # rounded up to 2 MiB


def test_small_requests_share_a_2_mib_segment() -> None:
    allocator = CachingAllocator()
    allocator.malloc(600_000)
    allocator.malloc(600_000)
    assert allocator.reserved == 2 * MiB
    assert allocator.allocated == 2 * round_request(600_000)


def test_a_large_block_is_split_only_when_more_than_1_mib_remains() -> None:
    allocator = CachingAllocator()
    first = allocator.malloc(3 * MiB)
    allocator.malloc(3 * MiB)  # from the same 20 MiB segment: 17 MiB remained
    assert allocator.reserved == 20 * MiB
    allocator.free(first)
    allocator.malloc(int(2.5 * MiB))  # 0.5 MiB would remain: not split, the whole 3 MiB block is handed out
    assert allocator.allocated == 6 * MiB


def test_freed_neighbours_merge() -> None:
    allocator = CachingAllocator()
    a, b = allocator.malloc(3 * MiB), allocator.malloc(3 * MiB)
    allocator.free(a)
    allocator.free(b)
    allocator.malloc(19 * MiB)  # fits only in the merged 20 MiB block: no new segment
    assert allocator.reserved == 20 * MiB
    assert allocator.allocated == 20 * MiB  # 1 MiB remains, which is not more than 1 MiB: not split


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 30 * MiB)), max_size=60))
def test_allocated_never_exceeds_reserved_and_frees_return_everything(ops: list[tuple[bool, int]]) -> None:
    allocator, live = CachingAllocator(), []
    for free, nbytes in ops:
        if free and live:
            allocator.free(live.pop(nbytes % len(live)))
        else:
            live.append(allocator.malloc(nbytes))
        assert allocator.allocated <= allocator.reserved
        assert allocator.allocated >= sum(round_request(1) for _ in live)
    for block in live:
        allocator.free(block)
    assert allocator.allocated == 0


def test_replay_reports_the_second_steps_peaks() -> None:
    events = [(0, 4 * MiB, 0), (1, 4 * MiB, 1), (2, -4 * MiB, 0)]  # allocation 1 stays: a gradient
    peaks = replay([MiB], events)
    assert peaks.reserved == 2 * MiB + 20 * MiB  # the states' small segment, one large segment reused
    assert peaks.allocated == round_request(MiB) + 8 * MiB
