"""Generation, prefill and decode side by side, then its figures: the rows and lines every view shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncost.render import units

if TYPE_CHECKING:
    from nncost.records.generation import GenerationReport
    from nncost.records.report import Layer, Report

HEADER = ("Layer", "Type", "Prefill MACs", "Prefill time", "Decode MACs", "Decode time", "%decode time")
HEADER_UNTIMED = ("Layer", "Type", "Prefill MACs", "Prefill FLOPs", "Decode MACs", "Decode FLOPs")
# The columns a narrow terminal gives up, first to last: the layer and what its decode costs stay
# (decode is most of a generation's time)
DROP_ORDER = ("Type", "%decode time", "Prefill FLOPs", "Decode FLOPs", "Prefill MACs", "Decode MACs",
              "Prefill time")


def _count(value: int) -> str:
    return units.count(value) if value else "-"


def _seconds(value: float | None) -> str:
    return units.seconds(value) if value is not None else "-"


def rows(generation: GenerationReport, depth: int | None = None) -> tuple[tuple[str, ...], list[Layer],
                                                                           list[tuple[str, ...]]]:
    """The header, the layers shown and their cells: each prefill layer beside the same layer's
    figures summed over the decode steps."""
    prefill, decode = generation.prefill, generation.decode
    decode_by_index = {layer.index: layer for layer in decode.layers} if generation.decode_steps else {}
    timed = prefill.roofline is not None
    header: tuple[str, ...] = HEADER if timed else HEADER_UNTIMED
    total = decode.totals.estimated_seconds
    shown = prefill.shown(depth)
    cells: list[tuple[str, ...]] = []
    for layer in shown:
        other = decode_by_index.get(layer.index)
        if timed:
            share = units.percent(other.estimated_seconds / total) if (
                other is not None and other.estimated_seconds is not None and total) else "-"
            cells.append((layer.label, layer.type, _count(layer.macs), _seconds(layer.estimated_seconds),
                          _count(other.macs) if other else "-",
                          _seconds(other.estimated_seconds) if other else "-", share))
        else:
            cells.append((layer.label, layer.type, _count(layer.macs), _count(layer.flops),
                          _count(other.macs) if other else "-", _count(other.flops) if other else "-"))
    return header, shown, cells


# How each engine's generation is said (Generation.engine).
ENGINE_WORDS = {"hf-generate": "as model.generate runs them (--engine hf-generate)",
                "vllm": "as vLLM runs them (--engine vllm: a paged KV cache of 16-token blocks)"}


def generation_lines(generation: GenerationReport) -> list[tuple[str, str]]:
    """The generation's figures as (label, value) pairs, shared by the terminal and Markdown."""
    g, prefill, decode = generation, generation.prefill, generation.decode
    lines = [
        ("Generation", f"{g.prompt_tokens:,} prompt tokens, {g.new_tokens:,} new, {g.batch_size} "
                       f"sequence{'s' if g.batch_size > 1 else ''}: a prefill and {g.decode_steps:,} decode "
                       f"step{'s' if g.decode_steps != 1 else ''}, {ENGINE_WORDS[g.engine]}"),
        ("Cache", g.cache),
        *([("Tensor parallel", f"{g.tensor_parallel} GPUs in the Megatron layout: every figure below is one GPU's; "
                               f"each sends {units.nbytes(g.communication_bytes[0])} in the prefill and "
                               f"{units.nbytes(g.communication_bytes[1])} over the decode"
                               + (f" ({units.seconds(g.communication_seconds[0])} and "
                                  f"{units.seconds(g.communication_seconds[1])} on its link, in the times)"
                                  if g.communication_seconds is not None else ""))]
          if g.tensor_parallel > 1 else []),
        ("Params", f"{units.grouped(prefill.totals.params)} ({units.count(prefill.totals.params)})"),
        ("Prefill", _phase(prefill)),
        ("Decode", _phase(decode) + " over all steps" if g.decode_steps else "no step (1 new token)"),
        ("KV cache", f"{units.nbytes(g.kv_cache_bytes)} after the last step; "
                     f"{units.nbytes(g.kv_cache_bytes_per_token)} per token of one sequence"
                     + (f"; stored as {g.kv_cache_dtype}" if g.kv_cache_dtype else "")),
        ("Weights", units.nbytes(g.weights_bytes)
         + (f"; matrix weights in {g.weight_format}, scales and zero points included" if g.weight_format else "")),
        ("Peak memory", f"{units.nbytes(g.peak_bytes)} in the {g.peak_phase}: weights "
                        f"{units.nbytes(g.weights_bytes)} + cache {units.nbytes(g.peak_cache_bytes)} + working "
                        f"{units.nbytes(g.peak_working_bytes)}"),
        *_experts_lines(g),
    ]
    if g.time_to_first_token_seconds is not None and prefill.roofline is not None:
        roofline = prefill.roofline
        lines.append(("Hardware", f"{roofline.hardware}, weights {roofline.dtype}, matrix work "
                                  f"{roofline.family_dtype.get('matmul', roofline.dtype)}, efficiency "
                                  f"{roofline.efficiency:g} (roofline)"))
        lines.append(("Time to first token", units.seconds(g.time_to_first_token_seconds)))
    if g.overhead is not None:
        lines.append(("Engine overhead", _overhead(g, timed=prefill.roofline is not None)))
    if g.tokens_per_second is not None:
        lines.append(("Decode rate", f"{units.per_second(g.tokens_per_second)} tokens/s per sequence, "
                                f"{units.per_second(g.tokens_per_second * g.batch_size)} for the batch"))
    if g.budget_bytes is not None:
        verdict = "fits" if g.peak_bytes <= g.budget_bytes else "does NOT fit"
        lines.append(("Fits", f"{verdict}: the peak against {units.nbytes(g.budget_bytes)}"))
    if g.max_batch is not None and g.budget_bytes is not None:
        lines.append(("Most sequences that fit", f"{g.max_batch:,} at {g.prompt_tokens + g.new_tokens:,} tokens each "
                                                 f"in {units.nbytes(g.budget_bytes)} (simulated at that number and "
                                                 "the next)"))
    uncounted = {u.op: u.calls for u in prefill.uncounted}
    for u in decode.uncounted:
        uncounted[u.op] = uncounted.get(u.op, 0) + u.calls
    lines.append(("UNCOUNTED ops", ", ".join(f"{op}×{n}" for op, n in uncounted.items())) if uncounted
                 else ("Uncounted ops", "none"))
    return lines


def _overhead(generation: GenerationReport, timed: bool) -> str:
    """The engine's step overhead on one line: each phase's seconds and how its kernels launch."""
    o = generation.overhead
    assert o is not None
    decode = (f"decode {units.seconds(o.decode_seconds)} over all steps, each "
              + (f"one CUDA graph of {o.decode_kernels:,} kernels" if o.cuda_graphs
                 else f"{o.decode_kernels:,} kernels launched one by one") if generation.decode_steps
              else "no decode step")
    return (f"prefill {units.seconds(o.prefill_seconds)}, {o.prefill_kernels:,} kernels launched one by one; "
            f"{decode}; scheduling every step (--cuda-graphs; docs/engines.md)"
            + ("; in the times" if timed else ""))


def _experts_lines(generation: GenerationReport) -> list[tuple[str, str]]:
    """For a mixture of experts, the experts each phase is expected to read of its first routed
    parameter (nncost.analyses.reads)."""
    from nncost.analyses.reads import experts_read
    from nncost.records.trace import token_rows
    from nncost.render.explain import ROUTING_ASSUMED

    phases = [("prefill", generation.prefill)] + ([("a decode step", generation.decode)] if generation.decode_steps
                                                   else [])
    read = []
    for phase, report in phases:
        for layer in report.layers:
            tokens = token_rows(layer.input_shapes)
            routed = next((op.routed for op in layer.self_ops if op.routed is not None), None)
            if routed is not None and tokens:
                top_k, expected = experts_read(routed, tokens)
                read.append((phase, tokens, top_k, expected, routed.slices))
                break
    if not read:
        return []
    _, _, top_k, _, experts = read[0]
    each = ", ".join(f"{phase} {expected:.3g} (T = {tokens:,})" for phase, tokens, _, expected, _ in read)
    return [("Experts read", f"those the tokens route to, E·(1 − (1 − k/E)^T) of E = {experts}, k = {top_k:g}: "
                             f"{each}; {ROUTING_ASSUMED}")]


def _phase(report: Report) -> str:
    t = report.totals
    text = (f"{units.count(t.macs)} MACs, {units.count(t.flops)} FLOPs, {units.nbytes(t.read_bytes)} read, "
            f"{units.nbytes(t.write_bytes)} written")
    return text + (f", {units.seconds(t.estimated_seconds)}" if t.estimated_seconds is not None else "")


def generation_markdown(generation: GenerationReport) -> list[str]:
    """The side-by-side table and the figures as Markdown lines."""
    header, shown, cells = rows(generation, generation.prefill.depth)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for layer, row in zip(shown, cells, strict=True):
        named = ["&nbsp;" * 2 * layer.depth + row[0], *row[1:]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in named) + " |")
    lines.append("")
    lines.extend(f"- **{label}**: {value}" for label, value in generation_lines(generation))
    return lines
