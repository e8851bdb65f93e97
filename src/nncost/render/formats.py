"""Machine-readable renderers: dict/JSON (the stable contract), CSV, Markdown, pandas."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from nncost.render import units

if TYPE_CHECKING:
    from nncost.records.report import Layer, Report

LAYER_KEYS = (
    "index", "name", "type", "depth", "parent", "input_shapes", "output_shapes", "own_params", "params",
    "macs", "flops", "output_bytes", "read_bytes", "write_bytes", "intensity", "flops_share", "macs_share",
    "is_leaf",
)

CONVENTIONS = {
    "macs": "one multiply-accumulate; counted for convolution, matmul, attention and recurrent kernels only",
    "flops": "2 x MACs plus elementwise, normalisation, pooling and softmax work (see docs/conventions.md)",
    "attention": "dense Q.K^T and P.V products, as the math kernel computes them, also when causal",
    "feature_map_bytes": "per sample: every tensor the forward writes, as if no buffer were reused",
    "peak_activation_bytes": "whole batch: most bytes of forward-created tensors alive at once (no_grad)",
    "mode": "inference forward: eval mode, no_grad",
}


def layer_dict(layer: Layer) -> dict[str, Any]:
    row = {key: getattr(layer, key) for key in LAYER_KEYS}
    row["input_shapes"] = [list(s) for s in layer.input_shapes]
    row["output_shapes"] = [list(s) for s in layer.output_shapes]
    return row


def to_dict(report: Report) -> dict[str, Any]:
    data = {
        "schema": report.schema,
        "model": report.model,
        "execution": report.execution,
        "device": report.device,
        "batch_size": report.batch_size,
        "fallback_reason": report.fallback_reason,
        "totals": asdict(report.totals),
        "layers": [layer_dict(layer) for layer in report.layers],
        "uncounted": {u.op: u.calls for u in report.uncounted},
        "uncounted_layers": {u.op: u.layers for u in report.uncounted},
        "conventions": CONVENTIONS,
    }
    if report.file_params is not None:
        data["file_params"] = asdict(report.file_params)
    return data


def to_json(report: Report, indent: int | None = 2) -> str:
    return json.dumps(to_dict(report), indent=indent)


def _flat_row(layer: Layer) -> dict[str, Any]:
    row = layer_dict(layer)
    row["input_shapes"] = ";".join(units.shape(s) for s in layer.input_shapes)
    row["output_shapes"] = ";".join(units.shape(s) for s in layer.output_shapes)
    return row


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LAYER_KEYS, lineterminator="\n")
    writer.writeheader()
    for layer in report.layers:
        writer.writerow(_flat_row(layer))
    return buffer.getvalue()


def to_dataframe(report: Report) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("to_dataframe() needs pandas: pip install 'nncost[pandas]'") from exc
    return pd.DataFrame([_flat_row(layer) for layer in report.layers], columns=list(LAYER_KEYS))


def summary_lines(report: Report) -> list[tuple[str, str]]:
    """The totals block, as (label, value) pairs shared by the text, Markdown and HTML views."""
    t = report.totals
    dtypes = ", ".join(f"{units.nbytes(b)} {d}" for d, b in t.param_bytes_by_dtype.items()) or "-"
    lines = [
        ("Params", f"{units.grouped(t.params)} ({units.count(t.params)}): "
                   f"{units.grouped(t.trainable_params)} trainable, {units.grouped(t.frozen_params)} frozen"),
        *([("Params from file", report.file_params.summary())] if report.file_params is not None else []),
        ("Param memory", f"{units.nbytes(t.param_bytes)} ({dtypes})"),
        ("Buffers", f"{units.grouped(t.buffers)} ({units.nbytes(t.buffer_bytes)})"),
        ("MACs", f"{units.grouped(t.macs)} ({units.count(t.macs)})"),
        ("FLOPs", f"{units.grouped(t.flops)} ({units.count(t.flops)})"),
        ("Bytes read / written", f"{units.nbytes(t.read_bytes)} / {units.nbytes(t.write_bytes)}"),
        ("Input", units.nbytes(t.input_bytes)),
        ("Feature maps / sample", units.nbytes(t.feature_map_bytes)),
        ("Peak activations", f"{units.nbytes(t.peak_activation_bytes)} (batch {report.batch_size}, "
                             f"at {t.peak_at or '-'})"),
        ("Execution", report.execution + (f" on {report.device}" if report.execution == "real" else "")
         + (f" (meta stopped: {report.fallback_reason.splitlines()[0][:90]})" if report.fallback_reason else "")),
    ]
    if report.uncounted:
        ops = ", ".join(f"{u.op}×{u.calls}" for u in report.uncounted)
        lines.append(("UNCOUNTED ops", f"{ops} (no cost rule: their FLOPs are not in the totals)"))
    else:
        lines.append(("Uncounted ops", "none"))
    return lines


MARKDOWN_HEADER = ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "Output", "%FLOPs")


def layer_cells(layer: Layer) -> tuple[str, ...]:
    """The cells of one table row, shared by the terminal, Markdown and HTML tables."""
    return (
        layer.label,
        layer.type,
        units.shapes(layer.output_shapes),
        units.count(layer.params) if layer.params else "-",
        units.count(layer.macs) if layer.macs else "-",
        units.count(layer.flops) if layer.flops else "-",
        units.nbytes(layer.output_bytes),
        units.percent(layer.flops_share),
    )


def visible(report: Report, depth: int | None) -> list[Layer]:
    return [layer for layer in report.layers if depth is None or layer.depth <= depth]


def to_markdown(report: Report, depth: int | None = None) -> str:
    rows = ["| " + " | ".join(MARKDOWN_HEADER) + " |", "|" + "---|" * 3 + "---:|" * 5]
    for layer in visible(report, depth):
        cells = list(layer_cells(layer))
        cells[0] = "&nbsp;" * 2 * layer.depth + cells[0]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rows.append("")
    rows.extend(f"- **{label}**: {value}" for label, value in summary_lines(report))
    return "\n".join(rows) + "\n"
