"""nncost on the ONNX exports of torchvision's classification models.

    python bench/onnx_zoo.py                       # every classification model; prints the table
    python bench/onnx_zoo.py --write-docs          # the same, written to docs/onnx_zoo.md
    python bench/onnx_zoo.py --only resnet18 vit_b_16

Each model is built with random weights (nothing is downloaded) as ``nncost NAME`` builds it,
exported with ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter; constant folding
on, as by default) at the size torchvision evaluated it at, batch 1, and read back with
``nncost.profile_onnx``.  MACs must agree with torchvision's ``_ops`` as on the PyTorch path
(within 0.5%, or to the three decimals it is published with).  The file's parameters are the
tensors it stores; they are set beside the module's ``num_params`` with what explains the gap.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from torch import nn

import nncost
from nncost.sources.models import resolve, torchvision_input

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import zoo  # noqa: E402  # bench/zoo.py: the torchvision models and their published figures


@dataclass
class Row:
    name: str
    num_params: int  # torchvision's, = the module's
    ops: float  # G
    file_params: int = 0
    bn_affine: int = 0  # γ and β of the module's BatchNorm layers
    merged: int = 0  # elements of tensors the exporter stored once because their values were equal
    unexported: int = 0  # params of modules the eval forward never ran (inception_v3's AuxLogits)
    unexported_modules: str = ""
    counted: int = 0  # stored tensors counted as params
    excluded: int = 0
    macs: int = 0
    uncounted: str = ""
    export_seconds: float = 0.0
    read_seconds: float = 0.0
    error: str = ""
    layer_names: set[str] = field(default_factory=set)  # the report's rows
    module_names: set[str] = field(default_factory=set)  # the exported module's named_modules()

    @property
    def macs_match(self) -> bool:
        return not self.error and not self.uncounted and zoo.macs_agree(self.macs, self.ops)

    @property
    def explanation(self) -> str:
        if self.error:
            return "-"
        if self.file_params == self.num_params:
            return "same"
        parts = []
        if self.bn_affine:
            parts.append(f"−{self.bn_affine:,} BatchNorm γ, β folded into the convs")
        if self.unexported:
            parts.append(f"−{self.unexported:,} in modules the eval forward never runs ({self.unexported_modules})")
        made = self.file_params - self.num_params + self.bn_affine + self.merged + self.unexported
        if made:
            parts.append(f"{made:+,} conv biases made by that folding" if self.bn_affine
                         else f"{made:+,} other (constant folding)")
        if self.merged:
            parts.append(f"−{self.merged:,} in tensors of equal values stored once (zeros of a random init)")
        return "; ".join(parts)


def merged_elements(path: Path) -> int:
    """Elements the exporter saved by storing equal-valued tensors once: it feeds each extra user
    through an ``Identity`` of the one stored tensor."""
    import math

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    sizes = {t.name: math.prod(t.dims) for t in graph.initializer}
    aliases: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in sizes:
            aliases[node.input[0]] = aliases.get(node.input[0], 0) + 1
    direct = {name for node in graph.node if node.op_type != "Identity" for name in node.input}
    return sum(sizes[name] * (count if name in direct else count - 1) for name, count in aliases.items())


def unexported_modules(model: nn.Module, layer_names: set[str]) -> dict[str, int]:
    """Parameters of modules with no row in the file's report, neither their own nor their parent's.

    BatchNorm is left out (folded away), and so is a module whose parent has a row: the parent may
    use its weights directly (``MultiheadAttention`` reads ``out_proj.weight`` without calling it).
    """
    found = {}
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        parent = name.rpartition(".")[0]
        if (name and own and name not in layer_names and parent not in layer_names
                and not isinstance(module, nn.modules.batchnorm._BatchNorm)):
            found[name] = own
    return found


def check(name: str, folder: Path) -> Row:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    row = Row(name, weights.meta["num_params"], weights.meta["_ops"])
    try:
        torch.manual_seed(0)
        model = resolve(name).build("cpu").eval()
        row.bn_affine = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                            for p in m.parameters(recurse=False))
        size = torchvision_input(name)[0]
        path = folder / f"{name}.onnx"
        start = time.perf_counter()
        with warnings.catch_warnings():  # not under no_grad: MultiheadAttention's fast path has no ONNX export
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.randn(1, *size),), str(path), dynamo=False)
        row.export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        report = nncost.profile_onnx(path)
        row.read_seconds = time.perf_counter() - start
        row.merged = merged_elements(path)
        path.unlink()
        row.file_params, row.macs = report.totals.params, report.totals.macs
        assert report.file_params is not None
        row.counted, row.excluded = len(report.file_params.counted), len(report.file_params.excluded)
        row.layer_names = {layer.name for layer in report.layers if layer.name}
        row.module_names = {name for name, _ in model.named_modules() if name}
        unexported = unexported_modules(model, row.layer_names)
        row.unexported = sum(unexported.values())
        row.unexported_modules = ", ".join(sorted({name.split(".")[0] for name in unexported}))
        row.uncounted = ", ".join(f"{u.op}×{u.calls}" for u in report.uncounted)
    except Exception as exc:  # a bench row, not a crash: the table says what failed
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return row


def markdown(rows: list[Row], command: str) -> str:
    agree = sum(r.macs_match for r in rows)
    lines = [
        "# ONNX exports of torchvision's classification models",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"onnx {__import__('onnx').__version__}, Python {platform.python_version()}, CPU).",
        "",
        f"**MACs agree with torchvision's `_ops` for {agree} of {len(rows)} models** "
        "(within 0.5%, or to the three decimals `_ops` is published with).",
        "",
        "The module's parameters are torchvision's `num_params`; the file's are the tensors the export",
        "stores (see [onnx.md](onnx.md)). Export with `torch.onnx.export(model, x, path, dynamo=False)`.",
        "",
        "| model | module params | file params | difference explained | MACs (G) | `_ops` | error | MACs agree |"
        " uncounted | export s | read s |",
        "|---|---:|---:|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        error = f"{(r.macs / 1e9 - r.ops) / r.ops:+.3%}" if not r.error and r.ops else "-"
        lines.append(
            f"| {r.name} | {r.num_params:,} | {r.file_params:,} | {r.explanation} | {r.macs / 1e9:.3f} | {r.ops:.3f} "
            f"| {error} | {'yes' if r.macs_match else 'NO'} | {r.uncounted or r.error or '-'} "
            f"| {r.export_seconds:.1f} | {r.read_seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", nargs="+", help="these models only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "onnx_zoo.md")
    parser.add_argument("--write-docs", action="store_true", help="write the table to --out instead of printing it")
    parser.add_argument("--max-params", type=float, default=200e6,
                        help="skip larger models (an export over 2 GB needs external data; default 200e6)")
    args = parser.parse_args(argv)
    names = args.only or [name for family, name in zoo.models(["classification"])]
    skipped = [n for n in names if torchvision.models.get_model_weights(n).DEFAULT.meta["num_params"] > args.max_params]
    names = [n for n in names if n not in skipped]
    command = "python bench/onnx_zoo.py" + (" --only " + " ".join(args.only) if args.only else "")
    rows: list[Row] = []

    def text() -> str:
        done = markdown(rows, command)
        if len(rows) < len(names):
            done += f"\nNot yet run: {', '.join(names[len(rows):])}.\n"
        if skipped:
            done += f"\nSkipped (over {args.max_params:,.0f} parameters): {', '.join(skipped)}.\n"
        return done

    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            row = check(name, Path(folder))
            print(f"{name}: file {row.file_params:,} / module {row.num_params:,} params, "
                  f"{row.macs / 1e9:.3f} G MACs vs {row.ops}, {'ok' if row.macs_match else 'MISMATCH'} "
                  f"{row.error or row.uncounted}", file=sys.stderr, flush=True)
            rows.append(row)
            if args.write_docs:
                args.out.write_text(text())  # after every model: an interrupted run keeps its rows
    if not args.write_docs:
        print(text())
    return 0 if all(r.macs_match for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
