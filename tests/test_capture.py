"""What the dispatch-level capture sees, and how it attributes and reports it."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.capture.fast_meta import SHAPE_FUNCTIONS
from nncost.capture.tracer import Tracer


class Functional(nn.Module):
    """Costs that module hooks alone would miss: functional calls, @, einsum, autograd.Function."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.linear(x, self.w)  # (4, 8, 16): 4·8·32·16 MACs
        b = a @ a.transpose(1, 2)  # (4, 8, 8): 4·8·16·8
        c = torch.einsum("bij,bjk->bik", b, a)  # (4, 8, 16): 4·8·8·16
        return Square.apply(c)


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(x.reshape(-1, x.shape[-1]), torch.ones(x.shape[-1], 3, device=x.device))  # 32·16·3

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise NotImplementedError


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_functional_matmul_einsum_and_autograd_function_are_counted(device: str) -> None:
    report = nncost.profile(Functional(), inputs=torch.randn(4, 8, 32), device=device)
    expected = 4 * 8 * 32 * 16 + 4 * 8 * 16 * 8 + 4 * 8 * 8 * 16 + 32 * 16 * 3
    assert report.totals.macs == expected
    assert report.layers[0].macs == expected  # attributed to the module whose forward ran them


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(torch.relu(self.block(x)))


def test_a_module_called_twice_shows_both_calls_and_params_count_once() -> None:
    report = nncost.profile(Twice(), (8,), batch_size=3)
    calls = [layer for layer in report.layers if layer.name == "block"]
    assert len(calls) == 2
    assert all(c.macs == 3 * 8 * 8 for c in calls)
    assert report.totals.params == 8 * 8 + 8
    relu = [op for op in report.layers[0].self_ops if op.op == "relu"]
    assert len(relu) == 1 and relu[0].flops == 3 * 8  # ran in Twice.forward itself


class Chain(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Linear(10, 100), nn.Linear(100, 1000), nn.Linear(1000, 10))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_feature_maps_and_peak_follow_tensor_lifetimes(batch: int, device: str) -> None:
    report = nncost.profile(Chain(), (10,), batch_size=batch, device=device)
    fp32 = 4
    assert report.totals.feature_map_bytes == (100 + 1000 + 10) * fp32
    # While the second Linear writes its output, the first one's is still alive.
    assert report.totals.peak_activation_bytes == batch * (100 + 1000) * fp32
    assert report.totals.peak_at == "1"
    assert report.totals.input_bytes == batch * 10 * fp32


def transformer_block() -> nn.Module:
    return nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)


@pytest.mark.parametrize(("build", "size"), [("resnet18", (3, 224, 224)), ("block", (16, 64))])
def test_feature_maps_per_sample_are_the_same_at_every_batch(build: str, size: tuple[int, ...]) -> None:
    # resnet18's BatchNorm statistics do not grow with the batch; the block's batch of one
    # skips a copy and a bias add that every larger batch makes
    if build == "resnet18":
        model = pytest.importorskip("torchvision").models.resnet18()
    else:
        model = transformer_block()
    figures = {batch: nncost.profile(model, size, batch_size=batch).totals.feature_map_bytes for batch in (1, 2, 8)}
    assert figures[1] == figures[2] == figures[8], figures
    assert figures[1] == {"resnet18": 22_284_192, "block": 106_752}[build]  # docs/conventions.md


def test_feature_maps_of_a_model_that_runs_at_one_batch_only() -> None:
    class FixedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(10, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.view(1, 10))

    assert nncost.profile(FixedBatch(), (10,)).totals.feature_map_bytes == 10 * 4  # the sum over batch 1


class WithBessel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x).abs()


def test_an_op_without_a_rule_is_reported_never_silently_zero() -> None:
    report = nncost.profile(WithBessel(), (64,))
    names = {u.op: u for u in report.uncounted}
    assert "special_bessel_j0" in names
    assert names["special_bessel_j0"].calls == 1
    assert names["special_bessel_j0"].layers == [""]
    assert report.to_dict()["uncounted"]["special_bessel_j0"] == 1
    assert "UNCOUNTED" in report.table()


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.nonzero(x[:, 0] > -100).squeeze(1)  # keeps every row, but only data can tell
        return self.fc(x[keep])


def test_data_dependent_model_falls_back_to_a_real_run() -> None:
    report = nncost.profile(DataDependent(), (6,), batch_size=5)
    assert report.execution == "real"
    assert report.fallback_reason
    assert report.totals.macs == 5 * 6 * 4


def test_data_dependent_model_without_weights_says_what_to_do() -> None:
    with torch.device("meta"):
        model = DataDependent()
    with pytest.raises(nncost.NeedsWeights, match="real values"):
        nncost.profile(model, (6,))


def test_wrong_input_names_the_layer_and_shapes() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with pytest.raises(nncost.InputMismatch) as info:
        nncost.profile(model, (3, 10, 10))
    assert info.value.layer == "2"
    assert info.value.layer_type == "Linear"
    assert info.value.input_shapes == [(1, 512)]
    assert "1×512" in str(info.value)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"dtype": "float17"}, {"device": "tpu"}])
def test_bad_requests_are_clear_errors(bad: dict[str, object]) -> None:
    with pytest.raises(nncost.BadRequest):
        nncost.profile(nn.Linear(2, 2), (2,), **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("op", ["_native_batch_norm_legit_no_training", "native_batch_norm"])
def test_fast_batch_norm_outputs_equal_the_meta_kernel(op: str, affine: bool, dtype: torch.dtype,
                                                  memory_format: torch.memory_format) -> None:
    x = torch.empty(2, 6, 5, 7, device="meta", dtype=dtype).to(memory_format=memory_format)
    w = torch.empty(6, device="meta") if affine else None
    stats = torch.empty(6, device="meta")
    args = {
        "_native_batch_norm_legit_no_training": (x, w, w, stats, stats, 0.1, 1e-5),
        "native_batch_norm": (x, w, w, stats, stats, False, 0.1, 1e-5),
    }[op]
    fast = SHAPE_FUNCTIONS[op](*args)
    real = getattr(torch.ops.aten, op)(*args)
    assert [(t.shape, t.stride(), t.dtype) for t in fast] == [(t.shape, t.stride(), t.dtype) for t in real]


@settings(max_examples=60, deadline=None)
@given(
    dims=st.integers(1, 3), batch=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3), kernel=st.integers(1, 4), stride=st.integers(1, 3),
    padding=st.integers(0, 2), dilation=st.integers(1, 2), size=st.integers(4, 9),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]), channels_last=st.booleans(),
)
def test_fast_convolution_outputs_equal_the_meta_kernel(
    dims: int, batch: int, groups: int, per_group: int, out_per_group: int, kernel: int, stride: int,
    padding: int, dilation: int, size: int, dtype: torch.dtype, channels_last: bool,
) -> None:
    x = torch.empty(batch, groups * per_group, *[size] * dims, device="meta", dtype=dtype)
    if channels_last and dims == 2:
        x = x.to(memory_format=torch.channels_last)
    w = torch.empty(groups * out_per_group, per_group, *[kernel] * dims, device="meta", dtype=dtype)
    args = (x, w, None, [stride] * dims, [padding] * dims, [dilation] * dims, False, [0] * dims, groups)
    fast = SHAPE_FUNCTIONS["convolution"](*args)
    if (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 <= 0:
        assert fast is None  # an impossible convolution: the kernel raises its own error
        return
    if channels_last and dims == 2 and not x.is_contiguous():
        assert fast is None  # layouts other than contiguous are left to the kernel
        return
    real = torch.ops.aten.convolution(*args)
    assert (fast.shape, fast.stride(), fast.dtype) == (real.shape, real.stride(), real.dtype)


def test_dtype_changes_param_bytes_and_activations() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    full = nncost.profile(model, (8,))
    half = nncost.profile(model, (8,), dtype=torch.float16)
    assert full.totals.param_bytes == 72 * 4 and half.totals.param_bytes == 72 * 2
    assert half.totals.param_bytes_by_dtype == {"float16": 144}
    assert half.totals.feature_map_bytes * 2 == full.totals.feature_map_bytes
    assert half.totals.macs == full.totals.macs


def test_frozen_and_shared_parameters() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    model[0].bias.requires_grad_(False)
    report = nncost.profile(model, (4,))
    assert report.totals.params == 16 + 4 + 4
    assert report.totals.trainable_params == 16 + 4
    assert report.totals.frozen_params == 4


def test_depth_folds_the_tree() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2))
    report = nncost.profile(model, (4,), depth=1)
    assert [layer.name for layer in report.shown()] == ["", "0", "1"]
    assert len(report.layers) == 5  # a view: every call is kept
    assert report.shown()[1].macs == 16 and report.shown()[0].macs == 16 + 8


def test_kwargs_and_dict_outputs() -> None:
    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, *, features: torch.Tensor, extra: dict[str, torch.Tensor]) -> dict[str, object]:
            return {"logits": self.fc(features) + extra["bias"], "cache": [features]}

    report = nncost.profile(DictModel(), kwargs={"features": torch.randn(5, 3), "extra": {"bias": torch.zeros(2)}})
    assert report.totals.macs == 5 * 3 * 2
    assert report.layers[0].output_shapes == [(5, 2), (5, 3)]


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_multihead_attention_fast_path_counts_the_same_macs() -> None:
    """Under no_grad on CPU/CUDA, nn.MultiheadAttention runs one fused kernel; meta runs the pieces."""
    meta = nncost.profile(SelfAttention(), (10, 64), batch_size=3)
    real = nncost.profile(SelfAttention(), (10, 64), batch_size=3, device="cpu")
    assert "_native_multi_head_attention" in {op.op for layer in real.layers for op in layer.self_ops}
    b, length, e = 3, 10, 64
    expected = b * length * 3 * e * e + 2 * b * length * length * e + b * length * e * e
    assert meta.totals.macs == real.totals.macs == expected
    assert real.uncounted == []


class _CountedTracer(Tracer):
    calls: ClassVar[list[bool]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _CountedTracer.calls.append(self.record_calls)


@pytest.mark.parametrize(("model", "size", "light"), [
    # batch 2 creates the storages batch 1 does: one more forward, at 2
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)), (3, 16, 16), 1),
    # batch 1 skips the copies a transpose makes at every larger batch: forwards at 2 and 3
    (lambda: nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), (16, 64), 2),
])
def test_a_profile_captures_once_and_runs_light_forwards_for_the_feature_maps(
        monkeypatch: pytest.MonkeyPatch, model: Any, size: tuple[int, ...], light: int) -> None:
    """One capture records the calls; the feature maps of a sample need only what other batches
    allocate, from forwards whose tracer records no calls (docs/conventions.md)."""
    monkeypatch.setattr(_CountedTracer, "calls", [])
    monkeypatch.setattr("nncost.capture.run.Tracer", _CountedTracer)
    nncost.profile(model(), size)
    assert _CountedTracer.calls == [True] + [False] * light


def test_pointwise_in_place_operators_keep_their_checks_and_their_counts() -> None:
    """A pointwise in-place operator on meta returns its first argument once its kernel accepted the
    same metadata; other metadata still reach the kernel, which refuses what it refuses."""
    from nncost.rules import ATEN

    a, b = torch.empty(4, 3, device="meta"), torch.empty(3, device="meta")
    tracer = Tracer(ATEN, lambda: 0, memoise=True)
    with tracer:
        assert a.add_(b) is a and a.add_(b) is a
        with pytest.raises(RuntimeError):
            a.add_(torch.empty(5, device="meta"))
        with pytest.raises(RuntimeError):
            b.add_(a)  # the result's shape is not the first argument's
    assert [(op.op, op.flops) for op in tracer.ops] == [("add_", 12), ("add_", 12)]


def test_copy_into_a_tensor_moves_its_bytes_and_in_place_views_move_none() -> None:
    """``copy_`` moves data: it reads its source and writes its destination (its out-of-place name
    has view overloads, ``copy.t`` of a list, which once made it look like ``t_``); ``t_`` and
    ``squeeze_`` change metadata only."""

    class Copies(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("held", torch.zeros(4, 256))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.held.copy_(x)
            y = x.clone()
            y.t_()
            y.unsqueeze_(0).squeeze_(0)
            return y

    report = nncost.profile(Copies(), (256,), batch_size=4)
    assert not report.uncounted
    nbytes = 4 * 256 * 4
    # copy_: the destination and the source read, the destination written; clone: one read, one write
    assert report.totals.read_bytes == 2 * nbytes + nbytes
    assert report.totals.write_bytes == nbytes + nbytes
