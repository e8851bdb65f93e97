"""The one sentence a failed forward becomes: which layer, what it expects, what it got.

A layer whose input does not fit its configuration (a convolution's channels, a linear layer's
features, a normalisation's shape) is described from the module's own attributes, read when the
forward failed.  Code of the model that raises by itself is named as such; anything else keeps
the operator that failed and the shapes it was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from nncost.errors import InputMismatch, first_line
from nncost.rules.registry import op_label

if TYPE_CHECKING:
    from nncost.capture.scopes import Scopes
    from nncost.capture.tracer import Tracer


def input_mismatch(exc: Exception, scopes: Scopes, tracer: Tracer, model_name: str) -> InputMismatch:
    """The error a forward that raised ``exc`` is reported with."""
    failed = scopes.failed_call(exc)
    module = scopes.module_at(failed) if failed is not None else None
    scopes.finish()
    layer = scopes.layers[failed] if failed is not None else None
    root = layer is None or layer.parent is None
    name = layer.name if layer and layer.name and not root else (model_name or (layer.name if layer else "")
                                                                 or "the model")
    layer_type = layer.type if layer else "?"
    shapes = layer.input_shapes if layer else []
    message = first_line(exc)
    expected = expectation(module, shapes) if module is not None else None
    if expected is not None:
        text = f"{name} ({layer_type}) {expected} (input {fmt_shapes(shapes)})"
    elif tracer.failed_op is None:
        whose = "the model's forward" if root else f"{name} ({layer_type})'s forward"
        text = f"{whose} raised {type(exc).__name__}: {message} (input {fmt_shapes(shapes)})"
    else:
        op, op_shapes = tracer.failed_op
        text = (f"layer '{name}' ({layer_type}) failed on input shapes {fmt_shapes(shapes)}, in {op_label(op)} "
                f"with {fmt_shapes(op_shapes)}: {message}")
    return InputMismatch(text, layer=name, layer_type=layer_type, input_shapes=shapes)


def expectation(module: nn.Module, shapes: list[Any]) -> str | None:
    """``"expects 3 input channels, got 1"`` when the first input does not fit ``module``'s
    configuration; None when it fits or the module is not one whose expectations are known."""
    first = shapes[0] if shapes and isinstance(shapes[0], tuple) else None
    if first is None:
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = len(module.kernel_size)
        sizes = "C×" + {1: "L", 2: "H×W", 3: "D×H×W"}[spatial]
        # N×C×... is read as an unbatched C×... only when its first dimension is the channels:
        # otherwise a size one dimension short (3x224 for C×H×W) would read as 1 channel
        unbatched = len(first) == spatial + 1 and first[0] == module.in_channels
        if len(first) != spatial + 2 and not unbatched:
            return (f"expects a {spatial + 2}-dimensional input N×{sizes} (an input size of {sizes}, "
                    f"{spatial + 1} dimensions without the batch), got {len(first)} dimensions")
        channels = first[-spatial - 1]
        if channels != module.in_channels:
            return f"expects {module.in_channels} input channels, got {channels}"
    elif isinstance(module, nn.Linear):
        if not first or first[-1] != module.in_features:
            return f"expects {module.in_features} input features (the last dimension), got {first[-1] if first else 0}"
    elif isinstance(module, nn.LayerNorm):
        normalized = tuple(module.normalized_shape)
        if tuple(first[len(first) - len(normalized):]) != normalized or len(first) < len(normalized):
            return (f"expects its input to end in {fmt_shapes([normalized])} (normalized_shape), got "
                    f"{fmt_shapes([first])}")
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if len(first) < 2 or first[1] != module.num_features:
            return f"expects {module.num_features} channels (dimension 1), got {first[1] if len(first) > 1 else 0}"
    return None


def fmt_shapes(shapes: list[Any]) -> str:
    return ", ".join("×".join(map(str, s)) if isinstance(s, tuple) else repr(s) for s in shapes) or "()"
