"""Reading an ONNX file into a checked ``ModelProto``, without reading external weights.

Costs need only shapes, so tensors stored in external-data files are never loaded: nncost checks
that each file exists and is long enough for the bytes the model says it holds there.  Every way
a file can be unreadable becomes a :class:`~nncost.errors.ModelFileError` with one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nncost.errors import ModelFileError, ModelNotFound, first_line

OLDEST_OPSET = 7  # the first opset with today's Conv, Gemm, BatchNormalization and Upsample


def onnx_module() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ModelNotFound("reading .onnx files needs the onnx package: pip install 'nncost[onnx]'") from exc
    return onnx


def load_model(source: str | Path | Any) -> Any:
    """The model in the file ``source`` (or a ``ModelProto``), parsed and checked.

    External data is checked, not loaded; for an in-memory model, relative to the working directory.
    """
    onnx = onnx_module()
    if isinstance(source, onnx.ModelProto):
        return check_model(source, Path("."), Path("<model>"), source)
    path = Path(source)
    if not path.is_file():
        raise ModelNotFound(f"no such file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ModelFileError(f"{path} is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, and its C++ backend's RuntimeError
        raise ModelFileError(f"{path} is not a readable ONNX model (corrupt or truncated protobuf: {exc})") from exc
    return check_model(model, path.parent, path, str(path))


def check_model(model: Any, base: Path, path: Path, checked: Any) -> Any:
    """``checked`` goes to onnx's checker: the file's path, so that it finds external data beside it."""
    onnx = onnx_module()
    if not model.HasField("graph") or not model.graph.node:
        raise ModelFileError(f"{path} holds no ONNX graph (a corrupt, truncated or non-ONNX file)")
    if not text_is_valid(model):
        raise ModelFileError(f"{path} is corrupt: a name or string in it is not valid UTF-8")
    check_opsets(model, path)
    check_external_data(model, base, path)
    try:
        onnx.checker.check_model(checked)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelFileError(f"{path} is not a valid ONNX model: {first_line(exc)}") from exc
    return model


STRING_FIELD = 9  # FieldDescriptor.TYPE_STRING
MESSAGE_FIELD = 11  # FieldDescriptor.TYPE_MESSAGE


def text_is_valid(message: Any) -> bool:
    """Every string field decoded as text: ONNX is proto2, whose parser hands back invalid UTF-8 as bytes.

    A tensor's own data is not walked (it is bytes by design, and may be large), only its name
    and external-data entries.
    """
    if message.DESCRIPTOR.name == "TensorProto":
        return isinstance(message.name, str) and all(text_is_valid(e) for e in message.external_data)
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3  # LABEL_REPEATED
        values = value if repeated else [value]
        if field.type == STRING_FIELD and not all(isinstance(v, str) for v in values):
            return False
        if field.type == MESSAGE_FIELD and not all(text_is_valid(v) for v in values):
            return False
    return True


def default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def check_opsets(model: Any, path: Path) -> None:
    onnx = onnx_module()
    newest = onnx.defs.onnx_opset_version()
    version = default_opset(model)
    if not version:
        raise ModelFileError(f"{path} imports no ONNX operator set (opset_import is empty or corrupt)")
    if version > newest:
        raise ModelFileError(f"{path} uses ONNX opset {version}; the installed onnx {onnx.__version__} knows "
                             f"opsets up to {newest}: upgrade onnx")
    if version < OLDEST_OPSET:
        raise ModelFileError(f"{path} uses ONNX opset {version}; nncost reads opset {OLDEST_OPSET} to {newest} "
                             "(convert it with onnx.version_converter)")


def graph_tensors(graph: Any) -> Any:
    """Every TensorProto of ``graph``: initializers, Constant values, and those of subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from graph_tensors(subgraph)


def external_tensors(model: Any) -> list[Any]:
    external = 1  # TensorProto.EXTERNAL
    return [t for t in graph_tensors(model.graph) if t.data_location == external]


def check_external_data(model: Any, base: Path, path: Path) -> None:
    for tensor in external_tensors(model):
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise ModelFileError(f"{path}: tensor {tensor.name!r} points to external data {location!r}, "
                                 "which is not a file beside the model")
        if not target.is_file():
            raise ModelFileError(f"{path}: the external data file {location!r} of tensor {tensor.name!r} "
                                 f"is missing (looked in {base})")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise ModelFileError(f"{path}: tensor {tensor.name!r} has a corrupt external-data offset or length") \
                from None
        size = target.stat().st_size
        if offset > size or (length is not None and offset + length > size):
            raise ModelFileError(f"{path}: the external data file {location!r} is shorter than tensor "
                                 f"{tensor.name!r} needs (truncated?)")
