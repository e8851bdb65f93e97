"""The one place that runs things: a :class:`~nncost.request.Request` in, a :class:`Result` out.

A request is taken through an ordered list of stages (:mod:`nncost.stages`), each in its own
module.  A stage reads the request and the sections before it, and adds one section:

1. **source** (:mod:`~nncost.stages.source`): the model, resolved from a MODEL string or taken
   as given, built on meta or where a stage needs weights, and its example inputs;
2. **forward**: the report of one forward pass, its roofline on the request's hardware and its
   measured latency;
3. **step**: the memory of one training step or inference pass on one GPU, the largest batch
   that fits and one real step (the forward's report gains the step's time);
4. **layout**: a training step spread over GPUs, or a plan's search of layouts;
5. **generation**: prefill and decode as ``model.generate`` runs them (instead of 2 to 4);
6. **training run**: the step, or the layout's, repeated over a run's tokens.

Three kinds of request take another path: an ONNX file is read, not run
(:mod:`~nncost.stages.onnx`); a comparison runs each of its models as a request of its own
(:mod:`~nncost.stages.compare`); a report built already is timed on the request's hardware.

The Python API (:mod:`nncost.api`) and the command line (:mod:`nncost.cli`) build requests with
:func:`nncost.request.build_request` and call :func:`run`.
"""

from __future__ import annotations

from types import ModuleType

from nncost.records.report import Report
from nncost.records.result import Result
from nncost.request import Request
from nncost.sources.models import is_onnx_model
from nncost.stages import compare, forward, generation, layout, onnx, step, training_run
from nncost.stages.forward import with_roofline
from nncost.stages.progress import Progress, Quiet
from nncost.stages.source import resolve_source

__all__ = ["STAGES", "Progress", "Quiet", "run", "with_roofline"]

# The stages of a request for one model, in order; each module has ``wanted(request)`` and
# ``add(source, result)``.
STAGES: tuple[ModuleType, ...] = (forward, step, layout, generation, training_run)


def run(request: Request, progress: Progress | None = None) -> Result:
    """Run ``request`` through the stages it asks for."""
    say = progress or Quiet()
    if request.compare is not None:
        return Result.of(compare.comparison(request, say, run))
    if is_onnx_model(request.model):
        return Result.of(onnx.onnx_report(request, say))
    if isinstance(request.model, Report):
        return Result.of(forward.timed(request.model, request, say))
    source = resolve_source(request, say)
    result = Result()
    for stage in STAGES:
        if stage.wanted(source.request):  # a config model's own dtype resolved
            result = stage.add(source, result)
    return result
