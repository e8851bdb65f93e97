"""nncost: what a neural network costs, layer by layer, before you train or ship it."""

from nncost.api import compare, memory, profile, profile_onnx, roofline
from nncost.errors import BadRequest, InputMismatch, ModelFileError, ModelNotFound, NeedsWeights, NncostError
from nncost.records.comparison import Comparison
from nncost.records.memory import MemoryReport
from nncost.records.report import SCHEMA, FileParams, Layer, Report, Totals, Uncounted
from nncost.records.roofline import Roofline

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "BadRequest",
    "Comparison",
    "FileParams",
    "InputMismatch",
    "Layer",
    "MemoryReport",
    "ModelFileError",
    "ModelNotFound",
    "NeedsWeights",
    "NncostError",
    "Report",
    "Roofline",
    "Totals",
    "Uncounted",
    "__version__",
    "compare",
    "memory",
    "profile",
    "profile_onnx",
    "roofline",
]
