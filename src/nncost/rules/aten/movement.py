"""Operators that move, select or create data without arithmetic.

They cost 0 FLOPs by rule, not by omission: the tracer still counts the bytes they read and
write, which is what bounds their time.  Sorting and top-k are counted here too: their
comparisons are not floating-point arithmetic in the sense of this report.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.aten.elementwise import with_inplace
from nncost.rules.registry import ZERO, Cost, Shape, numel

COPIES = (
    "clone", "_to_copy", "_copy_from", "_copy_from_and_resize", "copy", "lift_fresh_copy",
    "cat", "stack", "hstack", "vstack", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
    "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d", "roll", "flip",
    "repeat", "repeat_interleave", "tril", "triu", "im2col", "col2im", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "narrow_copy", "_reshape_copy",
    "expand_copy", "permute_copy", "transpose_copy", "view_copy", "diag_embed", "diag",
    "_unsafe_index", "_unsafe_index_put", "unfold_copy", "unsqueeze_copy", "squeeze_copy",
    "slice_copy", "select_copy", "split_copy", "split_with_sizes_copy", "unbind_copy", "alias_copy",
    "_pack_padded_sequence", "_pad_packed_sequence",
    # backward of views and their scatter forms: a zero-filled gradient with a slice written in
    "select_backward", "slice_backward", "index_select_backward", "diagonal_backward", "unfold_backward",
    "as_strided_scatter", "slice_scatter", "select_scatter", "diagonal_scatter",
)
# Lookups that read only the rows they gather, not the whole table they are given.
GATHERS = ("embedding", "index_select")
SELECTIONS = (
    "index", "gather", "take", "masked_select", "nonzero",
    "nonzero_static", "sort", "argsort", "topk", "kthvalue", "_unique2", "unique_dim",
    "unique_consecutive", "bucketize", "searchsorted", "one_hot", "histc", "bincount",
)
WRITES = (
    "index_put", "_index_put_impl", "index_copy", "index_fill", "index_add", "index_reduce",
    "scatter", "scatter_add", "scatter_reduce", "masked_scatter", "fill", "zero", "copy",
    "uniform", "normal", "bernoulli", "exponential", "random", "geometric", "cauchy", "log_normal",
)
FACTORIES = (
    "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "new_zeros", "new_ones",
    "new_full", "arange", "linspace", "logspace", "eye", "scalar_tensor", "rand", "randn",
    "rand_like", "randn_like", "randint", "randint_like", "randperm", "multinomial", "tensor",
)


def _no_arithmetic(*args: Any, out: tuple[Shape, ...], **kwargs: Any) -> Cost:
    return ZERO


_writes = sorted(set(with_inplace(WRITES)) - set(COPIES))
ATEN.add(COPIES, _no_arithmetic, unit="copy", formula="0 FLOPs; bytes read and written are counted")
ATEN.add(GATHERS, _no_arithmetic, unit="gather", formula="0 FLOPs (a lookup); bytes are counted")
ATEN.add(SELECTIONS, _no_arithmetic, unit="copy", formula="0 FLOPs (gather, select, sort); bytes are counted")
ATEN.add(_writes, _no_arithmetic, unit="copy", formula="0 FLOPs; bytes written are counted")
ATEN.add(FACTORIES, _no_arithmetic, unit="copy", formula="0 FLOPs; the new tensor's bytes are counted")


@ATEN.rule(
    "_embedding_bag",
    "_embedding_bag_forward_only",
    "embedding_bag",
    unit="gather",
    formula="FLOPs = numel(indices)·dim (each bag sums its rows)",
)
def embedding_bag(weight: Shape, indices: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(indices) * weight[1])
