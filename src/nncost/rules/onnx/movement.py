"""ONNX operators that move, select or create data, and those that cost nothing at all.

Data movement (``Transpose``, ``Concat``, ``Gather``, ``Slice``, ``Pad``, ``Cast``...) costs 0 FLOPs
by rule, its bytes still counted, as in the ATen rules; sorting (``TopK``) too.  Free operators
alias their input or only read metadata (``Reshape``, ``Squeeze``, ``Shape``, ``Constant``,
``Identity``, inference ``Dropout``): no FLOPs and no bytes.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.onnx import ONNX
from nncost.rules.registry import ZERO, Cost, Shape

Inputs = tuple[Shape | None, ...]

MOVEMENT = (
    "Transpose", "Concat", "Split", "GatherElements", "GatherND", "Slice", "Pad", "Tile", "Expand",
    "Cast", "CastLike", "ScatterND", "ScatterElements", "Scatter", "DepthToSpace", "SpaceToDepth", "TopK",
    "ConstantOfShape", "Range", "OneHot", "Trilu", "EyeLike", "ReverseSequence", "Compress", "SequenceAt",
    "SplitToSequence", "ConcatFromSequence", "Col2Im", "NonZero", "Unique",
)
ALIASES = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout")
METADATA = ("Shape", "Size", "Constant")


@ONNX.rule(*MOVEMENT, unit="copy", formula="0 FLOPs; bytes read and written are counted")
def movement(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return ZERO


# Gather with indices is how embeddings and index_select export: it reads only the rows it gathers.
ONNX.add(("Gather",), movement, unit="gather", formula="0 FLOPs; bytes read and written are counted")


ONNX.mark_free(ALIASES, "aliases its input (inference Dropout is the identity)")
ONNX.mark_free(METADATA, "reads only metadata or holds a constant")
