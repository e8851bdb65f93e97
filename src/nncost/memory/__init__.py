"""Memory of a training step or an inference pass: simulated on meta tensors, storage by storage."""

from nncost.memory.optimizers import OPTIMIZERS
from nncost.memory.step import StepTrace, capture_step

__all__ = ["OPTIMIZERS", "StepTrace", "capture_step"]
