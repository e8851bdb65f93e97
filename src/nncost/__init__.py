"""nncost: what a neural network costs, layer by layer, before you train or ship it."""

from nncost.api import memory, profile, profile_onnx
from nncost.errors import BadRequest, InputMismatch, ModelFileError, ModelNotFound, NeedsWeights, NncostError
from nncost.records.memory import MemoryReport
from nncost.records.report import SCHEMA, FileParams, Layer, Report, Totals, Uncounted

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "BadRequest",
    "FileParams",
    "InputMismatch",
    "Layer",
    "MemoryReport",
    "ModelFileError",
    "ModelNotFound",
    "NeedsWeights",
    "NncostError",
    "Report",
    "Totals",
    "Uncounted",
    "__version__",
    "memory",
    "profile",
    "profile_onnx",
]
