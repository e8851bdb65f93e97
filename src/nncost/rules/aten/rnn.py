"""Fused recurrent kernels (cuDNN, oneDNN).

On the meta device and on CPUs without oneDNN, ``nn.LSTM`` and ``nn.GRU`` decompose into
``addmm`` and elementwise calls that the other rules count.  The fused kernels take the same
weights: every weight matrix multiplies every (time step, batch) vector once, so
``MACs = T·B·Σ numel(W)`` over the input and hidden matrices of each layer and direction.
Gate arithmetic (bias adds, activations, state updates) is counted as 3 FLOPs per gate
element per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, numel

GATE_FLOPS = 3


def recurrent_cost(x: Shape, matrices: Sequence[Shape], gates_per_step: int) -> Cost:
    steps = numel(x[:-1])  # T·B, or the packed total
    macs = steps * sum(numel(m) for m in matrices)
    return Cost(macs, 2 * macs + GATE_FLOPS * steps * gates_per_step)


@ATEN.rule(
    "mkldnn_rnn_layer",
    unit="matmul",
    formula="one layer, one direction: MACs = T·B·(numel(W_ih) + numel(W_hh)); FLOPs = 2·MACs + 3·T·B·G",
)
def mkldnn_rnn_layer(x: Shape, w_ih: Shape, w_hh: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return recurrent_cost(x, (w_ih, w_hh), w_ih[0])


@ATEN.rule(
    "_cudnn_rnn",
    "miopen_rnn",
    unit="matmul",
    formula="all layers and directions: MACs = T·B·Σ numel(W) over 2-d weights; FLOPs = 2·MACs + 3·T·B·ΣG",
)
def cudnn_rnn(x: Shape, weights: Sequence[Shape], *rest: Any, out: tuple[Shape, ...]) -> Cost:
    matrices = [w for w in weights if len(w) == 2]
    # Layers above the first see the previous layer's output, not x; their W_ih already has
    # that width, and every layer runs once per (t, b), so the sum over matrices is exact.
    # Each layer and direction has W_ih and W_hh with G·H rows; a projection W_hr (proj_size)
    # has fewer and carries no gates.
    gate_rows = matrices[0][0]
    gates = sum(m[0] for m in matrices if m[0] == gate_rows) // 2
    return recurrent_cost(x, matrices, gates)
