"""The document of a result: dict/JSON (the stable contract, docs/schema.json), CSV, Markdown,
text, pandas.

One document per result: the forward report's figures at the top, then one key per other
section.  ``nncost MODEL --format json`` prints exactly :func:`to_json` of the result the
command line's request gave, and the CSV and Markdown views carry the same sections.  Each view
keeps one table from a section's name to the function that shows it
(:mod:`nncost.render.sections`); a section it has no function for is named in its place, and
the JSON holds any section, by its fields, under its name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from nncost.render import compare, units
from nncost.render.generation import generation_markdown
from nncost.render.memory import memory_lines
from nncost.render.parallel import parallel_markdown, plan_markdown
from nncost.render.sections import name, not_shown, sections
from nncost.render.training_run import training_run_lines

if TYPE_CHECKING:
    from nncost.records.comparison import Comparison
    from nncost.records.generation import GenerationReport
    from nncost.records.memory import MemoryReport
    from nncost.records.parallel import ParallelStep, Plan
    from nncost.records.report import Layer, Report
    from nncost.records.result import Result
    from nncost.records.training_run import TrainingRun

SCHEMA = "nncost.report/2"
# MemoryReport fields that are the plot's, not the document's
_PLOT_ONLY = ("timeline", "peak_op", "phase_ends")

LAYER_KEYS = (
    "index", "name", "type", "depth", "parent", "input_shapes", "output_shapes", "own_params", "params",
    "macs", "flops", "output_bytes", "read_bytes", "write_bytes", "intensity", "flops_share", "macs_share",
    "is_leaf", "estimated_seconds", "bound", "measured_seconds",
)

CONVENTIONS = {
    "macs": "one multiply-accumulate; counted for convolution, matmul, attention and recurrent kernels only",
    "flops": "2 x MACs plus elementwise, normalisation, pooling and softmax work (see docs/conventions.md)",
    "attention": "dense Q.K^T and P.V products, as the math kernel computes them, also when causal",
    "feature_map_bytes": "per sample: what one more sample adds to the tensors the forward writes, none reused",
    "peak_activation_bytes": "whole batch: most bytes of forward-created tensors alive at once (no_grad)",
    "mode": "inference forward: eval mode, no_grad",
}

# Report.dtype_source: why a transformers model ran in its dtype
DTYPE_SOURCES = {"config": "the config's", "default": "the config names none", "request": "asked for"}


def layer_dict(layer: Layer) -> dict[str, Any]:
    row = {key: getattr(layer, key) for key in LAYER_KEYS}
    row["input_shapes"] = [list(s) for s in layer.input_shapes]
    row["output_shapes"] = [list(s) for s in layer.output_shapes]
    return row


def _report_dict(report: Report) -> dict[str, Any]:
    """The report's part of the document."""
    data = {
        "model": report.model,
        "execution": report.execution,
        "device": report.device,
        "batch_size": report.batch_size,
        "fallback_reason": report.fallback_reason,
        "totals": asdict(report.totals),
        "layers": [layer_dict(layer) for layer in report.shown()],
        "uncounted": {u.op: u.calls for u in report.uncounted},
        "uncounted_layers": {u.op: u.layers for u in report.uncounted},
        "roofline": asdict(report.roofline) if report.roofline is not None else None,
        "weight_format": report.weight_format,
        "conventions": CONVENTIONS,
    }
    if report.file_params is not None:
        data["file_params"] = asdict(report.file_params)
    if report.time_unavailable is not None:
        data["time_unavailable"] = report.time_unavailable
    if report.dtype_source is not None:
        data["dtype"] = report.dtype
        data["dtype_source"] = report.dtype_source
    return data


def memory_dict(memory: MemoryReport) -> dict[str, Any]:
    """The ``memory`` section: the simulated step, without the plot's timeline."""
    data = {key: value for key, value in asdict(memory).items() if key not in _PLOT_ONLY}
    data["fits"] = memory.fits
    return data


def _phase_dict(report: Report, layers: bool) -> dict[str, Any]:
    t = report.totals
    data: dict[str, Any] = {"macs": t.macs, "flops": t.flops, "read_bytes": t.read_bytes,
                            "write_bytes": t.write_bytes, "seconds": t.estimated_seconds,
                            "efficiency": report.roofline.efficiency if report.roofline is not None else None}
    if layers:
        data["layers"] = [layer_dict(layer) for layer in report.shown()]
    return data


def generation_dict(generation: GenerationReport) -> dict[str, Any]:
    """The ``generation`` section: the prefill's totals (its layers are the document's own), the
    decode phase's totals and layers summed over its steps, the cache, the peak and the times."""
    g = generation
    return {
        "prompt_tokens": g.prompt_tokens,
        "new_tokens": g.new_tokens,
        "batch": g.batch_size,
        "engine": g.engine,
        "cache": g.cache,
        "prefill": _phase_dict(g.prefill, layers=False),
        "decode": _phase_dict(g.decode, layers=True),
        "decode_steps": g.decode_steps,
        "kv_cache_bytes": g.kv_cache_bytes,
        "kv_cache_bytes_per_token": g.kv_cache_bytes_per_token,
        "kv_cache_dtype": g.kv_cache_dtype,
        "weights_bytes": g.weights_bytes,
        "weight_format": g.weight_format,
        "peak_bytes": g.peak_bytes,
        "peak_phase": g.peak_phase,
        "peak_cache_bytes": g.peak_cache_bytes,
        "peak_working_bytes": g.peak_working_bytes,
        "time_to_first_token_seconds": g.time_to_first_token_seconds,
        "tokens_per_second": g.tokens_per_second,
        "budget_bytes": g.budget_bytes,
        "max_batch": g.max_batch,
        "tensor_parallel": g.tensor_parallel,
        "communication_bytes": {"prefill": g.communication_bytes[0], "decode": g.communication_bytes[1]},
        "communication_seconds": {"prefill": g.communication_seconds[0], "decode": g.communication_seconds[1]}
        if g.communication_seconds is not None else None,
        "steps": [{"context": c, "macs": m, "seconds": t, "kv_cache_bytes": b} for c, m, t, b in g.steps],
        "overhead": asdict(g.overhead) if g.overhead is not None else None,
    }


def training_run_dict(run: TrainingRun) -> dict[str, Any]:
    """The ``training_run`` section: the record's fields, ``cost`` and its price null when unpriced."""
    return asdict(run)


def parallel_dict(step: ParallelStep) -> dict[str, Any]:
    """The ``parallel`` section: the layout, each stage on one of its GPUs, the step's time."""
    data = asdict(step)
    data["layout"]["global_batch"] = step.layout.global_batch
    data["fits"] = step.fits
    data["bubble_fraction"] = step.bubble_fraction
    data["tokens_per_second"] = step.tokens_per_second
    for stage, figures in zip(step.stages, data["stages"], strict=True):
        figures["blocks"] = list(stage.blocks) if stage.blocks is not None else None
        figures["held_activation_bytes"] = stage.held_activation_bytes
    return data


PLAN_KEYS = ("peak_bytes", "peak_stage", "tokens_per_step", "flops", "flops_per_gpu", "step_seconds",
             "compute_seconds", "tensor_parallel_seconds", "pipeline_seconds", "bubble_seconds",
             "data_parallel_seconds", "optimizer_seconds")


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The ``plan`` section: what was searched, the best layouts (their totals; the first one's
    stages are the ``parallel`` section) and the others' reasons."""
    best = []
    for step in plan.best:
        figures: dict[str, Any] = {"layout": {**asdict(step.layout), "global_batch": step.layout.global_batch}}
        figures.update({key: getattr(step, key) for key in PLAN_KEYS})
        figures["tokens_per_second"] = step.tokens_per_second
        best.append(figures)
    return {"gpus": plan.gpus, "hardware": plan.hardware, "budget_bytes": plan.budget_bytes,
            "global_batch": plan.global_batch, "considered": plan.considered, "fitting": plan.fitting, "best": best,
            "rejected": [asdict(rejected) for rejected in plan.rejected]}


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    """The ``comparison`` section: each model's totals (and training peak), its ratios to the
    first model's, and the layers the models share at the stage depth."""
    models = []
    for e in comparison.models:
        totals = asdict(e.totals)
        if comparison.train:
            totals["train_peak_bytes"] = e.train_peak_bytes
        models.append({"model": e.model, "batch_size": e.batch_size, "execution": e.execution,
                       "totals": totals, "uncounted": e.uncounted})
    return {
        "models": models,
        "ratios": [{"model": e.model, **r} for e, r in zip(comparison.models, comparison.ratios, strict=True)],
        "stage_depth": comparison.stage_depth,
        "stages": [asdict(stage) for stage in comparison.stages],
        "train": {"optimizer": comparison.optimizer, "allocator": comparison.allocator} if comparison.train else None,
    }


def _plan_parts(plan: Plan) -> dict[str, Any]:
    parts = {"plan": plan_dict(plan)}
    if plan.best:  # the best layout's stages are the ``parallel`` section
        parts["parallel"] = parallel_dict(plan.best[0])
    return parts


# The document's keys after the report's, each null where the result has no such section.
DOCUMENT_KEYS = ("memory", "generation", "training_run", "parallel", "plan", "comparison")

# Section name -> the keys of the document it fills; the forward report's (a generation's
# prefill's) go at the top.
_DICT: dict[str, Callable[[Any], dict[str, Any]]] = {
    "report": lambda report: {"": _report_dict(report)},
    "memory": lambda memory: {"memory": memory_dict(memory)},
    "generation": lambda g: {"": _report_dict(g.prefill), "generation": generation_dict(g)},
    "training_run": lambda run: {"training_run": training_run_dict(run)},
    "parallel": lambda step: {"parallel": parallel_dict(step)},
    "plan": _plan_parts,
    "comparison": lambda comparison: {"comparison": comparison_dict(comparison)},
}


def _fields(section: Any) -> Any:
    """A section no view knows, as plain data: its fields."""
    return asdict(section) if is_dataclass(section) and not isinstance(section, type) else vars(section)


def to_dict(result: Result | Report) -> dict[str, Any]:
    """The whole document of a result (see docs/schema.json): the forward report's figures (for
    generation, the prefill's) at the top, then one key per other section, null where absent; a
    section of a kind not listed in the schema goes, by its fields, under its name."""
    top: dict[str, Any] = {}
    keyed: dict[str, Any] = dict.fromkeys(DOCUMENT_KEYS)
    for section in sections(result):
        known = _DICT.get(name(section))
        for key, value in (known(section) if known else {name(section): _fields(section)}).items():
            if key:
                keyed[key] = value
            else:
                top.update(value)
    return {"schema": SCHEMA, **top, **keyed}


def to_json(result: Result | Report, indent: int | None = 2) -> str:
    return json.dumps(to_dict(result), indent=indent)


def _flat_row(layer: Layer) -> dict[str, Any]:
    row = layer_dict(layer)
    row["input_shapes"] = ";".join(units.shape(s) for s in layer.input_shapes)
    row["output_shapes"] = ";".join(units.shape(s) for s in layer.output_shapes)
    return row


def _parallel_csv(step: ParallelStep) -> list[str]:
    values = parallel_dict(step)
    stages = values.pop("stages")
    return [_values_csv("parallel", values), _rows_csv(stages)]


def _plan_csv(plan: Plan) -> list[str]:
    values = plan_dict(plan)
    best = values.pop("best")
    rows = [{**{f"layout.{k}": v for k, v in row.pop("layout").items()}, **row} for row in best]
    return [*(_parallel_csv(plan.best[0]) if plan.best else []), _values_csv("plan", values), _rows_csv(rows)]


def _generation_csv(generation: GenerationReport) -> list[str]:
    values = generation_dict(generation)
    values.pop("steps")
    values["decode"].pop("layers")
    return [_layers_csv(generation.prefill), _values_csv("generation", values), _layers_csv(generation.decode)]


# Section name -> its blocks of rows.
_CSV: dict[str, Callable[[Any], list[str]]] = {
    "report": lambda report: [_layers_csv(report)],
    "memory": lambda memory: [_values_csv("memory", memory_dict(memory))],
    "generation": _generation_csv,
    "training_run": lambda run: [_values_csv("training_run", training_run_dict(run))],
    "parallel": _parallel_csv,
    "plan": _plan_csv,
    "comparison": lambda comparison: [compare.to_csv(comparison)],
}


def to_csv(result: Result | Report) -> str:
    """Each section's blocks, a blank line between blocks: one row per layer; a simulated step's
    figures as ``memory,value`` rows; a layout's as ``parallel,value`` rows and its stages one row
    each; a plan's best layout so, then the plan's figures and its best layouts one row each; a
    training run's as ``training_run,value`` rows; for generation the prefill's layers, the
    generation's ``generation,value`` rows and the decode phase's layers; a comparison's models
    one row each.  A section CSV cannot show is one line that names it."""
    blocks: list[str] = []
    for section in sections(result):
        known = _CSV.get(name(section))
        blocks += known(section) if known else [_line_csv(not_shown(section, "in CSV"))]
    return "\n".join(blocks)


def _line_csv(text: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow((text,))
    return buffer.getvalue()


def _layers_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LAYER_KEYS, lineterminator="\n")
    writer.writeheader()
    for layer in report.shown():
        writer.writerow(_flat_row(layer))
    return buffer.getvalue()


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    """A table of rows with the same keys (lists joined by ``;``)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                         for k, v in row.items()})
    return buffer.getvalue()


def _values_csv(section: str, values: dict[str, Any]) -> str:
    """``section,value`` rows; nested figures as ``key.subkey``."""
    buffer = io.StringIO()
    rows = csv.writer(buffer, lineterminator="\n")
    rows.writerow((section, "value"))

    def write(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                write(f"{key}.{k}", v)
        elif isinstance(value, list):
            rows.writerow((key, ";".join(map(str, value))))
        else:
            rows.writerow((key, "" if value is None else value))

    for key, value in values.items():
        write(key, value)
    return buffer.getvalue()


def to_dataframe(report: Report) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("to_dataframe() needs pandas: pip install 'nncost[pandas]'") from exc
    return pd.DataFrame([_flat_row(layer) for layer in report.shown()], columns=list(LAYER_KEYS))


def summary_lines(report: Report) -> list[tuple[str, str]]:
    """The totals block, as (label, value) pairs shared by the text, Markdown and HTML views."""
    t = report.totals
    lines = [
        ("Params", f"{units.grouped(t.params)} ({units.count(t.params)}): "
                   f"{units.grouped(t.trainable_params)} trainable, {units.grouped(t.frozen_params)} frozen"),
        *([("Active params", f"{units.grouped(t.active_params)} ({units.count(t.active_params)}) per token: "
                             "routed experts count the top-k of E a token uses")]
          if t.active_params != t.params else []),
        *([("Params from file", report.file_params.summary())] if report.file_params is not None else []),
        ("Param memory", units.bytes_by_dtype(t.param_bytes, t.param_bytes_by_dtype)),
        *([("Dtype", f"{report.dtype} ({DTYPE_SOURCES[report.dtype_source]})")] if report.dtype_source else []),
        *([("Weight format", f"{report.weight_format}: {units.nbytes(t.param_bytes)} of parameters, scales and "
                             "zero points included")] if report.weight_format else []),
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
    lines.extend(time_lines(report))
    if report.uncounted:
        ops = ", ".join(f"{u.op}×{u.calls}" for u in report.uncounted)
        lines.append(("UNCOUNTED ops", f"{ops} (no cost rule: their FLOPs are not in the totals)"))
    else:
        lines.append(("Uncounted ops", "none"))
    return lines


def time_lines(report: Report) -> list[tuple[str, str]]:
    """The roofline and measured-time lines of the totals block; without a roofline, the measured
    forward alone and why the estimates asked for are missing."""
    r, t = report.roofline, report.totals
    if r is None:
        lines = []
        if t.measured_seconds is not None:
            lines.append(("Measured forward",
                          f"{units.seconds(t.measured_seconds)} (median, batch {report.batch_size})"))
        if report.time_unavailable is not None:
            lines.append(("Time estimates", f"none: {report.time_unavailable}"))
        return lines
    matrix, conv = r.family_dtype.get("matmul", ""), r.family_dtype.get("conv", "")
    columns = f"matrix work {matrix}" + (f", convolutions {conv}" if conv != matrix else "") + ", vector work fp32"
    cache = r.cache_bandwidth
    memory = units.bandwidth(r.bandwidth) + (f" (caches up to {units.bandwidth(cache)})" if cache else "")
    lines = [("Hardware", f"{r.hardware}: {units.rate(r.peak_flops)} ({matrix} matrix), {memory}"
                          + (f", {units.nbytes(r.memory_bytes)}" if r.memory_bytes else "")
                          + f"; efficiency {r.efficiency:g}; {columns}")]
    if t.estimated_seconds is not None:
        rate = units.samples_per_second(r.forward_samples_per_second) if r.forward_samples_per_second else "-"
        lines.append(("Estimated forward", f"{units.seconds(t.estimated_seconds)} (roofline, batch "
                                           f"{report.batch_size}): {rate}"))
    if r.train_step_seconds is not None:
        lines.append(("Estimated train step",
                      f"{units.seconds(r.train_step_seconds)}: forward {units.seconds(r.forward_seconds or 0)}, "
                      f"backward {units.seconds(r.backward_seconds or 0)}, optimizer "
                      f"{units.seconds(r.optimizer_seconds or 0)}; "
                      f"{units.samples_per_second(r.train_samples_per_second or 0)}"))
    if t.measured_seconds is not None:
        lines.append(("Measured forward", f"{units.seconds(t.measured_seconds)} (median of {r.measured_repeats} on "
                                          f"{r.measured_device}): "
                                          f"{units.samples_per_second(r.measured_samples_per_second or 0)}"))
        if r.achieved_flops is not None and r.mfu is not None:
            lines.append(("Achieved", f"{units.rate(r.achieved_flops)}, MFU {units.percent(r.mfu)} of "
                                      f"{units.rate(r.peak_flops)}"))
    return lines


MARKDOWN_HEADER = ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "Output", "%FLOPs")
# With a roofline, MACs and output bytes give way to the estimate; with measured times, params too.
ROOFLINE_HEADER = ("Layer", "Type", "Output shape", "Params", "FLOPs", "Est. time", "Bound", "%FLOPs")
MEASURED_HEADER = ("Layer", "Type", "Output shape", "FLOPs", "Est. time", "Bound", "Measured", "%time")


def header(report: Report) -> tuple[str, ...]:
    if report.totals.measured_seconds is not None:
        return MEASURED_HEADER
    return ROOFLINE_HEADER if report.roofline is not None else MARKDOWN_HEADER


def row_cells(layer: Layer, report: Report) -> tuple[str, ...]:
    """The cells of one row under ``header(report)``."""
    cells = layer_cells(layer)
    if report.roofline is None and report.totals.measured_seconds is None:
        return cells
    estimate = units.seconds(layer.estimated_seconds) if layer.estimated_seconds is not None else "-"
    bound = layer.bound or "-"
    if report.totals.measured_seconds is None:
        return (*cells[:4], cells[5], estimate, bound, cells[7])
    measured = units.seconds(layer.measured_seconds) if layer.measured_seconds is not None else "-"
    total = report.totals.measured_seconds
    share = units.percent(layer.measured_seconds / total) if layer.measured_seconds is not None and total else "-"
    return (*cells[:3], cells[5], estimate, bound, measured, share)


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


def _report_markdown(report: Report, depth: int | None) -> list[str]:
    rows = ["| " + " | ".join(header(report)) + " |", "|" + "---|" * 3 + "---:|" * 5]
    for layer in report.shown(depth):
        cells = list(row_cells(layer, report))
        cells[0] = "&nbsp;" * 2 * layer.depth + cells[0]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rows.append("")
    rows.extend(f"- **{label}**: {value}" for label, value in summary_lines(report))
    return rows


def _plan_markdown(plan: Plan) -> list[str]:
    rows = ["### Plan", "", *plan_markdown(plan)]
    if plan.best:
        rows += ["", *_parallel_markdown(plan.best[0])]
    return rows


def _parallel_markdown(step: ParallelStep) -> list[str]:
    return [f"### Training over {step.layout.gpus:,} GPUs", "", *parallel_markdown(step)]


def _items(title: str, lines: list[tuple[str, str]]) -> list[str]:
    return [f"### {title}", "", *(f"- **{label.strip()}**: {value}" for label, value in lines)]


# Section name -> its Markdown lines, given the depth of the layer rows shown.
_MARKDOWN: dict[str, Callable[[Any, int | None], list[str]]] = {
    "report": _report_markdown,
    "memory": lambda memory, depth: _items("Memory", memory_lines(memory)),
    "generation": lambda generation, depth: generation_markdown(generation),
    "training_run": lambda run, depth: _items("Training run", training_run_lines(run)),
    "parallel": lambda step, depth: _parallel_markdown(step),
    "plan": lambda plan, depth: _plan_markdown(plan),
    "comparison": lambda comparison, depth: compare.markdown_lines(comparison),
}


def to_markdown(result: Result | Report, depth: int | None = None) -> str:
    """Each section in turn, a blank line between them: the layer table and the totals (for
    generation, prefill and decode side by side), a simulated step, a plan or a layout, a
    training run, a comparison.  A section Markdown cannot show is one line that names it."""
    rows: list[str] = []
    for section in sections(result):
        known = _MARKDOWN.get(name(section))
        if rows:
            rows.append("")
        rows += known(section, depth) if known else [f"- {not_shown(section, 'in Markdown')}"]
    return "\n".join(rows) + "\n"
