"""Which kernels a device would run, where meta tensors would run others.

On meta tensors PyTorch's composite operators sometimes take another path than on the device
being simulated, and the path decides what is allocated and saved for backward:

* ``F.linear`` adds its bias in place after a batched matmul on every device, but meta tensors
  count as tensor subclasses there and get an out-of-place add (all hardware);
* ``scaled_dot_product_attention`` asks the device which fused kernel to use, and meta tensors
  always get the math path, which writes the scores and the probabilities out: the CPU takes its
  flash kernel whenever it can (``device="cpu"``); a CUDA GPU takes flash attention or the
  memory-efficient kernel by the checks of PyTorch's ``sdp_utils.cpp`` (``device="cuda"``);
* ``nn.LSTM`` on the CPU runs oneDNN, one ``mkldnn_rnn_layer`` per layer, where meta runs the
  per-step decomposition (``device="cpu"``);
* ``F.dropout`` in training runs the fused ``native_dropout`` on CUDA, which keeps a one-byte
  bool mask for backward, where meta tensors (like the CPU) multiply by a noise tensor of the
  input's dtype (``is_fused_kernel_acceptable`` in ``Dropout.cpp``; ``device="cuda"``).

:class:`KernelPaths` is a ``TorchFunctionMode`` that sends these calls down the device's path
(``device="meta"`` keeps only the linear layers' path; ``fused_attention=False`` keeps meta's
attention).  It changes no global state: it is active only inside a capture.  :func:`backward`
runs a backward pass with it still active, so that the forwards activation checkpointing
recomputes there take the same paths as the first time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from nncost.capture.tracer import Tracer

FLASH = int(torch.nn.attention.SDPBackend.FLASH_ATTENTION.value)
LSTM_MODE = 2  # ideep::rnn_kind::LSTM, as RNN.cpp passes it to mkldnn_rnn_layer
SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
LINEAR, SDPA, MHA, LSTM = F.linear, F.scaled_dot_product_attention, F.multi_head_attention_forward, torch._VF.lstm
DROPOUT = F.dropout
DROPOUT_ARGS = ("input", "p", "training", "inplace")


class KernelPaths(TorchFunctionMode):
    """Sends the calls listed in the module docstring down the simulated device's kernels."""

    def __init__(self, tracer: Tracer, device: str, *, fused_attention: bool = True) -> None:
        super().__init__()
        self.tracer = tracer
        self.cpu = device == "cpu"
        self.cuda = device == "cuda"
        self.fused_attention = fused_attention

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is LINEAR:
            outer, self.tracer.inside_linear = self.tracer.inside_linear, True
            try:
                return func(*args, **kwargs)
            finally:
                self.tracer.inside_linear = outer
        if func is MHA:
            return self._seeing_inner_calls(func, args, kwargs)
        if self.cpu and func is SDPA and cpu_sdpa_backend(args, kwargs) == FLASH:
            return flash_attention_for_cpu(args, kwargs)
        if self.cuda and self.fused_attention and func is SDPA:
            backend = cuda_sdpa_backend(_sdpa_arguments(args, kwargs))
            if backend != "math":
                return fused_attention_for_cuda(backend, _sdpa_arguments(args, kwargs))
        if self.cpu and func is LSTM and onednn_lstm_applies(args):
            return onednn_lstm(args)
        if self.cuda and func is DROPOUT and fused_dropout_applies(args, kwargs):
            return fused_dropout(args, kwargs)
        return func(*args, **kwargs)

    def _seeing_inner_calls(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``F.multi_head_attention_forward`` with its own calls routed through this handler.

        MHA runs under its own torch-function handling, where a mode is off, and re-entering the
        mode would recurse into MHA's handling.  For the duration of the call the names it looks up
        in ``torch.nn.functional`` are routed here instead; the routes hand anything that is not a
        meta tensor straight to the original function, so other code running meanwhile is
        unaffected, and the originals are put back when the call returns.
        """
        names = ("linear", "scaled_dot_product_attention")
        originals = {name: getattr(F, name) for name in names}

        def route(original: Any) -> Any:
            def routed(*a: Any, **k: Any) -> Any:
                on_meta = isinstance(a[0], torch.Tensor) and a[0].device.type == "meta" if a else False
                return self.__torch_function__(original, (), a, k) if on_meta else original(*a, **k)

            return routed

        for name, original in originals.items():
            setattr(F, name, route(original))
        try:
            return func(*args, **kwargs)
        finally:
            for name, original in originals.items():
                setattr(F, name, original)


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` for a scalar ``loss``, with the active torch-function modes still active
    inside it.

    ``Tensor.backward`` reaches an active mode as a call, and a mode is off while it handles a call,
    so the backward pass would run without :class:`KernelPaths`: a checkpointed block's recomputed
    forward would then take the meta path where its first forward took the device's, save other
    tensors, and fail checkpointing's metadata check.  The engine is called as ``Tensor.backward``
    calls it, with the seed gradient ``Tensor.backward`` makes for a scalar.
    """
    from torch.autograd.graph import _engine_run_backward

    seed = torch.ones_like(loss, memory_format=torch.preserve_format)
    _engine_run_backward((loss,), (seed,), False, False, (), allow_unreachable=True, accumulate_grad=True)


def _sdpa_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(SDPA_ARGS, args, strict=False)) | kwargs


def cpu_sdpa_backend(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The backend ``scaled_dot_product_attention`` picks on the CPU for these (meta) arguments.

    Asked of ``torch._fused_sdp_choice`` with CPU stand-ins of the same shapes and strides; they
    are never written or read, and they are made outside every mode, so no capture sees them.
    """
    def stand_in(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype,
                                       requires_grad=value.requires_grad)
        return value

    given = _sdpa_arguments(args, kwargs)
    query = given.get("query")
    if not isinstance(query, torch.Tensor) or query.device.type != "meta":
        return -1
    with _disable_current_modes():
        choice = {k: stand_in(v) for k, v in given.items() if k in (*SDPA_ARGS, "scale", "enable_gqa")}
        return int(torch._fused_sdp_choice(**choice))


def flash_attention_for_cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """``scaled_dot_product_attention`` as the CPU runs it when it picks flash attention."""
    given = _sdpa_arguments(args, kwargs)
    out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        given["query"], given["key"], given["value"], float(given.get("dropout_p", 0.0)),
        bool(given.get("is_causal", False)), attn_mask=given.get("attn_mask"), scale=given.get("scale"))
    return out


HALF = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256  # sdp_utils.cpp, check_head_dim_size_flash
FLASH_HEAD_DIM_MULTIPLE = 8  # attention.cpp pads q, k and v to a multiple of 8 before the flash kernel
MASK_ALIGNMENT = 8  # attention.cpp, preprocess_mask: the efficient kernel's bias strides


def cuda_sdpa_backend(given: dict[str, Any]) -> str:
    """The kernel ``scaled_dot_product_attention`` runs on a CUDA GPU of compute capability 8.0
    to 12.1 (A100, H100, H200, B200) for these meta arguments: ``"flash"``, ``"efficient"`` or
    ``"math"``.

    The checks are those of PyTorch's ``sdp_utils.cpp`` for dense 4-D inputs, in its default
    priority order: flash attention takes fp16/bf16 without a mask, equal head dims up to 256,
    and a causal flag only when the query and key lengths are equal; grouped-query heads
    (``enable_gqa``) only flash takes.  The memory-efficient kernel takes fp32 too, and masks,
    with head dims a multiple of 8 (fp16/bf16) or 4 (fp32).  On sm90 with cuDNN 9.9 or newer,
    PyTorch tries cuDNN's attention first where it applies; it reads and writes the same tensors
    as flash attention (q, k, v in; the output and its log-sum-exp out), so it is costed as flash.
    """
    q, k, v = given.get("query"), given.get("key"), given.get("value")
    if not all(isinstance(t, torch.Tensor) and t.device.type == "meta" and t.dim() == 4 for t in (q, k, v)):
        return "math"
    assert isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
    if len({q.dtype, k.dtype, v.dtype}) != 1 or min(q.size(-2), k.size(-2)) == 0:
        return "math"
    if any(t.size(-1) != 1 and t.stride(-1) != 1 for t in (q, k, v)):
        return "math"
    mask, causal = given.get("attn_mask"), bool(given.get("is_causal", False))
    grouped = q.size(1) != k.size(1) or k.size(1) != v.size(1)
    head_dim = q.size(-1)
    if (q.dtype in HALF and mask is None and head_dim == k.size(-1) == v.size(-1) <= FLASH_MAX_HEAD_DIM
            and not (causal and q.size(-2) != k.size(-2))):
        return "flash"
    alignment = 8 if q.dtype in HALF else 4
    if (q.dtype in (*HALF, torch.float32) and not grouped and head_dim == k.size(-1)
            and head_dim % alignment == 0 and v.size(-1) % alignment == 0):
        return "efficient"
    return "math"


def fused_attention_for_cuda(backend: str, given: dict[str, Any]) -> torch.Tensor:
    """``scaled_dot_product_attention`` as ``attention.cpp`` runs it on CUDA with ``backend``:
    flash attention on q, k and v padded to a head dim that is a multiple of 8 (a copy only when
    it is not one), or the memory-efficient kernel with a boolean mask turned into an additive
    bias, padded when its strides are not aligned, and broadcast to ``(B, H, L, S)``."""
    q, k, v = given["query"], given["key"], given["value"]
    dropout, causal, scale = float(given.get("dropout_p", 0.0)), bool(given.get("is_causal", False)), given.get("scale")
    if backend == "flash":
        head_dim = q.size(-1)
        pad = -head_dim % FLASH_HEAD_DIM_MULTIPLE
        if pad:
            q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
            scale = scale if scale is not None else 1 / math.sqrt(head_dim)
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout, causal, False, scale=scale)[0]
        return out[..., :head_dim] if pad else out
    mask = given.get("attn_mask")
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.where(mask.logical_not(), -math.inf, torch.zeros((), dtype=q.dtype, device=q.device))
        if any(stride % MASK_ALIGNMENT for stride in mask.stride()[:-1]):
            length = mask.size(-1)
            mask = F.pad(mask, (0, MASK_ALIGNMENT - length % MASK_ALIGNMENT))[..., :length]
        mask = mask.expand(q.size(0), q.size(1), q.size(2), k.size(2))
    log_sum_exp = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, mask, log_sum_exp, dropout, causal,
                                                                    scale=scale)[0]


def _dropout_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"p": 0.5, "training": True, "inplace": False} | dict(zip(DROPOUT_ARGS, args, strict=False)) | kwargs


def fused_dropout_applies(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether CUDA runs this ``F.dropout`` call as ``native_dropout``: in training, out of place, with
    0 < p < 1 on a non-empty tensor (``at::dropout``'s ``is_fused_kernel_acceptable``; the in-place
    ``dropout_`` always takes the unfused path)."""
    given = _dropout_arguments(args, kwargs)
    x = given.get("input")
    return (isinstance(x, torch.Tensor) and bool(given["training"]) and not given["inplace"]
            and 0 < float(given["p"]) < 1 and x.numel() > 0)


def fused_dropout(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """``F.dropout`` as CUDA runs it: ``native_dropout``, whose backward keeps its bool mask."""
    given = _dropout_arguments(args, kwargs)
    out, _ = torch.ops.aten.native_dropout(given["input"], float(given["p"]), True)
    return out


def onednn_lstm_applies(args: tuple[Any, ...]) -> bool:
    """``_VF.lstm(input, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first)`` takes
    oneDNN on the CPU for fp32; nncost routes the unidirectional case without inter-layer dropout and
    without projections, which it sizes exactly."""
    if len(args) != 9 or not isinstance(args[0], torch.Tensor):
        return False
    x, hx, params, _, _, dropout, train, bidirectional, _ = args
    return (x.device.type == "meta" and x.dtype == torch.float32 and not bidirectional
            and not (train and dropout) and params[0].shape[0] == 4 * hx[0].shape[-1])


def onednn_lstm(args: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """nn.LSTM as RNN.cpp's ``mkldnn_impl`` runs it: one ``mkldnn_rnn_layer`` per layer, time-major."""
    x, (h0, c0), params, has_biases, layers, _, train, _, batch_first = args
    hidden = h0.shape[-1]
    time_major = (x.transpose(0, 1) if batch_first else x).contiguous()  # held to the end, as RNN.cpp does
    layer_input = time_major
    per_layer = 4 if has_biases else 2
    hs, cs = [], []
    for layer in range(layers):
        w = params[layer * per_layer:(layer + 1) * per_layer]
        b_ih, b_hh = (w[2], w[3]) if has_biases else (w[0].new_zeros(4 * hidden), w[0].new_zeros(4 * hidden))
        layer_input, hy, cy, _ = torch.ops.aten.mkldnn_rnn_layer(
            layer_input, w[0], w[1], b_ih, b_hh, h0[layer], c0[layer], False, [], LSTM_MODE, hidden, layers,
            has_biases, False, False, train)
        hs.append(hy)
        cs.append(cy)
    output = layer_input.transpose(0, 1) if batch_first else layer_input
    result = output, torch.stack(hs, 0), torch.stack(cs, 0)
    del time_major
    return result
