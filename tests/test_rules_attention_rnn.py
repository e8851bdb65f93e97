"""Attention and recurrent layers against closed forms, on the meta device and run for real on CPU.

Attention is counted dense (``Q·Kᵀ`` and ``P·V``), causal or not: ``MACs = B·H·L·S·(E + Ev)``.
Recurrent layers: ``MACs = T·B·Σ_layers,directions (G·H·I_layer + G·H·H)`` with G = 4 (LSTM), 3 (GRU),
1 (plain RNN), ``I_layer`` the input size for layer 0 and ``H·directions`` above.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.rules import ATEN

SETTINGS: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
FUSED_CPU = "_scaled_dot_product_flash_attention_for_cpu"
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
RNN = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


class Attention(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, **self.options)


def counted_all(report: nncost.Report) -> bool:
    return report.uncounted == []


def ops(report: nncost.Report) -> list[str]:
    return [call.op for layer in report.layers for call in layer.self_ops]


def dense_attention_macs(batch: int, heads: int, length: int, source: int, e: int, ev: int) -> int:
    scores = batch * heads * length * source  # one score per (query, key) pair, mask or not
    return scores * e + scores * ev  # Q·Kᵀ: E MACs per score; P·V: Ev MACs per (query, key) pair


@settings(max_examples=40, **SETTINGS)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    length=st.integers(1, 6),
    source=st.integers(1, 6),
    e=st.integers(1, 8),
    ev=st.one_of(st.none(), st.integers(1, 8)),  # None: Ev = E, which the fused CPU kernel accepts
    causal=st.booleans(),
)
def test_sdpa_meta_and_cpu_agree_with_the_dense_count(
    batch: int, heads: int, length: int, source: int, e: int, ev: int | None, causal: bool
) -> None:
    ev = e if ev is None else ev
    q, k, v = torch.randn(batch, heads, length, e), torch.randn(batch, heads, source, e), torch.randn(
        batch, heads, source, ev)
    macs = dense_attention_macs(batch, heads, length, source, e, ev)
    meta = nncost.profile(Attention(is_causal=causal), inputs=(q, k, v))
    real = nncost.profile(Attention(is_causal=causal), inputs=(q, k, v), device="cpu")
    assert (meta.execution, real.execution) == ("meta", "real")
    assert meta.uncounted == [] and real.uncounted == []
    assert meta.totals.macs == macs
    assert real.totals.macs == macs
    if ev == e:
        # The fused CPU kernel ran: its rule alone makes the figure, 2·MACs + 6 FLOPs per score
        # (scale and a 5-FLOP softmax).
        assert ops(real) == [FUSED_CPU]
        assert real.totals.flops == 2 * macs + 6 * batch * heads * length * source


@settings(max_examples=20, **SETTINGS)
@given(
    batch=st.integers(1, 2),
    kv_heads=st.integers(1, 2),
    group=st.integers(1, 3),
    length=st.integers(1, 5),
    source=st.integers(1, 5),
    e=st.integers(1, 6),
    causal=st.booleans(),
)
def test_sdpa_grouped_query_attention_counts_every_query_head(
    batch: int, kv_heads: int, group: int, length: int, source: int, e: int, causal: bool
) -> None:
    heads = kv_heads * group
    q = torch.randn(batch, heads, length, e)
    k, v = torch.randn(batch, kv_heads, source, e), torch.randn(batch, kv_heads, source, e)
    macs = dense_attention_macs(batch, heads, length, source, e, e)
    for device in ("meta", "cpu"):
        report = nncost.profile(Attention(is_causal=causal, enable_gqa=True), inputs=(q, k, v), device=device)
        assert report.uncounted == []
        assert report.totals.macs == macs, device


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_sdpa_without_a_head_dimension(device: str) -> None:
    q, k, v = torch.randn(3, 5, 4), torch.randn(3, 7, 4), torch.randn(3, 7, 4)
    report = nncost.profile(Attention(), inputs=(q, k, v), device=device)
    assert report.totals.macs == 3 * 5 * 7 * (4 + 4)


@pytest.mark.parametrize(
    "op",
    [
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    ],
)
def test_fused_attention_rules(op: str) -> None:
    rule = ATEN.get(op)
    assert rule is not None
    b, h, length, source, e, ev = 2, 3, 5, 7, 8, 4
    q, k, v = (b, h, length, e), (b, h, source, e), (b, h, source, ev)
    macs = b * h * length * source * (e + ev)
    assert rule.fn(q, k, v, 0.0, True, out=((b, h, length, ev),)) == (macs, 2 * macs + 6 * b * h * length * source)


# -- recurrent layers --------------------------------------------------------------------------


def recurrent_macs(mode: str, input_size: int, hidden: int, layers: int, bidirectional: bool, steps: int,
                   batch: int, proj: int = 0) -> int:
    gates = GATES[mode] * hidden
    directions = 2 if bidirectional else 1
    out = proj or hidden  # what each direction emits, and what W_hh multiplies
    per_step = 0
    for layer in range(layers):
        width = input_size if layer == 0 else out * directions
        per_step += directions * (gates * width + gates * out + out * hidden * (proj > 0))
    return steps * batch * per_step


def recurrent_params(mode: str, input_size: int, hidden: int, layers: int, bidirectional: bool, bias: bool,
                     proj: int = 0) -> int:
    gates = GATES[mode] * hidden
    directions = 2 if bidirectional else 1
    out = proj or hidden
    total = 0
    for layer in range(layers):
        width = input_size if layer == 0 else out * directions
        total += directions * (gates * width + gates * out + (2 * gates if bias else 0) + proj * hidden)
    return total


@st.composite
def rnn_configs(draw: st.DrawFn, max_layers: int = 3) -> dict[str, Any]:
    return {
        "mode": draw(st.sampled_from(sorted(GATES))),
        "input_size": draw(st.integers(1, 6)),
        "hidden": draw(st.integers(1, 6)),
        "layers": draw(st.integers(1, max_layers)),
        "bidirectional": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "steps": draw(st.integers(1, 4)),
        "batch": draw(st.integers(1, 3)),
    }


def profile_rnn(c: dict[str, Any], device: str, proj: int = 0) -> nncost.Report:
    options = {"proj_size": proj} if proj else {}
    module = RNN[c["mode"]](c["input_size"], c["hidden"], c["layers"], bias=c["bias"], batch_first=c["batch_first"],
                            bidirectional=c["bidirectional"], **options)
    shape = (c["batch"], c["steps"]) if c["batch_first"] else (c["steps"], c["batch"])
    return nncost.profile(module, inputs=torch.randn(*shape, c["input_size"]), device=device)


def expected_rnn(c: dict[str, Any], proj: int = 0) -> tuple[int, int]:
    macs = recurrent_macs(c["mode"], c["input_size"], c["hidden"], c["layers"], c["bidirectional"], c["steps"],
                          c["batch"], proj)
    params = recurrent_params(c["mode"], c["input_size"], c["hidden"], c["layers"], c["bidirectional"], c["bias"],
                              proj)
    return macs, params


@settings(max_examples=50, **SETTINGS)
@given(rnn_configs())
def test_recurrent_layers_on_meta(c: dict[str, Any]) -> None:
    macs, params = expected_rnn(c)
    report = profile_rnn(c, "meta")
    assert counted_all(report)
    assert (report.totals.macs, report.totals.params) == (macs, params)


@settings(max_examples=12, **SETTINGS)
@given(rnn_configs(max_layers=2))
def test_recurrent_layers_run_for_real_on_cpu(c: dict[str, Any]) -> None:
    # On CPU nn.LSTM runs oneDNN's fused mkldnn_rnn_layer, one call per layer and direction;
    # GRU and RNN decompose into addmm calls.  The MACs must not depend on which.
    macs, params = expected_rnn(c)
    report = profile_rnn(c, "cpu")
    assert report.execution == "real"
    assert counted_all(report)
    assert (report.totals.macs, report.totals.params) == (macs, params)
    if c["mode"] == "LSTM":
        directions = 2 if c["bidirectional"] else 1
        assert ops(report).count("mkldnn_rnn_layer") == c["layers"] * directions


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize(
    ("layers", "bidirectional", "batch_first"), [(1, False, False), (2, True, True), (3, True, False)]
)
def test_recurrent_meta_and_cpu_give_the_same_macs(mode: str, layers: int, bidirectional: bool,
                                                   batch_first: bool) -> None:
    c = {"mode": mode, "input_size": 5, "hidden": 7, "layers": layers, "bidirectional": bidirectional,
         "batch_first": batch_first, "bias": True, "steps": 4, "batch": 3}
    meta, real = profile_rnn(c, "meta"), profile_rnn(c, "cpu")
    macs = recurrent_macs(mode, 5, 7, layers, bidirectional, 4, 3)
    assert meta.totals.macs == real.totals.macs == macs
    if mode == "LSTM":
        assert "mkldnn_rnn_layer" in ops(real) and "mkldnn_rnn_layer" not in ops(meta)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@settings(max_examples=15, **SETTINGS)
@given(rnn_configs(max_layers=2), st.integers(1, 5), st.sampled_from(["meta", "cpu"]))
def test_lstm_with_projections(c: dict[str, Any], proj: int, device: str) -> None:
    # proj_size P: W_hh is (4H, P) and every step adds the projection W_hr (P, H).
    c = {**c, "mode": "LSTM", "hidden": max(c["hidden"], proj + 1)}  # PyTorch needs P < H
    macs, params = expected_rnn(c, proj)
    report = profile_rnn(c, device, proj)
    assert report.uncounted == []
    assert (report.totals.macs, report.totals.params) == (macs, params)


@pytest.mark.parametrize("mode", ["GRU", "RNN"])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_batch_first_gru_and_rnn_have_nothing_uncounted(mode: str, device: str) -> None:
    report = nncost.profile(RNN[mode](3, 4, batch_first=True), inputs=torch.randn(2, 5, 3), device=device)
    assert report.totals.macs == recurrent_macs(mode, 3, 4, 1, False, 5, 2)
    assert report.uncounted == []


class Packed(nn.Module):
    """A recurrent layer over padded sequences of different lengths, packed and unpacked again."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.rnn = RNN[mode](5, 7, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0]


def profile_packed(mode: str, device: str) -> nncost.Report:
    # On meta, the lengths cannot stay on the CPU as PyTorch requires: nncost falls back to a real run.
    return nncost.profile(Packed(mode), inputs=(torch.randn(3, 4, 5), torch.tensor([4, 2, 1])), device=device)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_packed_sequences_count_only_the_real_steps(mode: str, device: str) -> None:
    report = profile_packed(mode, device)
    steps = 4 + 2 + 1  # (time step, sequence) pairs that exist
    assert report.totals.macs == steps * GATES[mode] * 7 * (5 + 7)
    assert report.uncounted == []


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_packed_sequences_have_nothing_uncounted(device: str) -> None:
    assert profile_packed("LSTM", device).uncounted == []


# -- the fused recurrent rules as pure functions -----------------------------------------------


def flat_weight_shapes(module: nn.RNNBase) -> list[tuple[int, ...]]:
    """The weight list cuDNN's ``_cudnn_rnn`` receives: the module's ``_flat_weights``, in order."""
    return [tuple(w.shape) for w in module._flat_weights]


@settings(max_examples=60, deadline=None)
@given(rnn_configs(), st.sampled_from([0, 1, 2]))
def test_cudnn_rnn_rule_macs(c: dict[str, Any], proj: int) -> None:
    if c["mode"] != "LSTM" or proj >= c["hidden"]:
        proj = 0
    module = RNN[c["mode"]](c["input_size"], c["hidden"], c["layers"], bias=c["bias"],
                            bidirectional=c["bidirectional"], **({"proj_size": proj} if proj else {}))
    rule = ATEN.get("_cudnn_rnn")
    assert rule is not None
    x = (c["steps"], c["batch"], c["input_size"])
    cost = rule.fn(x, flat_weight_shapes(module), 4 if c["bias"] else 2, None, out=())
    assert cost.macs == recurrent_macs(c["mode"], c["input_size"], c["hidden"], c["layers"], c["bidirectional"],
                                       c["steps"], c["batch"], proj)
    packed = rule.fn((c["steps"] * c["batch"] - 1, c["input_size"]), flat_weight_shapes(module), 2, None, out=())
    assert packed.macs * c["steps"] * c["batch"] == cost.macs * (c["steps"] * c["batch"] - 1)


def cudnn_flops(mode: str, layers: int, bidirectional: bool, bias: bool, proj: int) -> tuple[int, int]:
    input_size, hidden, steps, batch = 5, 6, 3, 2
    options = {"proj_size": proj} if proj else {}
    module = RNN[mode](input_size, hidden, layers, bias=bias, bidirectional=bidirectional, **options)
    rule = ATEN.get("_cudnn_rnn")
    assert rule is not None
    cost = rule.fn((steps, batch, input_size), flat_weight_shapes(module), 4, None, out=())
    macs = recurrent_macs(mode, input_size, hidden, layers, bidirectional, steps, batch, proj)
    assert cost.macs == macs
    # The documented convention: 3 FLOPs per gate element per step, in every layer and direction.
    directions = 2 if bidirectional else 1
    gate_elements = GATES[mode] * hidden * layers * directions
    return cost.flops, 2 * macs + 3 * steps * batch * gate_elements


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize(("layers", "bidirectional", "bias"), [(1, False, True), (2, True, True), (3, False, False)])
def test_cudnn_rnn_rule_flops(mode: str, layers: int, bidirectional: bool, bias: bool) -> None:
    got, expected = cudnn_flops(mode, layers, bidirectional, bias, proj=0)
    assert got == expected


@pytest.mark.parametrize(("layers", "bidirectional", "bias"), [(1, False, True), (2, True, True), (2, False, False)])
def test_cudnn_rnn_rule_flops_with_projections(layers: int, bidirectional: bool, bias: bool) -> None:
    got, expected = cudnn_flops("LSTM", layers, bidirectional, bias, proj=2)
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.booleans())
def test_mkldnn_rnn_layer_rule(steps: int, batch: int, width: int, hidden: int, batch_first: bool) -> None:
    # one LSTM layer, one direction: W_ih (4H, I), W_hh (4H, H), then the biases
    rule = ATEN.get("mkldnn_rnn_layer")
    assert rule is not None
    x = (batch, steps, width) if batch_first else (steps, batch, width)
    weights = ((4 * hidden, width), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,))
    cost = rule.fn(x, *weights, (1, batch, hidden), (1, batch, hidden), False, [], 2, hidden, 1, True, False,
                   batch_first, False, out=())
    macs = steps * batch * 4 * hidden * (width + hidden)
    assert cost == (macs, 2 * macs + 3 * steps * batch * 4 * hidden)
