"""Backward operators, met when the memory simulator runs a training step.

Conventions, chosen to mirror the forward ones:

* convolution: the input gradient and the weight gradient each cost the forward's MACs (when
  autograd asks for them: the first layer needs no input gradient, a frozen layer no weight
  gradient); the bias gradient one FLOP per output element.
* fused attention: five products, dense like the forward: the scores ``Q·Kᵀ`` recomputed (the
  fused kernels keep only the softmax's log-sum-exp, never the scores), then the four gradient
  products (dV = Pᵀ·dO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q); ``B·H·L·S·(3E + 2Ev)`` MACs, as
  PyTorch's ``FlopCounterMode`` counts them; softmax backward 4 FLOPs per score.  SDPA's math
  path runs as separate operators and keeps its scores, so it counts the four products only.
* recurrent kernels: twice the forward's MACs (gradients of inputs and hidden states, and of the
  weights).
* normalisation with computed statistics: 8 FLOPs per element for the input gradient, 1 each
  for the weight and bias gradients; with running statistics (inference BatchNorm) 2.
* activation functions: 2 FLOPs per element (the derivative, then the product with the
  incoming gradient).  Softmax: 4 per element.
* pooling and interpolation: the forward's FLOPs (each window or tap accumulates a gradient);
  max pooling and nearest interpolation one add per incoming gradient element, an embedding one
  per gathered gradient element.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.aten.attention import attention_cost
from nncost.rules.aten.conv import conv_cost
from nncost.rules.aten.elementwise import per_output
from nncost.rules.aten.pool import adaptive_window_sum
from nncost.rules.aten.rnn import cudnn_rnn, mkldnn_rnn_layer
from nncost.rules.registry import Cost, Shape, numel

SOFTMAX_BACKWARD_FLOPS = 4
STATS_BACKWARD_FLOPS = 8
ACTIVATION_BACKWARD_FLOPS = 2


@ATEN.rule(
    "convolution_backward",
    unit="conv",
    formula="MACs = forward MACs × ([grad input] + [grad weight]); FLOPs = 2·MACs + numel(grad_out) if grad bias",
)
def convolution_backward(grad_out: Shape, x: Shape, w: Shape, bias_sizes: Any, stride: Any, padding: Any,
                         dilation: Any, transposed: bool, output_padding: Any, groups: int, mask: Any,
                         *rest: Any, out: tuple[Shape, ...]) -> Cost:
    forward = conv_cost(x, w, grad_out, transposed=bool(transposed), bias=False)
    macs = forward.macs * (int(bool(mask[0])) + int(bool(mask[1])))
    return Cost(macs, 2 * macs + (numel(grad_out) if mask[2] else 0))


@ATEN.rule(
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward",
    "_scaled_dot_product_fused_attention_overrideable_backward",
    unit="attention",
    formula="q (B,H,L,E), k (B,H,S,E), v (B,H,S,Ev): MACs = B·H·L·S·(3E + 2Ev), Q·Kᵀ recomputed then dV, dP, dQ, "
    "dK, dense; FLOPs = 2·MACs + 4·B·H·L·S",
)
def sdpa_backward(grad_out: Shape, q: Shape, k: Shape, v: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    forward = attention_cost(q, k, v)
    scores = numel(q[:-2]) * q[-2] * k[-2]
    macs = 2 * forward.macs + scores * q[-1]  # the four gradient products and the recomputed Q·Kᵀ
    return Cost(macs, 2 * macs + SOFTMAX_BACKWARD_FLOPS * scores)


@ATEN.rule("mkldnn_rnn_layer_backward", unit="matmul", formula="MACs = 2 × forward MACs")
def mkldnn_rnn_layer_backward(x: Shape, w_ih: Shape, w_hh: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    forward = mkldnn_rnn_layer(x, w_ih, w_hh, out=out)
    return Cost(2 * forward.macs, 2 * forward.flops)


@ATEN.rule("_cudnn_rnn_backward", "miopen_rnn_backward", unit="matmul", formula="MACs = 2 × forward MACs")
def cudnn_rnn_backward(x: Shape, weights: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    forward = cudnn_rnn(x, weights, out=out)
    return Cost(2 * forward.macs, 2 * forward.flops)


def _norm_backward(x: Shape, training: bool, mask: Any) -> Cost:
    elements = numel(x)
    if not training:
        return Cost(0, 2 * elements)
    flops = (STATS_BACKWARD_FLOPS if mask[0] else 0) + int(bool(mask[1])) + int(bool(mask[2]))
    return Cost(0, flops * elements)


@ATEN.rule(
    "native_batch_norm_backward",
    unit="norm",
    formula="FLOPs = (8 + [grad weight] + [grad bias])·numel(x) with batch statistics, 2·numel(x) with running ones",
)
def batch_norm_backward(grad_out: Shape, x: Shape, weight: Any, running_mean: Any, running_var: Any,
                        save_mean: Any, save_invstd: Any, train: bool, eps: float, mask: Any,
                        *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _norm_backward(x, bool(train), mask)


@ATEN.rule("cudnn_batch_norm_backward", "miopen_batch_norm_backward", unit="norm",
           formula="FLOPs = 10·numel(x) (training statistics, weight and bias gradients)")
def cudnn_batch_norm_backward(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _norm_backward(x, True, (True, True, True))


@ATEN.rule("native_layer_norm_backward", unit="row-norm",
           formula="FLOPs = (8 + [grad weight] + [grad bias])·numel(x)")
def layer_norm_backward(grad_out: Shape, x: Shape, normalized_shape: Any, mean: Any, rstd: Any, weight: Any,
                        bias: Any, mask: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _norm_backward(x, True, mask)


@ATEN.rule("native_group_norm_backward", unit="row-norm",
           formula="FLOPs = (8 + [grad weight] + [grad bias])·numel(x)")
def group_norm_backward(grad_out: Shape, x: Shape, mean: Any, rstd: Any, weight: Any, n: int, c: int, hxw: int,
                        group: int, mask: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _norm_backward(x, True, mask)


ATEN.add(
    (
        "threshold_backward", "gelu_backward", "silu_backward", "sigmoid_backward", "tanh_backward",
        "hardtanh_backward", "hardswish_backward", "hardsigmoid_backward", "leaky_relu_backward",
        "elu_backward", "softplus_backward", "mish_backward", "log_sigmoid_backward", "glu_backward",
        "native_dropout_backward", "rrelu_with_noise_backward", "_prelu_kernel_backward",
    ),
    per_output(ACTIVATION_BACKWARD_FLOPS),
    unit="elementwise",
    formula="FLOPs = 2·numel(grad_input) (derivative, product with the incoming gradient)",
)
ATEN.add(
    ("_softmax_backward_data", "_log_softmax_backward_data"),
    per_output(SOFTMAX_BACKWARD_FLOPS),
    unit="elementwise",
    formula="FLOPs = 4·numel(grad_input)",
)


def _incoming(grad_out: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(grad_out))


ATEN.add(("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward"), _incoming, unit="pooling",
         formula="FLOPs = numel(grad_output): one accumulate per incoming gradient element")
ATEN.add(
    (
        "embedding_dense_backward", "upsample_nearest1d_backward", "upsample_nearest2d_backward",
        "upsample_nearest3d_backward", "_upsample_nearest_exact1d_backward", "_upsample_nearest_exact2d_backward",
        "_upsample_nearest_exact3d_backward", "nll_loss_backward", "nll_loss2d_backward",
    ),
    _incoming,
    unit="elementwise",
    formula="FLOPs = numel(grad_output): one accumulate per incoming gradient element",
)


@ATEN.rule("avg_pool1d_backward", "avg_pool2d_backward", "avg_pool3d_backward", unit="elementwise",
           formula="FLOPs = numel(grad_output)·∏kernel, as the forward")
def avg_pool_backward(grad_out: Shape, x: Shape, kernel: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    sizes = list(kernel)
    sizes = sizes * (len(x) - 2) if len(sizes) == 1 else sizes
    window = 1
    for k in sizes:
        window *= k
    return Cost(0, numel(grad_out) * window)


@ATEN.rule("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward", unit="elementwise",
           formula="FLOPs as the forward's exact windows")
def adaptive_pool_backward(grad_out: Shape, x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    dims = len(grad_out) - 2
    windows = 1
    for size_in, size_out in zip(x[-dims:], grad_out[-dims:], strict=True):
        windows *= adaptive_window_sum(size_in, size_out)
    return Cost(0, numel(x[:-dims]) * windows)


ATEN.add(("adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward"), adaptive_pool_backward, unit="pooling",
         formula="FLOPs as the forward's exact windows")


def _interpolate_backward(taps: int) -> Any:
    def rule(grad_out: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
        return Cost(0, numel(grad_out) * (2 * taps - 1))

    return rule


for _ops, _taps in (
    (("upsample_linear1d_backward",), 2),
    (("upsample_bilinear2d_backward", "_upsample_bilinear2d_aa_backward"), 4),
    (("upsample_trilinear3d_backward",), 8),
    (("upsample_bicubic2d_backward", "_upsample_bicubic2d_aa_backward"), 16),
):
    ATEN.add(_ops, _interpolate_backward(_taps), unit="elementwise",
             formula=f"FLOPs = numel(grad_output)·(2·{_taps} − 1), as the forward")


@ATEN.rule("nll_loss_forward", "nll_loss2d_forward", unit="elementwise",
           formula="loss: FLOPs = numel(target) (gather and accumulate)")
def nll_loss(x: Shape, target: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(target))


@ATEN.rule("mse_loss", "mse_loss_backward", "l1_loss", "smooth_l1_loss", "smooth_l1_loss_backward",
           "binary_cross_entropy", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
           unit="elementwise", formula="loss: FLOPs = 3·numel(input) (difference, square or its derivative, sum)")
def pointwise_loss(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 3 * numel(x))
