"""A paged KV cache, as vLLM keeps one, in transformers' ``Cache`` interface.

The model's own code runs unchanged; only the layers of the cache object that ``generate`` makes
are replaced.  Each :class:`PagedLayer` holds a pool of blocks of ``BLOCK_TOKENS`` tokens,
allocated before the engine runs (vLLM allocates its pool at start-up), so no traced call
allocates or concatenates cache storage.  ``update`` does what vLLM's ``reshape_and_cache``
kernel and its attention kernel do:

- it writes the new tokens' keys and values into their slots, one in-place copy each, as
  ``reshape_and_cache`` does: the copy reads the new keys and values and the slot mapping (8
  bytes a token, an input the engine prepares once a step), and writes the slots; it does not
  read the slots it overwrites (:func:`cache_writes_read_source_only`);
- it hands attention a view of the context's keys and values in the pool, so that attention
  reads them once, straight from the blocks: every cached token on a full-attention layer, at
  most the window on a sliding-window layer (the tokens in the window of the first new token,
  and the new ones, as transformers' own sliding layer returns them).

The cache holds whole blocks: ``⌈tokens / 16⌉`` per sequence on a full-attention layer; on a
sliding-window layer, the blocks that still hold a token of the window (vLLM frees the blocks
that fell out of it).  The pool's storage is one tensor per layer on meta; what the cache holds
is those blocks (:meth:`PagedLayer.held_bytes`).

Cache layers whose state is not keys and values by token (state-space and linear-attention
layers, indexed or quantized layers) are refused by name: the paged engine is not modelled
for them yet.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes

from nncost.errors import BadRequest
from nncost.quantization import cache_nbytes
from nncost.records.trace import Trace

# vLLM's default KV block size: CacheConfig.block_size, 16 tokens on CUDA (vllm/config/cache.py;
# docs.vllm.ai, "Paged Attention" and the engine arguments' --block-size).
BLOCK_TOKENS = 16


def _blocks(tokens: int, block_tokens: int) -> int:
    return -(-tokens // block_tokens)


class PagedLayer:
    """One layer's keys and values in blocks of ``block_tokens`` tokens, for ``capacity`` tokens
    per sequence; ``sliding_window`` (tokens) on a sliding-window layer.  The cache holds it as a
    transformers ``CacheLayerMixin`` (:func:`_layer_class`), as the masks ask of a cache's layers."""

    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, capacity: int, sliding_window: int | None = None, block_tokens: int = BLOCK_TOKENS) -> None:
        self.capacity = _blocks(capacity, block_tokens) * block_tokens
        self.sliding_window = sliding_window
        self.block_tokens = block_tokens
        self.is_sliding = sliding_window is not None
        self.tokens = 0  # stored per sequence
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.is_initialized = False

    def __repr__(self) -> str:
        return type(self).__name__

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """The pool, made outside any capture: the engine allocates it before it runs."""
        batch, heads = key_states.shape[:2]
        with _disable_current_modes():
            self.keys = torch.empty((batch, heads, self.capacity, key_states.shape[-1]), dtype=key_states.dtype,
                                    device=key_states.device)
            self.values = torch.empty((batch, heads, self.capacity, value_states.shape[-1]),
                                      dtype=value_states.dtype, device=value_states.device)
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens into their slots; the context's keys and values, as views of the pool."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.keys is not None and self.values is not None
        new = key_states.shape[-2]
        start, end = self.tokens, self.tokens + new
        if end > self.capacity:
            raise BadRequest(f"the paged cache holds {self.capacity} tokens a sequence, and {end} were written")
        with _disable_current_modes():  # the slot mapping: the engine's input, made once a step
            slots = torch.arange(new, device=key_states.device)
        self.keys[:, :, start:end].index_copy_(2, slots, key_states)
        self.values[:, :, start:end].index_copy_(2, slots, value_states)
        self.tokens = end
        first = 0 if self.sliding_window is None else max(0, start - self.sliding_window + 1)
        return self.keys[:, :, first:end], self.values[:, :, first:end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The length and offset of the keys ``update`` hands attention, as transformers' layers say them."""
        if self.sliding_window is None:
            return self.tokens + query_length, 0
        offset = max(self.tokens - self.sliding_window + 1, 0)
        if self.tokens >= self.sliding_window:
            return self.sliding_window - 1 + query_length, offset
        return self.tokens + query_length, offset

    def get_seq_length(self) -> int:
        return self.tokens

    def get_max_length(self) -> int:
        return self.sliding_window if self.sliding_window is not None else -1

    def held_blocks(self) -> int:
        """Blocks a sequence holds: every block written to, less those wholly out of the window."""
        used = _blocks(self.tokens, self.block_tokens)
        if self.sliding_window is None:
            return used
        return used - max(0, self.tokens - self.sliding_window) // self.block_tokens

    def held_bytes(self, kv_cache_dtype: str | None = None) -> int:
        """Bytes of the blocks the layer holds (keys and values), stored in ``kv_cache_dtype`` if given."""
        if self.keys is None or self.values is None:
            return 0
        tokens = self.held_blocks() * self.block_tokens
        total = 0
        for pool in (self.keys, self.values):
            shape = (*pool.shape[:2], tokens, pool.shape[-1])
            if kv_cache_dtype is None:
                total += pool.element_size() * shape[0] * shape[1] * shape[2] * shape[3]
            else:
                total += cache_nbytes(kv_cache_dtype, shape, pool.element_size())
        return total


@cache
def _layer_class() -> type[PagedLayer]:
    """:class:`PagedLayer` as a transformers cache layer (transformers is imported only when a
    paged cache is made)."""
    from transformers.cache_utils import CacheLayerMixin

    return type("PagedLayer", (PagedLayer, CacheLayerMixin), {})


def paged(kv_cache: Any, capacity: int, model_name: str) -> Any:
    """``kv_cache`` (the object ``generate`` made) with each layer replaced by a :class:`PagedLayer`;
    a layer whose state is not keys and values by token is refused by its type's name."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer, StaticLayer, StaticSlidingWindowLayer

    layers = getattr(kv_cache, "layers", None)
    if not layers or getattr(kv_cache, "layer_class_to_replicate", None) is not None:
        raise BadRequest(f"{model_name} makes its generation cache in its own forward ({type(kv_cache).__name__}): "
                         "the paged engine replaces the layers of a transformers Cache, so use --engine hf-generate")
    replaced = []
    for layer in layers:
        kind = type(layer)
        if kind in (DynamicSlidingWindowLayer, StaticSlidingWindowLayer):
            window = layer.sliding_window if kind is DynamicSlidingWindowLayer else layer.max_cache_len
            replaced.append(_layer_class()(capacity, window))
        elif kind in (DynamicLayer, StaticLayer):
            replaced.append(_layer_class()(capacity))
        else:
            raise BadRequest(f"{model_name}'s cache has {kind.__name__} layers, whose state the paged engine does not "
                             "model yet (it pages keys and values by token): use --engine hf-generate")
    kv_cache.layers = replaced
    return kv_cache


def cache_writes_read_source_only(trace: Trace) -> Trace:
    """``trace`` with each copy into the cache reading its source and its slots' index only: the
    copy overwrites the slots it writes, so the cache's storage is written, not read."""
    storages = {sid for sid, name in trace.named.items() if name.kind == "cache"}
    ops = []
    for op in trace.ops:
        if op.op == "index_copy_" and any(sid in storages for sid, _ in op.writes):
            reads = tuple((sid, n) for sid, n in op.reads if sid not in storages)
            op = replace(op, reads=reads, read_bytes=sum(n for _, n in reads))
        ops.append(op)
    return replace(trace, ops=ops)
