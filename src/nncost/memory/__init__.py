"""Memory of a training step or an inference pass: simulated on meta tensors, storage by storage.

The names below are imported when first used, so the optimizer names can be read without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncost.memory.optimizers import OPTIMIZERS
    from nncost.memory.step import StepTrace, capture_step

__all__ = ["OPTIMIZERS", "StepTrace", "capture_step"]


def __getattr__(name: str) -> Any:
    if name == "OPTIMIZERS":
        from nncost.memory.optimizers import OPTIMIZERS

        return OPTIMIZERS
    if name in ("StepTrace", "capture_step"):
        from nncost.memory import step

        return getattr(step, name)
    raise AttributeError(f"module 'nncost.memory' has no attribute {name!r}")
