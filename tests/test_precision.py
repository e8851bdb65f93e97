"""Mixed precision in the step simulation, checked against PyTorch's real CPU autocast.

The simulation runs PyTorch's own autocast on fake tensors (``nncost.simulation.autocast``).
These tests hold it to a real CPU step under ``torch.autocast("cpu", torch.bfloat16)``:
the same operators with the same output shapes and dtypes, op by op, and byte-exact fp32
master weights, fp32 gradients and fp32 optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import nncost
from nncost.capture.scopes import tensors_in
from nncost.capture.tracer import ALLOC, FREE, classify
from nncost.errors import BadRequest
from nncost.precision import resolve_precision
from nncost.rules import ATEN
from nncost.rules.kernel_memory.cpu import simd_lanes
from nncost.simulation.step import capture_step

FP32 = 4
Row = tuple[str, tuple[tuple[int, ...], ...], int]  # op, output shapes, output bytes


class Recorder(TorchDispatchMode):
    """What nncost's tracer records, on a real run: every non-view op, its outputs' shapes and bytes
    (bytes carry the dtype: 2 per element in bf16, 4 in fp32)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.dtypes: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        info = classify(func, ATEN)
        if info.kind not in (FREE, ALLOC):  # what the tracer records as OpCalls
            outputs = tensors_in(out)
            self.rows.append((info.name, tuple(tuple(t.shape) for t in outputs),
                              sum(t.numel() * t.element_size() for t in outputs)))
            self.dtypes.append((info.name, tuple(t.dtype for t in outputs)))
        return out


def real_autocast_step(model: nn.Module, args: tuple[Any, ...], dtype: torch.dtype = torch.bfloat16) -> Recorder:
    """Forward and loss under CPU autocast, then backward, as the simulated step does them."""
    recorder = Recorder()
    model.train()
    with recorder:
        with torch.autocast("cpu", dtype=dtype):
            output = model(*args)
            floating = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
            loss = torch.stack([t.float().sum() for t in floating]).sum()
        loss.backward()
    return recorder


def simulated_rows(model: nn.Module, args: tuple[Any, ...], precision: str = "bf16-mixed") -> list[Row]:
    trace = capture_step(model, args, {}, optimizer="sgd", allocator="cpu", precision=precision)
    return [(op.op, op.out_shapes, op.write_bytes) for op in trace.ops[: trace.backward_end]]


class Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 100)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(ids))[0])


def resnet18() -> tuple[nn.Module, tuple[Any, ...]]:
    import torchvision

    return torchvision.models.resnet18(num_classes=10), (torch.randn(2, 3, 32, 32),)


def encoder_layer() -> tuple[nn.Module, tuple[Any, ...]]:
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
    return layer, (torch.randn(2, 10, 32),)


def gpt2_tiny() -> tuple[nn.Module, tuple[Any, ...]]:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=100)
    return transformers.GPT2LMHeadModel(config), (torch.randint(0, 100, (2, 16)),)


def lstm() -> tuple[nn.Module, tuple[Any, ...]]:
    return Lstm(), (torch.randint(0, 100, (2, 12)),)


MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[Any, ...]]]] = {
    "resnet18": resnet18, "encoder_layer": encoder_layer, "gpt2_tiny": gpt2_tiny, "lstm": lstm,
}


def without_rnn_workspace(rows: list[Row]) -> list[Row]:
    """oneDNN's LSTM workspace (the 4th output of ``mkldnn_rnn_layer``) is empty on meta and fake
    tensors: a kernel-workspace size that the CPU kernel rules give, in fp32 as in mixed precision.
    Left out here; everything else must match."""
    return [(op, shapes[:3], 0) if op == "mkldnn_rnn_layer" else (op, shapes, nbytes) for op, shapes, nbytes in rows]


# oneDNN has no bf16 LSTM below AVX-512: the real autocast step raises "could not create a primitive descriptor"
ON_THIS_CPU = [pytest.param(name, marks=pytest.mark.skipif(simd_lanes() != 16, reason="bf16 LSTM needs AVX-512"))
               if name == "lstm" else name for name in MODELS]


@pytest.mark.parametrize("name", ON_THIS_CPU)
def test_simulated_ops_and_dtypes_match_real_cpu_autocast(name: str) -> None:
    """Forward, loss and backward: the same ops, in the same order, with the same output shapes and
    bytes (so dtypes), as a real CPU step under torch.autocast("cpu", torch.bfloat16)."""
    model, args = MODELS[name]()
    simulated = simulated_rows(model, args)
    real = real_autocast_step(model, args)
    assert any(dtypes and dtypes[0] == torch.bfloat16 for _, dtypes in real.dtypes), "autocast did not run"
    assert without_rnn_workspace(simulated) == without_rnn_workspace(real.rows)


class Lists(nn.Module):
    """One op from each of CPU autocast's lists, and one on none of them."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)  # lower-precision list: bf16
        self.norm = nn.LayerNorm(16)  # on no CPU list: runs in its input's dtype (CUDA's fp32 list has it)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(self.linear(x))
        loss = nn.functional.mse_loss(h, torch.zeros_like(x))  # CPU fp32 list
        return loss, torch.cat([h, x])  # promote list: bf16 with fp32 gives fp32


def test_each_autocast_list_gives_the_dtype_of_a_real_cpu_run() -> None:
    model, args = Lists(), (torch.randn(4, 16),)
    real = real_autocast_step(model, args)
    dtypes = dict(real.dtypes)
    assert dtypes["addmm"] == (torch.bfloat16,)
    assert dtypes["native_layer_norm"] == (torch.bfloat16, torch.float32, torch.float32)  # fp32 statistics
    assert dtypes["mse_loss"] == (torch.float32,)
    assert dtypes["cat"] == (torch.float32,)
    simulated = {op: nbytes for op, _, nbytes in simulated_rows(model, args)}
    for op in ("addmm", "native_layer_norm", "mse_loss", "cat"):
        assert simulated[op] == dict((o, n) for o, _, n in real.rows)[op]


def test_weight_cast_cache_casts_each_weight_once_per_forward() -> None:
    """A weight used twice in one forward is cast to bf16 once (autocast's cache)."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(self.linear(x))

    model = Twice()
    trace = capture_step(model, (torch.randn(4, 16),), {}, optimizer="sgd", allocator="cpu", precision="bf16-mixed")
    weight_casts = [op for op in trace.ops[: trace.forward_end]
                    if op.op == "_to_copy" and op.out_shapes == ((16, 16),)]
    assert len(weight_casts) == 1
    real = real_autocast_step(model, (torch.randn(4, 16),))
    assert sum(1 for op, shapes, _ in real.rows[: len(real.rows)] if op == "_to_copy" and shapes == ((16, 16),)) \
        == 1 + 1  # one cast in the forward, and one back to fp32 for the weight's gradient in the backward


@pytest.mark.parametrize("hardware", ["cpu", "cuda"])
@pytest.mark.parametrize("precision", ["bf16-mixed", "fp16-mixed"])
def test_mixed_keeps_fp32_masters_grads_and_state_byte_exact(hardware: str, precision: str) -> None:
    model = nn.Sequential(nn.Linear(64, 256), nn.LayerNorm(256), nn.Linear(256, 64))
    params = sum(p.numel() for p in model.parameters()) * FP32
    report = nncost.memory(model, (64,), batch_size=1, optimizer="adam", allocator=hardware, precision=precision)
    block = (lambda n: -(-n // 512) * 512) if hardware == "cuda" else (lambda n: n)
    exact = sum(block(p.numel() * FP32) for p in model.parameters())
    assert report.peak_phase == "optimizer"  # weights dominate at batch 1: every gradient is live
    assert report.breakdown["parameters"] == exact
    assert report.breakdown["gradients"] == exact
    # Adam: exp_avg and exp_avg_sq in fp32; its scalar `step` (fp32) is device memory on the CPU only;
    # fp16-mixed adds the GradScaler's scale (fp32) and growth tracker (int32).
    steps = 6 * 4 if hardware == "cpu" else 0
    scaler = 2 * block(4) if precision == "fp16-mixed" else 0
    assert report.breakdown["optimizer_state"] == 2 * exact + steps + scaler
    assert report.breakdown["inputs"] == block(64 * FP32)
    assert params == report.breakdown["parameters"] or hardware == "cuda"
    assert report.precision == precision


def test_pure_bf16_puts_everything_in_bf16() -> None:
    model = nn.Sequential(nn.Linear(64, 256), nn.Linear(256, 64))
    elements = sum(p.numel() for p in model.parameters())
    report = nncost.memory(model, (64,), optimizer="adam", allocator="cpu", precision="bf16")
    assert report.breakdown["parameters"] == report.breakdown["gradients"] == 2 * elements
    assert report.breakdown["optimizer_state"] == 2 * 2 * elements + 4 * 4  # states in bf16, fp32 steps
    assert report.breakdown["inputs"] == 64 * 2


def test_fp16_mixed_scales_the_loss_and_unscales_gradients_in_place() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    trace = capture_step(model, (torch.randn(2, 8),), {}, optimizer="sgd", allocator="cuda", precision="fp16-mixed")
    loss_ops = [op.op for op in trace.ops[trace.forward_end: trace.loss_end]]
    step_ops = [op.op for op in trace.ops[trace.backward_end:]]
    assert "mul" in loss_ops  # GradScaler.scale
    assert step_ops.count("_amp_foreach_non_finite_check_and_unscale_") == 1
    assert step_ops.index("_amp_foreach_non_finite_check_and_unscale_") < step_ops.index("_amp_update_scale_")
    unscale = next(op for op in trace.ops if op.op == "_amp_foreach_non_finite_check_and_unscale_")
    grad_elements = sum(p.numel() for p in model.parameters())
    assert unscale.counted and unscale.flops == 2 * grad_elements  # multiply and check, per gradient element
    assert all(op.counted for op in trace.ops[trace.backward_end:])


def test_mixed_precision_lowers_the_activation_peak() -> None:
    import torchvision

    # a step whose activations outweigh autocast's 16-bit weight copies (saved for backward, so activations too):
    # on 4×3×64×64 they do not, and the bf16 step peaks early in backward with those copies still live
    model = torchvision.models.resnet18()
    fp32 = nncost.memory(model, (3, 128, 128), batch_size=16, optimizer="sgd", allocator="cpu")
    bf16 = nncost.memory(model, (3, 128, 128), batch_size=16, optimizer="sgd", allocator="cpu",
                         precision="bf16-mixed")
    assert bf16.breakdown["activations"] < fp32.breakdown["activations"]
    assert bf16.breakdown["parameters"] == fp32.breakdown["parameters"]


def test_model_is_left_untouched() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nncost.memory(model, (8,), optimizer="adam", allocator="cuda", precision="fp16-mixed")
    assert all(type(v) is torch.Tensor and v.device.type == "cpu" and torch.equal(v, before[k])
               for k, v in model.state_dict().items())
    assert all(type(p) is nn.Parameter and p.grad is None for p in model.parameters())
    assert not torch.is_autocast_enabled("cuda") and not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(("precision", "dtype"),
                         [("fp8", None), ("bf16-mixed", torch.float16), ("bf16", torch.float16)])
def test_bad_precision_is_a_clear_error(precision: str, dtype: torch.dtype | None) -> None:
    with pytest.raises(BadRequest):
        resolve_precision(precision, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_simulated_peak_matches_a_measured_cpu_autocast_step(optimizer: str) -> None:
    """A transformer encoder layer (no convolution: no oneDNN workspace the simulation cannot see),
    one training step under CPU autocast, the allocator's events against the simulation."""
    from nncost.simulation.measure import measure_cpu_peak

    layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, dropout=0.0, batch_first=True)
    x = torch.randn(8, 64, 256)
    report = nncost.memory(layer, inputs=x, optimizer=optimizer, allocator="cpu", precision="bf16-mixed")
    measured = measure_cpu_peak(layer, (x,), {}, mode="train", optimizer=optimizer, precision="bf16-mixed")
    assert abs(report.peak_bytes - measured) <= 0.02 * measured


def test_a_forward_that_needs_values_is_a_clear_error() -> None:
    class ReadsAValue(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.linear(x)
            return y * float(y.sum())

    with pytest.raises(nncost.NeedsWeights):
        nncost.memory(ReadsAValue(), (8,), allocator="cpu", precision="bf16-mixed")
