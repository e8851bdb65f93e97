"""The report: plain data, built by :mod:`nncost.analyses`, shown by :mod:`nncost.render`.

Every figure is stored in base units (bytes, counts); human units belong to the renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from nncost.errors import NncostError, did_you_mean
from nncost.records.roofline import Roofline
from nncost.records.trace import OpCall, Shape


@dataclass(frozen=True)
class Layer:
    """One module call.  Costs are inclusive: everything run inside the call, children too."""

    index: int
    name: str
    type: str
    depth: int
    parent: int | None
    input_shapes: list[Shape]
    output_shapes: list[Shape]
    own_params: int
    params: int
    macs: int
    flops: int
    output_bytes: int
    read_bytes: int
    write_bytes: int
    intensity: float  # FLOPs per byte read or written
    flops_share: float  # of the model's total FLOPs
    macs_share: float
    is_leaf: bool
    module_config: dict[str, Any] = field(default_factory=dict)
    self_ops: list[OpCall] = field(default_factory=list)  # run directly in this call's forward
    estimated_seconds: float | None = None  # roofline time on Report.roofline's hardware
    bound: str | None = None  # "compute" or "memory": which roof limits the estimate
    measured_seconds: float | None = None  # --measure-time: median wall time of this call

    @property
    def label(self) -> str:
        return self.name or "(model)"


@dataclass(frozen=True)
class Totals:
    params: int
    active_params: int  # those one token uses: routed experts count top-k of E (docs/conventions.md)
    trainable_params: int
    frozen_params: int
    buffers: int
    buffer_bytes: int
    param_bytes: int
    param_bytes_by_dtype: dict[str, int]
    macs: int
    flops: int
    read_bytes: int
    write_bytes: int
    input_bytes: int
    feature_map_bytes: int  # per sample: what one more sample adds to the tensors the forward writes
    peak_activation_bytes: int  # for the whole batch: most bytes alive at once
    peak_at: str  # the layer running when the peak was reached
    estimated_seconds: float | None = None  # forward pass, roofline
    measured_seconds: float | None = None  # forward pass, --measure-time median


@dataclass(frozen=True)
class Uncounted:
    """An operator met with no cost rule: its calls are reported, never costed as zero."""

    op: str
    calls: int
    layers: list[str]


@dataclass(frozen=True)
class FileParams:
    """For a model read from a file (ONNX): which stored tensors counted as parameters.

    ``counted`` and ``buffers`` list tensor names; ``excluded`` maps every other stored tensor to
    why it is not a parameter (``shape/index constant``, ``scalar constant``, ``unused``).
    """

    counted: list[str]
    buffers: list[str]
    excluded: dict[str, str]

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for why in self.excluded.values():
            kinds[why] = kinds.get(why, 0) + 1
        parts = [f"{len(self.counted)} stored tensors counted as params"]
        if self.buffers:
            parts.append(f"{len(self.buffers)} as buffers (BatchNorm running statistics)")
        parts.extend(f"{n} excluded as {why}" for why, n in sorted(kinds.items()))
        return ", ".join(parts)


@dataclass(frozen=True)
class Report:
    """One forward pass, layer by layer, and its totals.

    ``layers`` holds every module call; ``depth`` is the depth of the rows a renderer shows by
    default (a view: :meth:`shown` filters, nothing is dropped).  The analyses that add time
    (the roofline, measured latency) return a new report; none changes this one.
    """

    SECTION: ClassVar[str] = "report"  # its name among sections; its figures are the top of the document

    model: str
    execution: str
    device: str
    batch_size: int
    layers: list[Layer]
    totals: Totals
    uncounted: list[Uncounted]
    fallback_reason: str | None = None
    roofline: Roofline | None = None
    file_params: FileParams | None = None  # set for models read from a file (ONNX)
    depth: int | None = None  # the rows shown by default: this depth and above (None: all)
    # a transformers config's model: the dtype its parameters ran in, and why that one:
    # "config" (the config's own), "default" (it names none: float32), "request" (asked for)
    dtype: str | None = None
    dtype_source: str | None = None
    weight_format: str | None = None  # quantized weights (nncost.quantization): as stored, or a what-if
    time_unavailable: str | None = None  # why the time estimates asked for are missing (a cpu not calibrated)

    def shown(self, depth: int | None = None) -> list[Layer]:
        """The layers of depth ``depth`` and above (default: the report's own ``depth``)."""
        limit = self.depth if depth is None else depth
        return [layer for layer in self.layers if limit is None or layer.depth <= limit]

    def layer(self, name: str) -> Layer:
        """The first call of the layer named ``name`` (its qualified module name)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise NncostError(f"no layer named {name!r}{did_you_mean(name, [layer.name for layer in self.layers])}")

    # -- renderers: each method calls exactly the render function of its name --------------
    def explain(self, layer: str) -> str:
        """The formulas behind one layer's figures, with its numbers plugged in
        (:func:`nncost.render.explain.explain`)."""
        from nncost.render.explain import explain

        return explain(self.layer(layer))

    def to_dict(self) -> dict[str, Any]:
        from nncost.render.formats import to_dict

        return to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        from nncost.render.formats import to_json

        return to_json(self, indent=indent)

    def to_csv(self) -> str:
        from nncost.render.formats import to_csv

        return to_csv(self)

    def to_markdown(self, depth: int | None = None) -> str:
        from nncost.render.formats import to_markdown

        return to_markdown(self, depth=depth)

    def to_dataframe(self) -> Any:
        from nncost.render.formats import to_dataframe

        return to_dataframe(self)

    def table(self, depth: int | None = None, width: int | None = None) -> str:
        from nncost.render.table import render_text

        return render_text(self, depth=depth, width=width)

    def __str__(self) -> str:
        return self.table()

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from nncost.render.table import renderables

        yield from renderables(self)

    def to_html(self, memory: Any = None, command: str | None = None) -> str:
        """A self-contained HTML page: totals, charts, the memory timeline of ``memory`` (a
        :class:`~nncost.records.memory.MemoryReport`) when given, the roofline when set, the layer tree."""
        from nncost.render.html import report_page

        return report_page(self, memory, command=command)

    def _repr_html_(self) -> str:
        from nncost.render.html import to_html

        return to_html(self)
