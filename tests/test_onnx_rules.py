"""ONNX cost rules against closed forms written here, each model read through the whole reader.

Output sizes come from the ONNX operator definitions (the same formulas as PyTorch's); each test
also checks the shape ONNX shape inference found, so a wrong formula here cannot hide.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nncost
from nncost.rules.onnx import ONNX
from nncost.rules.onnx.linear import einsum_sizes
from onnx_helpers import graph_model, one_node, tensor

SETTINGS: dict[str, Any] = {"deadline": None, "max_examples": 40}


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def check(report: nncost.Report, macs: int, flops: int, out_shape: tuple[int, ...] | None = None) -> None:
    assert report.uncounted == []
    if out_shape is not None:
        assert report.layers[-1].output_shapes == [out_shape]
    assert (report.totals.macs, report.totals.flops) == (macs, flops)


@settings(**SETTINGS)
@given(dims=st.integers(1, 3), groups=st.sampled_from([1, 2, 3]), ci_g=st.integers(1, 3), co_g=st.integers(1, 3),
       n=st.integers(1, 3), bias=st.booleans(), data=st.data())
def test_conv(dims: int, groups: int, ci_g: int, co_g: int, n: int, bias: bool, data: st.DataObject) -> None:
    kernel = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    dilation = [data.draw(st.integers(1, 2)) for _ in range(dims)]
    pads = [data.draw(st.integers(0, 2)) for _ in range(dims)]
    size = [d * (k - 1) + 1 + data.draw(st.integers(0, 6)) for k, d in zip(kernel, dilation, strict=True)]
    ci, co = groups * ci_g, groups * co_g
    weights = [tensor("w", (co, ci_g, *kernel))] + ([tensor("b", (co,))] if bias else [])
    model = one_node("Conv", {"x": (n, ci, *size)}, weights, kernel_shape=kernel, strides=stride,
                     dilations=dilation, pads=pads + pads, group=groups)
    out = tuple(conv_out(*a) for a in zip(size, kernel, stride, pads, dilation, strict=True))
    outputs = n * co * math.prod(out)
    macs = outputs * ci_g * math.prod(kernel)  # every output reads (Ci/g)·∏k input-weight pairs
    report = nncost.profile_onnx(model)
    check(report, macs, 2 * macs + (outputs if bias else 0), (n, co, *out))
    assert report.totals.params == co * ci_g * math.prod(kernel) + (co if bias else 0)


@settings(**SETTINGS)
@given(dims=st.integers(1, 3), groups=st.sampled_from([1, 2]), ci_g=st.integers(1, 3), co_g=st.integers(1, 3),
       bias=st.booleans(), data=st.data())
def test_conv_transpose(dims: int, groups: int, ci_g: int, co_g: int, bias: bool, data: st.DataObject) -> None:
    kernel = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    pads = [data.draw(st.integers(0, 1)) for _ in range(dims)]
    size = [data.draw(st.integers(1, 5)) for _ in range(dims)]
    out = tuple((s - 1) * st_ - 2 * p + k for s, st_, p, k in zip(size, stride, pads, kernel, strict=True))
    assume(all(o >= 1 for o in out))
    ci, co = groups * ci_g, groups * co_g
    weights = [tensor("w", (ci, co_g, *kernel))] + ([tensor("b", (co,))] if bias else [])
    model = one_node("ConvTranspose", {"x": (2, ci, *size)}, weights, kernel_shape=kernel, strides=stride,
                     pads=pads + pads, group=groups)
    macs = 2 * ci * math.prod(size) * co_g * math.prod(kernel)  # every input scattered through (Co/g)·∏k
    check(nncost.profile_onnx(model), macs, 2 * macs + (2 * co * math.prod(out) if bias else 0), (2, co, *out))


@settings(**SETTINGS)
@given(m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9), trans_a=st.booleans(), trans_b=st.booleans(),
       bias=st.booleans(), alpha=st.sampled_from([1.0, 0.5]))
def test_gemm(m: int, k: int, n: int, trans_a: bool, trans_b: bool, bias: bool, alpha: float) -> None:
    weights = [tensor("B", (n, k) if trans_b else (k, n))] + ([tensor("C", (n,))] if bias else [])
    model = one_node("Gemm", {"A": (k, m) if trans_a else (m, k)}, weights, transA=int(trans_a),
                     transB=int(trans_b), alpha=alpha)
    flops = 2 * m * k * n + m * n * (int(bias) + int(alpha != 1.0))
    check(nncost.profile_onnx(model), m * k * n, flops, (m, n))


@settings(**SETTINGS)
@given(batch_a=st.lists(st.sampled_from([1, 2, 3]), max_size=2), batch_b=st.lists(st.sampled_from([1, 2, 3]),
       max_size=2), m=st.integers(1, 5), k=st.integers(1, 5), n=st.integers(1, 5), a_vector=st.booleans(),
       b_vector=st.booleans())
def test_matmul_broadcasting(batch_a: list[int], batch_b: list[int], m: int, k: int, n: int, a_vector: bool,
                             b_vector: bool) -> None:
    a = (k,) if a_vector else (*batch_a, m, k)
    b = (k,) if b_vector else (*batch_b, k, n)
    try:
        expected = np.matmul(np.zeros(a), np.zeros(b)).shape  # numpy's rules are ONNX's
    except ValueError:
        assume(False)
        return
    model = graph_model([__import__("onnx").helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"])
    macs = math.prod(expected) * k  # every output element is a length-k dot product
    check(nncost.profile_onnx(model), macs, 2 * macs)


@pytest.mark.parametrize(("equation", "shapes", "macs", "flops"), [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5, 2 * 2 * 3 * 4 * 5),
    ("...ij,...jk->...ik", [(2, 3, 3, 4), (1, 3, 4, 5)], 2 * 3 * 3 * 4 * 5, 4 * 3 * 3 * 4 * 5),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)], 2 * 3 * 5 * 4, 4 * 3 * 5 * 4),
    ("ij,ij->ij", [(3, 4), (3, 4)], 0, 12),  # no summed index: elementwise
    ("ij->ji", [(3, 4)], 0, 0),  # a permutation
    ("ij->i", [(3, 4)], 0, 12),  # a sum over one operand: one FLOP per element read
    ("ij,jk", [(3, 4), (4, 5)], 60, 120),  # implicit output
])
def test_einsum(equation: str, shapes: list[tuple[int, ...]], macs: int, flops: int) -> None:
    from onnx import helper

    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=equation)
    check(nncost.profile_onnx(graph_model([node], dict(zip(names, shapes, strict=True)), ["y"])), macs, flops)


def test_einsum_labels_with_ellipsis() -> None:
    sizes, output, _ = einsum_sizes("...ij,jk", [(7, 2, 3), (3, 4)])
    assert sizes == {"…1": 7, "i": 2, "j": 3, "k": 4} and output == ["…1", "i", "k"]


@settings(**SETTINGS)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), training=st.booleans())
def test_batch_normalization(shape: list[int], training: bool) -> None:
    c = shape[1]
    weights = [tensor(n, (c,)) for n in ("scale", "bias", "mean", "var")]
    outputs = 3 if training else 1
    model = one_node("BatchNormalization", {"x": shape}, weights, n_outputs=outputs, training_mode=int(training))
    report = nncost.profile_onnx(model)
    # inference folds into a scale and a shift; training computes statistics: 5 + weight + bias
    check(report, 0, (7 if training else 2) * math.prod(shape))
    assert (report.totals.params, report.totals.buffers) == (2 * c, 2 * c)  # running stats are buffers


@settings(**SETTINGS)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), bias=st.booleans())
def test_layer_normalization(shape: list[int], bias: bool) -> None:
    weights = [tensor("scale", shape[-1:])] + ([tensor("bias", shape[-1:])] if bias else [])
    check(nncost.profile_onnx(one_node("LayerNormalization", {"x": shape}, weights, axis=-1)), 0,
          (5 + 1 + int(bias)) * math.prod(shape))


@pytest.mark.parametrize("op", ["GroupNormalization", "InstanceNormalization"])
def test_group_and_instance_normalization(op: str) -> None:
    shape = (2, 4, 3, 3)
    weights = [tensor("scale", (4,)), tensor("bias", (4,))]
    attrs = {"num_groups": 2} if op == "GroupNormalization" else {}
    check(nncost.profile_onnx(one_node(op, {"x": shape}, weights, **attrs)), 0, 7 * math.prod(shape))


@settings(**SETTINGS)
@given(dims=st.integers(1, 3), op=st.sampled_from(["MaxPool", "AveragePool"]), data=st.data())
def test_pooling(dims: int, op: str, data: st.DataObject) -> None:
    kernel = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(dims)]
    pads = [data.draw(st.integers(0, k // 2)) for k in kernel]
    size = [k + data.draw(st.integers(0, 6)) for k in kernel]
    model = one_node(op, {"x": (2, 3, *size)}, kernel_shape=kernel, strides=stride, pads=pads + pads)
    out = tuple(conv_out(s, k, st_, p, 1) for s, k, st_, p in zip(size, kernel, stride, pads, strict=True))
    check(nncost.profile_onnx(model), 0, 2 * 3 * math.prod(out) * math.prod(kernel), (2, 3, *out))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pooling_reads_every_element_once(op: str) -> None:
    check(nncost.profile_onnx(one_node(op, {"x": (2, 3, 5, 4)})), 0, 2 * 3 * 5 * 4, (2, 3, 1, 1))


@pytest.mark.parametrize(("mode", "per_output"), [("nearest", 0), ("linear", 2 * 4 - 1), ("cubic", 2 * 16 - 1)])
def test_resize(mode: str, per_output: int) -> None:
    scales = tensor("scales", (4,), value=[1, 1, 2, 3])
    model = one_node("Resize", {"x": (1, 3, 4, 5)}, [tensor("roi", (0,)), scales], mode=mode)
    check(nncost.profile_onnx(model), 0, 3 * 8 * 15 * per_output, (1, 3, 8, 15))


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Erf", "HardSigmoid", "HardSwish", "Sqrt", "Neg"])
def test_unary_elementwise_is_one_flop_per_element(op: str) -> None:
    check(nncost.profile_onnx(one_node(op, {"x": (2, 3, 4)})), 0, 24, (2, 3, 4))


def test_binary_elementwise_counts_the_broadcast_output() -> None:
    model = one_node("Add", {"x": (2, 1, 4), "z": (3, 1)})
    check(nncost.profile_onnx(model), 0, 2 * 3 * 4, (2, 3, 4))


def test_gelu_and_clip() -> None:
    check(nncost.profile_onnx(one_node("Gelu", {"x": (5, 7)}, opset=20)), 0, 35)
    clip = one_node("Clip", {"x": (5, 7)}, [tensor("lo", ()), tensor("hi", (), value=6.0)])
    check(nncost.profile_onnx(clip), 0, 35)


@pytest.mark.parametrize(("op", "per_element"), [("Softmax", 5), ("LogSoftmax", 5)])
def test_softmax(op: str, per_element: int) -> None:
    check(nncost.profile_onnx(one_node(op, {"x": (2, 3, 4)}, axis=-1)), 0, per_element * 24)


@pytest.mark.parametrize(("op", "per_input"), [("ReduceMean", 1), ("ReduceMax", 1), ("ReduceSumSquare", 2)])
def test_reductions_cost_per_input_element(op: str, per_input: int) -> None:
    model = one_node(op, {"x": (2, 3, 4)}, [tensor("axes", (1,), dtype=np.int64, value=[1])])
    check(nncost.profile_onnx(model), 0, per_input * 24, (2, 1, 4))


@settings(**SETTINGS)
@given(op=st.sampled_from(["LSTM", "GRU", "RNN"]), t=st.integers(1, 5), b=st.integers(1, 3), i=st.integers(1, 6),
       h=st.integers(1, 6), bidirectional=st.booleans())
def test_recurrent(op: str, t: int, b: int, i: int, h: int, bidirectional: bool) -> None:
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if bidirectional else 1
    weights = [tensor("W", (dirs, gates * h, i)), tensor("R", (dirs, gates * h, h)), tensor("B", (dirs, 2 * gates * h))]
    model = one_node(op, {"x": (t, b, i)}, weights, hidden_size=h,
                     direction="bidirectional" if bidirectional else "forward")
    # each step multiplies x_t by every W and h_{t-1} by every R; 3 FLOPs per gate element per step
    macs = t * b * dirs * gates * h * (i + h)
    check(nncost.profile_onnx(model), macs, 2 * macs + 3 * t * b * dirs * gates * h)


@settings(**SETTINGS)
@given(b=st.integers(1, 2), heads=st.integers(1, 3), length=st.integers(1, 6), source=st.integers(1, 6),
       e=st.integers(1, 4), ev=st.integers(1, 4))
def test_attention_opset_23(b: int, heads: int, length: int, source: int, e: int, ev: int) -> None:
    inputs = {"q": (b, heads, length, e), "k": (b, heads, source, e), "v": (b, heads, source, ev)}
    model = one_node("Attention", inputs, opset=23)
    scores = b * heads * length * source
    macs = scores * (e + ev)  # Q·Kᵀ and P·V, dense
    check(nncost.profile_onnx(model), macs, 2 * macs + 6 * scores, (b, heads, length, ev))


def test_movement_costs_no_flops_but_its_bytes() -> None:
    model = one_node("Transpose", {"x": (2, 3, 4)}, perm=[2, 0, 1])
    report = nncost.profile_onnx(model)
    check(report, 0, 0, (4, 2, 3))
    assert (report.totals.read_bytes, report.totals.write_bytes) == (24 * 4, 24 * 4)


def test_reshape_is_free() -> None:
    model = one_node("Reshape", {"x": (2, 3, 4)}, [tensor("shape", (2,), dtype=np.int64, value=[6, 4])])
    report = nncost.profile_onnx(model)
    check(report, 0, 0, (6, 4))
    assert report.totals.read_bytes == report.totals.write_bytes == 0


# -- the fused ONNX Runtime ops, as pure functions of shapes ----------------------------------


def test_microsoft_attention_rule() -> None:
    rule = ONNX.get("com.microsoft::Attention")
    assert rule is not None
    b, length, d, heads = 2, 5, 8, 2
    cost = rule.fn(((b, length, d), (d, 3 * d), (3 * d,)), {"num_heads": heads}, out=())
    projection = b * length * d * 3 * d
    scores = b * heads * length * length
    attention = scores * 2 * (d // heads)
    assert cost == (projection + attention, 2 * (projection + attention) + b * length * 3 * d + 6 * scores)


def test_microsoft_multi_head_attention_rule() -> None:
    rule = ONNX.get("com.microsoft::MultiHeadAttention")
    assert rule is not None
    b, length, source, d, heads = 2, 3, 7, 8, 4
    cost = rule.fn(((b, length, d), (b, source, d), (b, source, d)), {"num_heads": heads}, out=())
    assert cost.macs == b * heads * length * source * 2 * (d // heads)
    assert cost.flops == 2 * cost.macs + 6 * b * heads * length * source


def test_microsoft_skip_layer_norm_rule() -> None:
    rule = ONNX.get("com.microsoft::SkipLayerNormalization")
    assert rule is not None
    x = (2, 3, 8)
    # skip add 1 + statistics 5 + gamma 1 + beta 1
    assert rule.fn((x, x, (8,), (8,)), {}, out=()) == (0, 8 * 48)


def test_contrib_op_without_inferred_output_shape_is_still_counted() -> None:
    model = one_node("FastGelu", {"x": (2, 5)}, [tensor("bias", (5,))], domain="com.microsoft")
    report = nncost.profile_onnx(model)
    assert report.uncounted == [] and report.totals.flops == 2 * 10


def test_attention_with_a_kv_cache_attends_to_the_cache_too() -> None:
    rule = ONNX.get("Attention")
    assert rule is not None
    b, heads, length, past, e = 1, 2, 3, 10, 4
    q, kv, cache = (b, heads, length, e), (b, heads, length, e), (b, heads, past, e)
    scores = b * heads * length * (past + length)
    assert rule.fn((q, kv, kv, None, cache, cache), {}, out=()) == (scores * 2 * e, 4 * scores * e + 6 * scores)


def test_shapes_flow_through_onnx_runtime_fused_ops() -> None:
    from onnx import helper

    # SkipLayerNormalization and Gelu (com.microsoft) have no shape inference in onnx; the MatMul
    # after them must still be counted: 2·8·16·4 MACs
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["n"], domain="com.microsoft"),
        helper.make_node("Gelu", ["n"], ["g"], domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "w"], ["y"]),
    ]
    weights = [tensor("gamma", (16,)), tensor("beta", (16,)), tensor("w", (16, 4))]
    model = graph_model(nodes, {"x": (2, 8, 16), "skip": (2, 8, 16)}, ["y"], weights,
                        extra_opsets={"com.microsoft": 1})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", 1, [None] * 3))  # rank 3, sizes unknown
    report = nncost.profile_onnx(model)
    elements = 2 * 8 * 16
    macs = 2 * 8 * 16 * 4
    # skip add 1 + statistics 5 + gamma 1 + beta 1, then Gelu 1 per element
    check(report, macs, 2 * macs + 8 * elements + elements)
