"""One layer at a time, what each peer counts: the figures of docs/conventions.md's peer table.

    pip install thop ptflops fvcore torchinfo
    PYTHONPATH=src python bench/peer_conventions.py     # prints the Markdown table

Each case is one layer on one input, batch 1, in eval mode.  Every tool gets a fresh copy of the
layer (thop writes buffers into the model it profiles) and reports its figure exactly as the tool
names it: FlopCounterMode's FLOPs, fvcore's "flops" (one per multiply-add), torchinfo's and
thop's and ptflops' MACs; nncost gives MACs and FLOPs.  A tool that is not installed, or raises,
shows its error in the cell.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable

import torch
from torch import nn

CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "Conv2d(64, 64, 3, padding=1), bias, 1×64×56×56": (lambda: nn.Conv2d(64, 64, 3, padding=1), (1, 64, 56, 56)),
    "Linear(512, 1000), bias, 1×512": (lambda: nn.Linear(512, 1000), (1, 512)),
    "BatchNorm2d(64), eval, 1×64×56×56": (lambda: nn.BatchNorm2d(64), (1, 64, 56, 56)),
    "ReLU, 1×64×56×56": (lambda: nn.ReLU(), (1, 64, 56, 56)),
    "MaxPool2d(3, 2, 1), 1×64×112×112": (lambda: nn.MaxPool2d(3, 2, 1), (1, 64, 112, 112)),
    "AdaptiveAvgPool2d(1), 1×512×7×7": (lambda: nn.AdaptiveAvgPool2d(1), (1, 512, 7, 7)),
    "LayerNorm(768), 1×197×768": (lambda: nn.LayerNorm(768), (1, 197, 768)),
    "Softmax(-1), 1×12×197×197": (lambda: nn.Softmax(-1), (1, 12, 197, 197)),
    "Upsample(×2, bilinear), 1×64×28×28": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 64, 28, 28)),
}


def nncost_figure(model: nn.Module, x: torch.Tensor) -> str:
    import nncost

    totals = nncost.profile(model, inputs=(x,)).totals
    return f"{totals.macs:,} MACs / {totals.flops:,} FLOPs"


def flop_counter(model: nn.Module, x: torch.Tensor) -> str:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode, torch.no_grad():
        model(x)
    return f"{mode.get_total_flops():,}"


def fvcore_figure(model: nn.Module, x: torch.Tensor) -> str:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return f"{int(analysis.total()):,}"


def torchinfo_figure(model: nn.Module, x: torch.Tensor) -> str:
    from torchinfo import summary

    return f"{summary(model, input_data=x, verbose=0).total_mult_adds:,}"


def thop_figure(model: nn.Module, x: torch.Tensor) -> str:
    import thop

    with torch.no_grad():
        macs, _ = thop.profile(model, inputs=(x,), verbose=False)
    return f"{int(macs):,}"


def ptflops_figure(backend: str) -> Callable[[nn.Module, torch.Tensor], str]:
    def figure(model: nn.Module, x: torch.Tensor) -> str:
        from ptflops import get_model_complexity_info

        macs, _ = get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, backend=backend,
                                            print_per_layer_stat=False, verbose=False,
                                            input_constructor=lambda _: x)
        return f"{int(macs):,}"

    return figure


TOOLS: dict[str, Callable[[nn.Module, torch.Tensor], str]] = {
    "nncost": nncost_figure,
    "FlopCounterMode (FLOPs)": flop_counter,
    "fvcore (multiply-adds)": fvcore_figure,
    "torchinfo (mult-adds)": torchinfo_figure,
    "thop (MACs)": thop_figure,
    "ptflops (MACs)": ptflops_figure("pytorch"),
    "ptflops aten (MACs)": ptflops_figure("aten"),
}


def cell(tool: Callable[[nn.Module, torch.Tensor], str], make: Callable[[], nn.Module], shape: tuple[int, ...]) -> str:
    torch.manual_seed(0)
    model, x = copy.deepcopy(make()).eval(), torch.randn(shape)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return tool(model, x)
    except Exception as error:  # a peer that fails is a finding, not a crash of the table
        return f"error: {type(error).__name__}"


def table() -> str:
    lines = ["| layer, input | " + " | ".join(TOOLS) + " |", "|---" * (len(TOOLS) + 1) + "|"]
    for name, (make, shape) in CASES.items():
        lines.append(f"| {name} | " + " | ".join(cell(tool, make, shape) for tool in TOOLS.values()) + " |")
    return "\n".join(lines)


def flash_attention_calls(b: int = 2, s: int = 128, h: int = 8, d: int = 64) -> dict[str, Callable[[], object]]:
    """The flash kernels called directly on meta tensors, as PyTorch's test_flash_attention_*_flop_layout."""
    aten = torch.ops.aten

    def t(*shape: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        return torch.empty(*shape, device="meta", dtype=dtype)

    q, lse, rng = t(b, s, h, d), t(b, h, s, dtype=torch.float32), t(2, dtype=torch.int64)
    return {
        f"_flash_attention_forward, q k v {b}×{s}×{h}×{d} (meta)":
            lambda: aten._flash_attention_forward(q, q, q, None, None, s, s, 0.0, False, False),
        f"_flash_attention_backward, q k v {b}×{s}×{h}×{d} (meta)":
            lambda: aten._flash_attention_backward(q, q, q, q, q, lse, None, None, s, s, 0.0, False, rng, None),
    }


class Thunk(nn.Module):
    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, anchor: torch.Tensor) -> object:
        return self.fn()


def attention_table() -> str:
    """FlopCounterMode and nncost only: the other peers do not run on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    import nncost

    lines = ["| kernel, shapes | nncost | FlopCounterMode (FLOPs) |", "|---|---|---|"]
    for name, fn in flash_attention_calls().items():
        with FlopCounterMode(display=False) as mode:
            fn()
        totals = nncost.profile(Thunk(fn), inputs=(torch.zeros(()),)).totals
        lines.append(f"| {name} | {totals.macs:,} MACs / {totals.flops:,} FLOPs | {mode.get_total_flops():,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
    print()
    print(attention_table())
