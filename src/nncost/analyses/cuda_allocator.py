"""PyTorch's CUDA caching allocator, replayed over a simulated step's allocations.

``torch.cuda.max_memory_allocated`` counts the blocks the allocator hands out and
``max_memory_reserved`` the segments it took from the driver (``cudaMalloc``); neither is the
plain sum of tensor sizes.  This replays the allocator's documented default rules
(``c10/cuda/CUDACachingAllocator.cpp``, no ``PYTORCH_CUDA_ALLOC_CONF``, one stream):

* every request is rounded up to a multiple of 512 bytes;
* requests up to 1 MiB come from the small pool, larger ones from the large pool;
* a request is served by the smallest free block of its pool that is large enough (best fit);
  the block is split when what remains is at least 512 bytes (small pool) or more than 1 MiB
  (large pool), otherwise the whole block is handed out and counted as allocated;
* when no free block fits, a new segment is reserved: 2 MiB for a small request, 20 MiB for a
  request under 10 MiB, otherwise the request rounded up to 2 MiB;
* freed blocks merge with free neighbours of the same segment; segments are never released
  (no ``empty_cache``, no out-of-memory retry).

The steady state a training loop reaches is replayed: the model's states are allocated first,
then the step twice (the first stands for the warm-up step; what it leaves allocated, the
gradients, is freed before the second as ``zero_grad(set_to_none=True)`` does), and the peaks
of the second step are reported.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

BLOCK = 512
SMALL_REQUEST = 1 << 20  # kSmallSize
SMALL_SEGMENT = 2 << 20  # kSmallBuffer
LARGE_SEGMENT = 20 << 20  # kLargeBuffer
LARGE_REQUEST = 10 << 20  # kMinLargeAlloc
LARGE_ROUND = 2 << 20  # kRoundLarge


def round_request(nbytes: int) -> int:
    """The bytes the caching allocator hands out for a request: a multiple of 512, and nothing
    for an empty tensor (``allocate(0)`` returns an empty pointer without a block)."""
    return -(-nbytes // BLOCK) * BLOCK


def segment_size(request: int) -> int:
    if request <= SMALL_REQUEST:
        return SMALL_SEGMENT
    if request < LARGE_REQUEST:
        return LARGE_SEGMENT
    return -(-request // LARGE_ROUND) * LARGE_ROUND


@dataclass(eq=False)
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None


@dataclass
class CachingAllocator:
    reserved: int = 0
    allocated: int = 0
    peak_reserved: int = 0
    peak_allocated: int = 0
    _free: dict[bool, list[tuple[int, int, int]]] = field(default_factory=lambda: {True: [], False: []})
    _blocks: dict[tuple[int, int], _Block] = field(default_factory=dict)
    _segments: int = 0

    def malloc(self, nbytes: int) -> _Block:
        size = round_request(nbytes)
        small = size <= SMALL_REQUEST
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i < len(pool):
            _, segment, offset = pool.pop(i)
            block = self._blocks[(segment, offset)]
        else:
            block = self._new_segment(segment_size(size), small)
        remaining = block.size - size
        if remaining >= BLOCK if small else remaining > SMALL_REQUEST:
            rest = _Block(block.segment, block.offset + size, remaining, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._blocks[(rest.segment, rest.offset)] = rest
            bisect.insort(self._free[small], (rest.size, rest.segment, rest.offset))
        block.free = False
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: _Block) -> None:
        self.allocated -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._free[block.small].remove((neighbour.size, neighbour.segment, neighbour.offset))
                del self._blocks[(neighbour.segment, neighbour.offset)]
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    if (block.segment, block.offset) in self._blocks:
                        del self._blocks[(block.segment, block.offset)]
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._blocks[(block.segment, block.offset)] = block
        bisect.insort(self._free[block.small], (block.size, block.segment, block.offset))

    def reset_peaks(self) -> None:
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def _new_segment(self, size: int, small: bool) -> _Block:
        self._segments += 1
        self.reserved += size
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        block = _Block(self._segments, 0, size, small)
        self._blocks[(block.segment, 0)] = block
        return block


@dataclass(frozen=True)
class AllocatorPeaks:
    allocated: int  # what torch.cuda.max_memory_allocated would say over the step
    reserved: int  # what torch.cuda.max_memory_reserved would say


def replay(states: Iterable[int], events: list[tuple[int, int, int]]) -> AllocatorPeaks:
    """The allocator's peaks over a steady-state step: ``states`` are the tensors alive across
    steps (parameters, buffers, optimizer state, inputs), ``events`` the step's
    ``(op_index, ±bytes, allocation)`` timeline."""
    allocator = CachingAllocator()
    for nbytes in states:
        if nbytes:
            allocator.malloc(nbytes)
    for step in range(2):
        if step == 1:
            allocator.reset_peaks()
        live: dict[int, _Block] = {}
        for _, delta, allocation in events:
            if delta > 0:
                live[allocation] = allocator.malloc(delta)
            elif allocation in live:
                allocator.free(live.pop(allocation))
        for block in live.values():  # gradients: released by zero_grad before the next step
            allocator.free(block)
    return AllocatorPeaks(allocated=allocator.peak_allocated, reserved=allocator.peak_reserved)
