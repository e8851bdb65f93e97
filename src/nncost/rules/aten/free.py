"""Operators that cost nothing: metadata queries, bare allocation, aliasing.

Every operator whose schema says it returns a view of its input (``OpOverload.is_view``) is
free as well; the tracer checks that directly, so views need no entry here.
"""

from __future__ import annotations

from nncost.rules.aten import ATEN

ATEN.mark_free(
    (
        "_unsafe_view", "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk", "_reshape_alias",
        "lift_fresh", "detach", "alias", "set_", "resize_", "_resize_output_", "resize_as_",
        "as_strided_",
    ),
    "aliases its input or only changes metadata",
)
ATEN.mark_allocating(
    ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"),
    "allocates without writing",
)
ATEN.mark_free(
    (
        "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
        "is_same_size", "is_nonzero", "_assert_async", "_assert_scalar", "_assert_tensor_metadata",
        "_functional_assert_async", "record_stream", "_has_compatible_shallow_copy_type",
        "_nested_tensor_from_mask_left_aligned", "equal", "allclose", "is_pinned",
        "profiler::_record_function_enter_new", "profiler::_record_function_exit",
    ),
    "reads a scalar or metadata only",
)
