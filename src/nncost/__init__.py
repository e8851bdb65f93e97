"""nncost: what a neural network costs, layer by layer, before you train or ship it.

``nncost.profile``, ``nncost.memory``, ``nncost.compare`` and the command line build a
:class:`Request` and hand it to :func:`run`, which returns a :class:`Result`.
"""

from nncost.api import compare, memory, profile, profile_onnx, roofline
from nncost.errors import BadRequest, InputMismatch, ModelFileError, ModelNotFound, NeedsWeights, NncostError
from nncost.pipeline import run
from nncost.records.comparison import Comparison
from nncost.records.memory import MemoryReport
from nncost.records.report import FileParams, Layer, Report, Totals, Uncounted
from nncost.records.result import Result
from nncost.records.roofline import Roofline
from nncost.records.trace import TorchFlags
from nncost.render.formats import SCHEMA
from nncost.request import Inputs, NamedSize, Request, Step

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "BadRequest",
    "Comparison",
    "FileParams",
    "InputMismatch",
    "Inputs",
    "Layer",
    "MemoryReport",
    "ModelFileError",
    "ModelNotFound",
    "NamedSize",
    "NeedsWeights",
    "NncostError",
    "Report",
    "Request",
    "Result",
    "Roofline",
    "Step",
    "TorchFlags",
    "Totals",
    "Uncounted",
    "__version__",
    "compare",
    "memory",
    "profile",
    "profile_onnx",
    "roofline",
    "run",
]
