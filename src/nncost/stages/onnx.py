"""The ONNX stage: a model read from an ONNX file, its shapes from the file and the input sizes.
Nothing runs, so there is no memory step; a ``hardware`` adds the roofline."""

from __future__ import annotations

from dataclasses import dataclass, replace

from nncost.analyses.build import build_report
from nncost.errors import BadRequest
from nncost.records.report import Report
from nncost.request import NamedSize, Request
from nncost.stages.forward import estimated
from nncost.stages.progress import Progress


@dataclass(frozen=True)
class _OnnxInputs:
    sizes: dict[str, tuple[int, ...]] | tuple[int, ...] | None
    batch_size: int | None


def _onnx_inputs(request: Request) -> _OnnxInputs:
    sizes = request.inputs.sizes or ()
    named = [size for size in sizes if isinstance(size, NamedSize)]
    bare = [size for size in sizes if not isinstance(size, NamedSize)]
    if bare and (named or len(bare) > 1):
        raise BadRequest("give several ONNX inputs by name: --input NAME=1x3x224x224 (repeatable)")
    given = bare[0] if bare else ({size.name: size.size for size in named} or None)
    batch = request.inputs.batch_size
    return _OnnxInputs(given, batch if batch != 1 else None)


def onnx_report(request: Request, say: Progress) -> Report:
    """An ONNX file: shapes from the file and the input sizes; nothing runs, so no memory step."""
    from nncost.capture.onnx import read_onnx

    unsupported = [flag for flag, given in (
        ("--train and the memory options", request.step is not None),
        ("--measure-time", request.measure_time), ("--seq", request.inputs.seq is not None),
        ("--dtype", request.dtype is not None), ("--device", request.device != "meta"),
        ("--config", bool(request.config_overrides)),
        ("--weights", request.weights is not None),
    ) if given]
    if unsupported:
        raise BadRequest(f"{unsupported[0]} cannot be used with an ONNX file; it is read as stored")
    inputs = _onnx_inputs(request)
    with say.step("reading the ONNX model", slow=False):
        trace, file_params = read_onnx(request.model, inputs.sizes, inputs.batch_size, name=request.name)
    report = build_report(trace, file_params=file_params)
    if request.hardware is not None:
        report = estimated(report, request, request.hardware, None, say)
    return replace(report, depth=request.depth) if request.depth is not None else report
