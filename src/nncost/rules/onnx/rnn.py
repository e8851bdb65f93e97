"""ONNX recurrent layers: ``LSTM`` (4 gates), ``GRU`` (3), ``RNN`` (1).

As the fused ATen kernels: every weight matrix multiplies every (time step, batch) vector once,
``MACs = T·B·(numel(W) + numel(R))`` with ``W (dirs, G·H, I)`` and ``R (dirs, G·H, H)``, and
gate arithmetic (biases, activations, state updates) costs 3 FLOPs per gate element per step.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten.rnn import recurrent_cost
from nncost.rules.onnx import ONNX
from nncost.rules.registry import Cost, Shape

Inputs = tuple[Shape | None, ...]


@ONNX.rule("LSTM", "GRU", "RNN", unit="matmul",
           formula="X (T,B,I), W (dirs,G·H,I), R (dirs,G·H,H): MACs = T·B·(numel(W) + numel(R)); "
                   "FLOPs = 2·MACs + 3·T·B·dirs·G·H")
def recurrent(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    x, w, r = inputs[0], inputs[1], inputs[2]
    assert x is not None and w is not None and r is not None
    return recurrent_cost(x, (w, r), w[0] * w[1])
