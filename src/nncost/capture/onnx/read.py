"""``read_onnx``: an ONNX file as a Trace, the same record a PyTorch capture produces."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nncost.capture.onnx.graph import build_trace
from nncost.capture.onnx.shapes import infer, resolve_inputs, with_input_shapes
from nncost.records.report import FileParams
from nncost.records.trace import Trace
from nncost.sources.onnx import load_model


def read_onnx(path: str | os.PathLike[str] | Any, inputs: Mapping[str, tuple[int, ...]] | tuple[int, ...] | None = None,
              batch_size: int | None = None, name: str | None = None) -> tuple[Trace, FileParams]:
    """The trace of one inference of the model in ``path`` (or a ``ModelProto``), and which stored
    tensors are params."""
    model = load_model(path if hasattr(path, "SerializeToString") else Path(path))
    shapes = resolve_inputs(model, inputs, batch_size)
    inferred = infer(with_input_shapes(model, shapes))
    label = Path(path).name if isinstance(path, (str, os.PathLike)) else model.graph.name or "model"
    trace, classes = build_trace(inferred, shapes, name or label)
    return trace, FileParams(counted=list(classes.params), buffers=list(classes.buffers),
                             excluded=dict(classes.excluded))
