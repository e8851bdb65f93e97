"""What PyTorch's CPU kernels (oneDNN, BLAS) hold inside one call, beyond their outputs.

Each rule was learnt by measuring single calls with the CPU allocator's own events
(``torch.profiler``, ``profile_memory=True``) and follows the code path that makes the
allocation; docs/memory.md gives the measured figures and the findings behind every rule.
The padded sizes are oneDNN's blocked layouts: channel dimensions rounded up to the vector
width of fp32 lanes (16 on AVX-512, 8 on AVX2), which is why the rules ask which instruction set
oneDNN runs: the CPU's, capped by ONEDNN_MAX_CPU_ISA.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

import torch
from torch._prims_common import suggest_memory_format

from nncost.hardware.catalogue import Allocator
from nncost.rules.kernel_memory import KernelMemory, nbytes, produced
from nncost.rules.kernel_memory.bitsandbytes import NOTE as BNB_NOTE
from nncost.rules.kernel_memory.bitsandbytes import gemm_4bit

CPU = KernelMemory(Allocator.CPU)
PAGE = 4096


@functools.cache
def simd_lanes() -> int:
    """fp32 lanes of the vectors oneDNN's kernels use, which pad blocked channel dimensions to them:
    16 where the CPU has AVX-512 and oneDNN may use it, else 8 (AVX2, as on AMD CPUs before Zen 4
    and older Intel ones).  oneDNN reads its cap from ``ONEDNN_MAX_CPU_ISA`` (or the older
    ``DNNL_MAX_CPU_ISA``) once; ATen's ``ATEN_CPU_CAPABILITY`` does not move it."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    allowed = cap in ("ALL", "DEFAULT") or cap.startswith(("AVX512", "AVX10"))
    return 16 if allowed and torch.cpu._is_avx512_supported() else 8


def padded(channels: int) -> int:
    lanes = simd_lanes()
    return -(-channels // lanes) * lanes


# -- convolution (oneDNN) ------------------------------------------------------------------------
def _uses_onednn(x: torch.Tensor, w: torch.Tensor, transposed: bool) -> bool:
    """PyTorch's CPU convolution goes to oneDNN for fp32 2-d convolutions."""
    return (x.dtype == torch.float32 and x.dim() == 4 and not transposed
            and torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled))


def blocked_operands(x: torch.Tensor, w: torch.Tensor, groups: int, out_spatial: int) -> tuple[int, int, int, int]:
    """Bytes of oneDNN's blocked copies of an NCHW convolution: (src, weights, dst, padded src).

    A first layer (groups 1, fewer input channels than a vector) is read from the plain src, so it
    has no src copy and its weights keep their input channels unpadded.
    """
    itemsize = x.element_size()
    n, cin, cout = x.shape[0], x.shape[1], w.shape[0]
    window = math.prod(w.shape[2:])
    plain_src = groups == 1 and cin < simd_lanes()
    src_padded = n * padded(cin) * math.prod(x.shape[2:]) * itemsize
    src = 0 if plain_src else src_padded
    weight_cin = cin // groups if groups > 1 else (cin if plain_src else padded(cin))
    weights = padded(cout) * weight_cin * window * itemsize
    dst = n * padded(cout) * out_spatial * itemsize
    return src, weights, dst, src_padded


@CPU.resizer("convolution")
def convolution_layout(args: tuple[Any, ...], out: Any) -> Any:
    """The CPU convolution's output is channels last when its input or its weight is (oneDNN's and the slow
    kernels' ``*_conv_use_channels_last``: measured for fp32, bf16 and fp64, transposed or not, 2-d and 3-d);
    the meta kernel always makes it contiguous, so a channels-last network (ConvNeXt) would reach the next
    kernels with the wrong layout."""
    x, w = args[0], args[1]
    if not isinstance(out, torch.Tensor) or out.dim() not in (4, 5):
        return out
    formats = {suggest_memory_format(x), suggest_memory_format(w)}
    layout = torch.channels_last if out.dim() == 4 else torch.channels_last_3d
    if layout not in formats or out.is_contiguous(memory_format=layout):
        return out
    return torch.empty(out.shape, dtype=out.dtype, device=out.device, memory_format=layout)


@CPU.rule("convolution", note="oneDNN copies src, weights and dst into blocked layouts; then reorders the dst "
                              "into the plain output")
def convolution(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    x, w, transposed, groups = args[0], args[1], bool(args[6]), int(args[8])
    if not _uses_onednn(x, w, transposed):
        return 0
    if not x.is_contiguous():  # channels last: no activation copies, the output is made first
        weights = blocked_operands(x, w, groups, 1)[1]
        return produced(outputs) + (weights if groups > 1 else 2 * weights)
    src, weights, dst, _ = blocked_operands(x, w, groups, math.prod(outputs[0].shape[2:]))
    return max(src + weights + dst, dst + produced(outputs))


@CPU.rule("convolution_backward", note="oneDNN's grad-input then grad-weight stages, each with blocked copies; a "
                                       "patch embedding's grad-weight takes a per-thread scratchpad instead; bf16: "
                                       "2-byte copies and the jit_bf16 grad-weight scratchpad (fp32 accumulators, "
                                       "transposed src and dY)")
def convolution_backward(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    dy, x, w = args[0], args[1], args[2]
    stride, transposed, groups, mask = list(args[4]), bool(args[7]), int(args[9]), list(args[10])
    if _bf16_jit_backward(args, outputs):
        return _bf16_backward(dy, x, w, list(args[5]), stride, mask, outputs)
    if not _uses_onednn(x, w, transposed):
        return 0
    dense_dy = dy.is_contiguous() or dy.is_contiguous(memory_format=torch.channels_last)
    dy_copy = 0 if dense_dy else nbytes(dy)  # the sum loss's expanded gradient is copied first
    dx = nbytes(x) if mask[0] else 0
    dw = nbytes(w) if mask[1] else 0
    db = produced(outputs) - dx - dw
    if not x.is_contiguous():
        return dy_copy + _channels_last_backward(dy, x, w, groups, mask, dx, db, outputs)
    src, weights, dy_blocked, src_padded = blocked_operands(x, w, groups, math.prod(dy.shape[2:]))
    stages = []
    if mask[0]:
        stages += [dy_blocked + weights + src_padded, src_padded + dx]
        if groups == 1 and max(stride) > 1:  # a strided grad-input holds one more input-sized buffer
            stages.append(src_padded + dx + nbytes(x))
    kernel = list(w.shape[2:])
    if mask[1] and min(kernel) >= 16 and kernel == stride:
        # a patch embedding: no reorders, but a per-thread scratchpad (measured on oneDNN 3.12, AVX-512)
        scratch = torch.get_num_threads() * (4 * nbytes(w) + nbytes(x[0]))
        stages += [dx + weights + scratch + db, dx + weights + dw + db]
    elif mask[1]:
        stages += [dx + dy_blocked + src + weights + db, dx + weights + dw + db + _narrow_avx2_accumulators(dy, x, w)]
    return dy_copy + max(stages, default=0)


def _narrow_avx2_accumulators(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> int:
    """AVX2's grad-weight of a 3×3 convolution whose output is at most 2 wide (a ResNet's last stage
    on small images) holds 7 more weight-sized buffers, whatever the batch from 2 up, and a little
    more that is left out (1/64 to 1/16 of the weights) on 24 shapes (64 to 512 channels, maps 1×1
    and 2×2, batch 2 to 16, 2 threads).  Not on AVX-512, nor from 3 wide; at batch 1 AVX2 takes yet
    another kernel, which holds less (not modelled: the rule stays above it)."""
    narrow = (simd_lanes() == 8 and list(w.shape[2:]) == [3, 3] and dy.shape[-1] <= 2 and x.shape[0] >= 2)
    return 7 * nbytes(w) if narrow else 0


def _bf16_jit_backward(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> bool:
    """A bf16 NCHW convolution whose grad-weight takes oneDNN's ``jit_bf16`` kernel (the one measured): dense
    (groups 1), k×k with k > 1 (1×1 takes ``jit_bf16_1x1``), undilated, and not a first layer (fewer than 16
    input channels take another layout), on a CPU with AVX-512."""
    x, w, dilation, transposed, groups, mask = args[1], args[2], list(args[6]), bool(args[7]), int(args[9]), args[10]
    return (x.dtype == torch.bfloat16 and w.dtype == torch.bfloat16 and x.dim() == 4 and not transposed
            and groups == 1 and bool(mask[1]) and x.is_contiguous() and x.shape[1] >= 16 and min(w.shape[2:]) > 1
            and dilation == [1, 1] and simd_lanes() == 16 and torch.backends.mkldnn.is_available()
            and bool(torch.backends.mkldnn.enabled) and all(t.dtype == torch.bfloat16 for t in outputs))


def _bf16_backward(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, padding: list[int], stride: list[int],
                   mask: list[bool], outputs: Sequence[torch.Tensor]) -> int:
    """bf16 convolution backward: the fp32 rule's stages with 2-byte blocked copies, and in grad-weight oneDNN's
    scratchpad (``_bf16_weight_scratchpad``).  Exact on single calls of 13 shapes (3×3 with stride 1 and 2,
    one 5×5; batch 1 to 16), with and without grad-input and bias."""
    dx = nbytes(x) if mask[0] else 0
    db = produced(outputs) - dx - nbytes(w)
    src, weights, dy_blocked, src_padded = blocked_operands(x, w, 1, math.prod(dy.shape[2:]))
    stages = []
    if mask[0]:
        stages += [dy_blocked + weights + src_padded, src_padded + dx]
        if max(stride) > 1:
            stages.append(src_padded + dx + nbytes(x))
    scratch = _bf16_weight_scratchpad(x.shape[0], x.shape[1], w.shape[0], tuple(x.shape[2:]), tuple(w.shape[2:]),
                                      tuple(dy.shape[2:]), (stride[0], stride[1]), (padding[0], padding[1]),
                                      bool(mask[2]), torch.get_num_threads())
    stages += [dx + dy_blocked + src + weights + scratch + db, dx + weights + nbytes(w) + db]
    return max(stages)


def _f32(v: float) -> float:
    """v rounded to C's float, as oneDNN's balance() computes its costs."""
    return float(struct.unpack("f", struct.pack("f", v))[0])


def _bf16_weight_scratchpad(n: int, cin: int, cout: int, spatial: tuple[int, ...], kernel: tuple[int, ...],
                            out: tuple[int, ...], stride: tuple[int, int], padding: tuple[int, int], bias: bool,
                            threads: int) -> int:
    """The scratchpad of oneDNN's ``jit_bf16`` grad-weight kernel (oneDNN 3.12,
    ``jit_avx512_core_bf16_conv_bwd_weights_kernel_f32_t::init_conf``/``init_scratchpad``/``balance``):
    transposed bf16 copies of src and dY per minibatch thread and channel block, one fp32 weight (and bias)
    accumulator per minibatch thread (the gradients are bf16), and barrier contexts.  oneDNN's registry books
    every entry with 128 B of alignment slack; a barrier context takes 8192 B (measured with one per entry: 4096
    B, page-aligned, is assumed).  The split of the threads over minibatch, output and input channel blocks is
    oneDNN's balance(), its costs in float as there.  Exact on 100 single calls without bias (3×3, stride 1 and
    2, 64-512 channels, 7-56 maps, batch 1-16, 2 threads; every split that 2 threads allow)."""
    lanes = 16
    ic, oc = -(-cin // lanes) * lanes, -(-cout // lanes) * lanes
    nb_ic, nb_oc = ic // lanes, oc // lanes
    (ih, iw), (kh, kw), (oh, ow), (sh, sw), (t_pad, l_pad) = spatial, kernel, out, stride, padding
    r_pad = max(0, (ow - 1) * sw + kw - (iw + l_pad))
    b_pad = max(0, (oh - 1) * sh + kh - (ih + t_pad))
    tr_pad = -(-max(l_pad, r_pad + 1) // 2) * 2
    tr_iw = -(-(-(-iw // sw) + tr_pad) // 2) * 2 * sw
    tr_ow = -(-ow // 2) * 2
    working_set = (lanes * tr_iw * 2 + lanes * tr_ow * 2) * max(1, b_pad, t_pad)
    full_spatial = (ih == oh and iw == ow and sh == sw == 1 and l_pad == kw // 2 and t_pad == kh // 2
                    and working_set <= 48 * 1024 and ic >= 128)
    work = n if full_spatial else n * oh  # what the minibatch threads split

    src_size, dst_size = n * ic * ih * tr_iw * 2, n * oc * oh * tr_ow * 2
    wei_size = oc * ic * kh * kw * 4
    scale = _f32(_f32(0.5 * (dst_size + src_size)) / wei_size)
    ratio = _f32(nb_oc / nb_ic)
    src_coef = float(max(int(_f32(1.0 / ratio)), 1)) * (4.0 if scale < 1.0 else 1.0)
    dst_coef, wei_coef = float(max(int(ratio), 1)), float(max(int(scale), 1))

    def cost(mb: int, oc_b: int, ic_b: int) -> float:
        src_v = src_coef
        for f in (-(-work // mb), 1, -(-nb_ic // ic_b), n, lanes, 1, ih, tr_iw):
            src_v = _f32(src_v * f)
        for d in (work, 1, sh, sw):
            src_v = _f32(src_v / d)
        wei_v = wei_coef
        for f in (1, -(-nb_oc // oc_b), -(-nb_ic // ic_b), kh, kw, 1, lanes, lanes):
            wei_v = _f32(wei_v * f)
        dst_v = dst_coef
        for f in (-(-work // mb), 1, -(-nb_oc // oc_b), n, lanes, 1, oh, tr_ow):
            dst_v = _f32(dst_v * f)
        dst_v = _f32(dst_v / work)
        return _f32(_f32(src_v + dst_v) + wei_v)

    best, split = cost(1, 1, 1), (1, 1, 1)
    for mb in range(1, min(threads, work) + 1):
        for oc_b in range(1, min(threads // mb, nb_oc) + 1):
            ic_b = min(threads // mb // oc_b, nb_ic)
            c = cost(mb, oc_b, ic_b)
            if c <= best:
                best, split = c, (mb, oc_b, ic_b)
    mb, oc_b, ic_b = split
    if threads // 2 < mb < threads:
        mb = min(work, threads)
    used = mb * oc_b * ic_b

    slack, barrier = 128, 4096 + 4096  # a barrier context: 4096 B, booked page-aligned (measured with one per entry)
    entries = [2 * (mb * nb_ic * lanes * tr_iw * ih + tr_pad) + slack]  # transposed src, with guard elements
    if oc_b > 1:
        entries.append(4096 * (used // oc_b) + 4096)
    entries.append(2 * mb * nb_oc * lanes * tr_ow * oh + slack)  # transposed dY
    if ic_b > 1:
        entries.append(4096 * (used // ic_b) + 4096)
    accumulators = 4 * (oc * ic * kh * kw + (oc if bias else 0)) * mb  # fp32, for the bf16 weight and bias gradients
    entries += [accumulators + slack, barrier]
    return sum(entries)


def _channels_last_backward(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, groups: int, mask: list[bool],
                            dx: int, db: int, outputs: Sequence[torch.Tensor]) -> int:
    """Channels-last input (ConvNeXt's layers).  Depthwise: with a grad-weight and a kernel of 5×5
    or more, a reduction buffer of C·k²·lanes² fp32 elements (256 on AVX-512, 64 on AVX2), whatever
    the batch and size; a 3×3 one a copy of the weights instead; the weights once more in any case
    (exact on 7 shapes of 3×3 to 7×7 with every gradient mask, 2 threads, on both).  Dense: weight
    copies around a grad-input scratchpad of about half of dY (approximate: 0.5-0.6 of dY measured)."""
    weights = nbytes(w)
    if groups > 1 and groups == x.shape[1]:
        kernel = math.prod(w.shape[2:])
        if not mask[1]:
            return produced(outputs) + weights + db
        reduction = x.shape[1] * kernel * simd_lanes() ** 2 * 4 if min(w.shape[2:]) >= 5 else weights
        return produced(outputs) + reduction + weights + db
    stages = [produced(outputs) + weights]
    if mask[0]:
        stages.append(2 * weights + dx + nbytes(dy) // 2)
    if mask[1]:
        stages.append(dx + 4 * weights + 2 * db)
    return max(stages)


# -- normalisation ---------------------------------------------------------------------------------
@CPU.rule("native_batch_norm_backward", note="grad_input is allocated before the contiguous fast path and again "
                                             "inside it")
def batch_norm_backward(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    dy, x, train, mask = args[0], args[1], bool(args[7]), list(args[9])
    twice = mask[0] and train and x.dtype == torch.float32 and x.is_contiguous() and dy.is_contiguous()
    return produced(outputs) + nbytes(x) if twice else 0


@CPU.rule("native_layer_norm", note="a non-contiguous input is copied (expect_contiguous)")
def layer_norm(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    return produced(outputs) + nbytes(args[0]) if not args[0].is_contiguous() else 0


@CPU.resizer("native_layer_norm")
def layer_norm_statistics(args: tuple[Any, ...], out: Any) -> Any:
    """The CPU kernel returns a 16-bit input's mean and inverse std (saved for backward) in the input's
    dtype, unless its weight or bias is fp32 (the mixed-type branch, what autocast gives); the meta
    kernel returns them in fp32, as CUDA's kernel does. Measured: bf16 LayerNorm, bf16 weights."""
    x, weight, bias = args[0], args[2], args[3]
    if not isinstance(out, tuple) or x.dtype not in (torch.float16, torch.bfloat16) or out[1].dtype == x.dtype:
        return out
    if any(isinstance(p, torch.Tensor) and p.dtype != x.dtype for p in (weight, bias)):
        return out
    return (out[0], *(torch.empty_like(statistic, dtype=x.dtype) for statistic in out[1:]))


@CPU.rule("native_layer_norm_backward", "_scaled_dot_product_flash_attention_for_cpu_backward",
          note="a non-contiguous grad_output (and input) is copied first")
def copies_non_contiguous(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    copies = sum(nbytes(t) for t in args[:2] if isinstance(t, torch.Tensor) and not t.is_contiguous())
    return produced(outputs) + copies if copies else 0


# -- matrix products (BLAS) ------------------------------------------------------------------------
def blas_readable(m: torch.Tensor) -> bool:
    """Can gemm read this matrix (its last two dims) as it is, or as its transpose?"""
    rows, cols = m.shape[-2], m.shape[-1]
    s0, s1 = m.stride(-2), m.stride(-1)
    return ((s1 == 1 or cols == 1) and s0 >= max(1, cols)) or ((s0 == 1 or rows == 1) and s1 >= max(1, rows))


def _copies(operands: Sequence[Any], outputs: Sequence[torch.Tensor]) -> int:
    copies = sum(nbytes(m) for m in operands if isinstance(m, torch.Tensor) and m.dim() >= 2 and not blas_readable(m))
    return produced(outputs) + copies if copies else 0


@CPU.rule("mm", "bmm", note="an operand gemm cannot read (a stride-0 expanded gradient) is cloned first")
def product_copies(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    return _copies(args[:2], outputs)


@CPU.rule("addmm", "baddbmm", note="an operand gemm cannot read (a stride-0 expanded gradient) is cloned first")
def accumulated_product_copies(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    return _copies(args[1:3], outputs)


# -- LSTM (oneDNN) ---------------------------------------------------------------------------------
def _good_ld(n: int, itemsize: int = 4) -> int:
    """oneDNN's rnn_utils::get_good_ld: 64-byte aligned, never a multiple of 256 elements."""
    align = 64 // itemsize
    ld = -(-n // align) * align
    return ld + align if ld % 256 == 0 else ld


def _page(n: int) -> int:
    return -(-n // PAGE) * PAGE


def lstm_workspace_bytes(seq: int, batch: int, input_size: int, hidden: int, itemsize: int = 4) -> int:
    """oneDNN's forward-training workspace of one LSTM layer and direction (rnn_utils::set_offsets),
    which autograd keeps for backward.  The forward parts are in the data type (``itemsize``: 4 for
    fp32, 2 for bf16), the gradient parts in fp32 (checked against bf16 calls on 6 shapes)."""
    rows = 2 * (seq + 1) * batch  # (layers + 1) × (steps + 1) × batch, one layer per call
    forward = [
        seq * batch * _good_ld(4 * hidden, itemsize),  # gates
        seq * batch * _good_ld(hidden, itemsize),  # h_t
        rows * _good_ld(max(input_size, hidden), itemsize),  # states (layer and iteration share it)
        rows * hidden,  # c states
    ]
    states_ld = _good_ld(max(input_size, hidden))
    gradients = [rows * states_ld, rows * states_ld, rows * hidden]  # diff states: layer, iteration, c
    return sum(_page(itemsize * n) for n in forward) + sum(_page(4 * n) for n in gradients)


@CPU.resizer("mkldnn_rnn_layer")
def lstm_workspace(args: tuple[Any, ...], out: Any) -> Any:
    """oneDNN's workspace, which the meta kernel leaves empty: made for training, and whenever grad mode is
    on (then freed after the call if nothing keeps it); not under ``no_grad`` in eval."""
    x, hidden, train = args[0], int(args[10]), bool(args[15])
    if x.dtype not in (torch.float32, torch.bfloat16) or not (train or torch.is_grad_enabled()):
        return out
    size = lstm_workspace_bytes(x.shape[0], x.shape[1], x.shape[2], hidden, x.element_size())
    return (*out[:3], torch.empty(size, dtype=torch.uint8, device=x.device))


@CPU.rule("mkldnn_rnn_layer", note="a bias copy, the weights reordered (gates padded for the training "
                                   "primitive), and a gates scratchpad")
def lstm_forward(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    x, w_ih, hidden, train = args[0], args[1], int(args[10]), bool(args[15])
    if x.dtype != torch.float32:
        return 0
    seq, batch, inputs = x.shape[0], x.shape[1], w_ih.shape[1]
    gates = _good_ld(4 * hidden)
    training_primitive = train or torch.is_grad_enabled()  # the one that makes a workspace
    weights = (inputs + hidden) * (gates if training_primitive else 4 * hidden) * 4
    return produced(outputs) + 4 * 4 * hidden + weights + seq * batch * gates * 4


@CPU.rule("mkldnn_rnn_layer_backward", note="the weights reordered, their gradients reordered where the padded "
                                            "leading dimension differs, and a gates scratchpad")
def lstm_backward(args: tuple[Any, ...], outputs: Sequence[torch.Tensor]) -> int:
    x, w_ih, hidden = args[0], args[1], int(args[15])
    if x.dtype != torch.float32:
        return 0
    seq, batch, inputs = x.shape[0], x.shape[1], w_ih.shape[1]
    gates = _good_ld(4 * hidden)
    weights = (inputs + hidden) * gates * 4
    weight_grads = sum(_good_ld(d) * 4 * hidden * 4 for d in (inputs, hidden) if _good_ld(d) != d)
    copies = sum(nbytes(t) for t in (args[7], *args[10:13]) if isinstance(t, torch.Tensor) and not t.is_contiguous())
    small = 4 * hidden * 4 + batch * hidden * 4  # a bias gradient and a state buffer
    return produced(outputs) + small + weights + weight_grads + seq * batch * gates * 4 + copies


CPU.rule("bitsandbytes::gemm_4bit", note=BNB_NOTE + "; one float32 absmax copy")(gemm_4bit(1))
