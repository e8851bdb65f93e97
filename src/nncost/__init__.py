"""nncost: what a neural network costs, layer by layer, before you train or ship it.

``nncost.cost``, ``nncost.profile``, ``nncost.memory``, ``nncost.compare`` and the command line
build a :class:`Request` with :func:`build_request` and hand it to :func:`run`, which returns a
:class:`Result`.

The public names are imported when first used (PEP 562), so ``nncost --help`` and
``nncost --version`` start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncost.api import compare, cost, memory, profile, profile_onnx, roofline
    from nncost.errors import BadRequest, InputMismatch, ModelFileError, ModelNotFound, NeedsWeights, NncostError
    from nncost.pipeline import run
    from nncost.records.comparison import Comparison
    from nncost.records.memory import MemoryReport
    from nncost.records.parallel import Layout, ParallelStep, Plan, Stage
    from nncost.records.report import FileParams, Layer, Report, Totals, Uncounted
    from nncost.records.result import Result
    from nncost.records.roofline import Roofline
    from nncost.records.trace import TorchFlags
    from nncost.records.training_run import TrainingRun
    from nncost.render.formats import SCHEMA
    from nncost.request import Compare, Generation, Inputs, Lora, NamedSize, Request, Run, Step, build_request

__version__ = "0.1.0"

# Each public name and the module it is defined in.
_HOMES = {
    **dict.fromkeys(("compare", "cost", "memory", "profile", "profile_onnx", "roofline"), "nncost.api"),
    **dict.fromkeys(("BadRequest", "InputMismatch", "ModelFileError", "ModelNotFound", "NeedsWeights",
                     "NncostError"), "nncost.errors"),
    "run": "nncost.pipeline",
    "Comparison": "nncost.records.comparison",
    "MemoryReport": "nncost.records.memory",
    **dict.fromkeys(("Layout", "ParallelStep", "Plan", "Stage"), "nncost.records.parallel"),
    **dict.fromkeys(("FileParams", "Layer", "Report", "Totals", "Uncounted"), "nncost.records.report"),
    "Result": "nncost.records.result",
    "Roofline": "nncost.records.roofline",
    "TorchFlags": "nncost.records.trace",
    "TrainingRun": "nncost.records.training_run",
    "SCHEMA": "nncost.render.formats",
    **dict.fromkeys(("Compare", "Generation", "Inputs", "Lora", "NamedSize", "Request", "Run", "Step", "build_request"),
                   "nncost.request"),
}

__all__ = [
    "SCHEMA",
    "BadRequest",
    "Compare",
    "Comparison",
    "FileParams",
    "Generation",
    "InputMismatch",
    "Inputs",
    "Layer",
    "Layout",
    "Lora",
    "MemoryReport",
    "ModelFileError",
    "ModelNotFound",
    "NamedSize",
    "NeedsWeights",
    "NncostError",
    "ParallelStep",
    "Plan",
    "Report",
    "Request",
    "Result",
    "Roofline",
    "Run",
    "Stage",
    "Step",
    "TorchFlags",
    "Totals",
    "TrainingRun",
    "Uncounted",
    "__version__",
    "build_request",
    "compare",
    "cost",
    "memory",
    "profile",
    "profile_onnx",
    "roofline",
    "run",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'nncost' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
