"""Multi-tensor (``_foreach_*``) operators, which optimizers run on CUDA by default.

Each is the elementwise operator applied to every tensor of its first list argument: one FLOP
per element (two for ``addcmul``, ``addcdiv`` and ``lerp``), as the single-tensor forms cost.
GradScaler's unscale step multiplies every gradient by the inverse scale and checks it for
non-finite values: two FLOPs per element; its scale update works on two scalars.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.aten.elementwise import with_inplace
from nncost.rules.registry import Cost, Shape, is_shape, numel

ONE = (
    "add", "sub", "mul", "div", "neg", "abs", "sqrt", "rsqrt", "exp", "log", "reciprocal", "sign",
    "maximum", "minimum", "clamp_min", "clamp_max", "pow", "sigmoid", "tanh", "sin", "cos",
)
TWO = ("addcmul", "addcdiv", "lerp")


def _over_list(flops_per_element: int) -> Any:
    def rule(tensors: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
        shapes = [t for t in tensors if is_shape(t)] if isinstance(tensors, list) else []
        return Cost(0, flops_per_element * sum(numel(s) for s in shapes))

    return rule


ATEN.add(with_inplace(f"_foreach_{name}" for name in ONE), _over_list(1), unit="elementwise",
         formula="FLOPs = Σ numel over the first list")
ATEN.add(with_inplace(("_foreach_norm",)), _over_list(1), unit="reduction",
         formula="FLOPs = Σ numel over the first list")
ATEN.add(with_inplace(f"_foreach_{name}" for name in TWO), _over_list(2), unit="elementwise",
         formula="FLOPs = 2·Σ numel over the first list")
ATEN.add(with_inplace(("_foreach_copy", "_foreach_zero")), _over_list(0), unit="elementwise",
         formula="0 FLOPs; bytes counted")
ATEN.add(with_inplace(("_amp_foreach_non_finite_check_and_unscale",)), _over_list(2), unit="elementwise",
         formula="FLOPs = 2·Σ numel over the gradients (multiply, finiteness check)")


@ATEN.rule("_amp_update_scale_", "_amp_update_scale", unit="elementwise",
           formula="FLOPs = 4: the growth tracker and the scale, two scalars")
def amp_update_scale(*args: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 4)
