"""Memory of a training step or an inference pass: simulated on meta tensors, storage by storage.

- ``step``: one training step or inference pass traced, its storages followed through the allocator;
- ``graph``: the walk over a loss's backward graph;
- ``optimizers``: each optimizer's state tensors per parameter;
- ``autocast``: PyTorch's own autocast, run on fake tensors, for a mixed-precision step;
- ``measure``: the same step run for real, its peak measured.

The names below are imported when first used, so the optimizer names can be read without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncost.simulation.optimizers import OPTIMIZERS
    from nncost.simulation.step import StepTrace, capture_step

__all__ = ["OPTIMIZERS", "StepTrace", "capture_step"]


def __getattr__(name: str) -> Any:
    if name == "OPTIMIZERS":
        from nncost.simulation.optimizers import OPTIMIZERS

        return OPTIMIZERS
    if name in ("StepTrace", "capture_step"):
        from nncost.simulation import step

        return getattr(step, name)
    raise AttributeError(f"module 'nncost.simulation' has no attribute {name!r}")
