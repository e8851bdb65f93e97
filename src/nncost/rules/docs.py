"""The per-operator rules table of the docs, generated from the registry.

``python -m nncost.rules.docs > docs/rules.md``; a test keeps the file in step with the code.
"""

from __future__ import annotations

import inspect
import sys

from nncost.rules.aten import ATEN
from nncost.rules.onnx import ONNX
from nncost.rules.registry import UNITS, Registry, Rule

HEADER = """# Cost rules

Generated from the rule registry by `python -m nncost.rules.docs > docs/rules.md`; do not edit.
Conventions are in [conventions.md](conventions.md). Every ATen operator whose schema declares
it a view is free as well (no FLOPs, no bytes). An operator in none of these tables is reported
as *uncounted*, never as zero.
"""


ONNX_HEADER = """
# ONNX operators

Rules for the nodes of an ONNX graph (`nncost model.onnx`), with the same conventions.
Operators outside the default domain are written `domain::OpType`. A node whose shapes ONNX
shape inference could not find is reported as uncounted, with "(shapes not inferred)".
"""


def rules_markdown() -> str:
    """The units, the ATen rules and their kernel memory, then the ONNX rules."""
    return (HEADER + units_markdown() + registry_markdown(ATEN) + kernel_memory_markdown() + "\n"
            + ONNX_HEADER + registry_markdown(ONNX))


def units_markdown() -> str:
    lines = ["\n## units\n",
             "Each rule names the unit its operator executes as: the roofline ([roofline.md](roofline.md)) reads "
             "it, never the operator's name.\n", "| unit | what runs as it |", "|---|---|"]
    lines += [f"| `{unit}` | {what} |" for unit, what in UNITS.items()]
    return "\n".join(lines) + "\n"


def registry_markdown(registry: Registry) -> str:
    """One section per module that registers rules, its docstring, then each rule with its unit."""
    parts = []
    by_module: dict[str, list[Rule]] = {}
    for rule in registry.entries():
        by_module.setdefault(rule.module, []).append(rule)
    for module, rules in sorted(by_module.items()):
        parts.append(f"\n## {module.removeprefix('nncost.rules.')}\n")
        doc = inspect.getdoc(sys.modules[module])
        if doc:
            parts.append(doc + "\n")
        parts.append("\n| operators | unit | rule |\n|---|---|---|")
        for rule in rules:
            ops = ", ".join(f"`{op}`" for op in rule.ops)
            units = " or ".join(f"`{unit}`" for unit in rule.units)
            formula = rule.formula.replace("|", "\\|")
            parts.append(f"| {ops} | {units} | {formula} |")
        parts.append("")
    parts.append("\n## free\n\n| operators | unit | why |\n|---|---|---|")
    by_reason: dict[str, list[str]] = {}
    for op, why in registry.free.items():
        by_reason.setdefault(why, []).append(op)
    for why, names in by_reason.items():
        parts.append(f"| {', '.join(f'`{op}`' for op in names)} | `free` | {why} |")
    return "\n".join(parts) + "\n"


def kernel_memory_markdown() -> str:
    """The kernel memory rules of each hardware (the memory simulator's, not costs)."""
    from nncost.rules.kernel_memory import kernel_memory

    cpu = kernel_memory("cpu")
    assert cpu is not None
    module = inspect.getmodule(next(iter(cpu.rules.values())))
    doc = inspect.getdoc(module) if module else ""
    lines = ["\n## kernel memory: cpu\n", f"{doc}\n", "| operators | what the kernel holds beyond its outputs |",
             "|---|---|"]
    by_note: dict[str, list[str]] = {}
    for op, note in cpu.notes.items():
        by_note.setdefault(note, []).append(op)
    lines += [f"| {', '.join(f'`{op}`' for op in ops)} | {note} |" for note, ops in by_note.items()]
    resized = ", ".join(f"`{op}`" for op in cpu.resizers)
    lines.append(f"\nOutputs sized as the CPU kernel makes them, where the meta kernel differs: {resized}.")
    from nncost.rules.kernel_memory import bitsandbytes, cuda

    lines += ["\n## kernel memory: cuda\n", f"{inspect.getdoc(cuda)}\n", f"{inspect.getdoc(bitsandbytes)}\n",
              "| operators | what the kernel holds beyond its outputs |", "|---|---|"]
    lines += [f"| `{op}` | {note} |" for op, note in cuda.CUDA.notes.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(rules_markdown(), end="")
