"""The capture where a plain forward would not reach it whole: inference mode, nested tensors,
custom operators, stochastic models, and meta kernels stricter than the real ones."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.rules import ATEN
from nncost.sources.models import resolve

# -- custom operators: one without a fake implementation, one whose fake implementation is stricter
# than the real kernel (a meta kernel that refuses a dtype the real kernel takes), one that rejects its
# input on both

_LIB = "nncost_hardening"


@torch.library.custom_op(f"{_LIB}::double", mutates_args=())
def double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@torch.library.custom_op(f"{_LIB}::picky", mutates_args=())
def picky(x: torch.Tensor) -> torch.Tensor:
    return x + 1


@picky.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("a wording no list of messages has seen before")


@torch.library.custom_op(f"{_LIB}::even", mutates_args=())
def even(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % 2:
        raise RuntimeError(f"{_LIB}::even wants an even last dimension, got {x.shape[-1]}")
    return x.clone()


@even.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % 2:
        raise RuntimeError(f"{_LIB}::even wants an even last dimension, got {x.shape[-1]}")
    return torch.empty_like(x)


class Through(nn.Module):
    """A Linear, then a custom operator."""

    def __init__(self, op: Any, features: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(self.fc(x))


# -- 1. inference mode ---------------------------------------------------------------------------

# PyTorch's test_flop_counter asserts that FlopCounterMode counts resnet18 at batch 1, 224², as
# 3,628,146,688 FLOPs inside and outside inference mode: 2·MACs of its convolutions and matmuls.
RESNET18_MACS = 1_814_073_344
RESNET18_FLOP_COUNTER_FLOPS = 3_628_146_688


def test_inference_mode_counts_resnet18_as_outside_and_as_flop_counter_does() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    outside = nncost.profile(model, (3, 224, 224))
    with torch.inference_mode():
        inside = nncost.profile(model, (3, 224, 224))
    assert outside.totals.macs == RESNET18_MACS
    assert 2 * outside.totals.macs == RESNET18_FLOP_COUNTER_FLOPS
    assert (inside.totals.macs, inside.totals.flops) == (outside.totals.macs, outside.totals.flops)
    assert inside.uncounted == outside.uncounted == []
    assert [(layer.name, layer.macs, layer.flops) for layer in inside.layers] == [
        (layer.name, layer.macs, layer.flops) for layer in outside.layers]


class Composites(nn.Module):
    """Every composite the tracer saw whole inside inference mode: linear, conv2d, batch_norm,
    layer_norm, dropout, scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.1)
        self.proj = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x)).flatten(2).transpose(1, 2)  # (B, 36, 8)
        q, k, v = self.proj(self.drop(self.norm(x))).unsqueeze(1).chunk(3, dim=-1)  # one head
        return F.scaled_dot_product_attention(q, k, v)


def _memory_figures(report: nncost.MemoryReport) -> tuple[Any, ...]:
    return (report.peak_bytes, report.peak_at, report.breakdown, report.forward_macs, report.forward_flops,
            report.backward_macs, report.backward_flops, report.optimizer_flops, report.uncounted)


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_inference_mode_simulates_the_same_step(mode: str) -> None:
    model = Composites()
    outside = nncost.memory(model, (3, 6, 6), batch_size=2, mode=mode, allocator="cpu")
    with torch.inference_mode():
        inside = nncost.memory(model, (3, 6, 6), batch_size=2, mode=mode, allocator="cpu")
    assert outside.forward_macs > 0
    assert _memory_figures(inside) == _memory_figures(outside)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_inference_mode_profiles_composites_and_inference_tensors_as_outside(device: str) -> None:
    model = Composites()
    x = torch.randn(2, 3, 6, 6)
    outside = nncost.profile(model, inputs=x, device=device)
    with torch.inference_mode():
        made_inside = torch.randn(2, 3, 6, 6)  # an inference tensor: read-only outside inference mode
        inside = nncost.profile(model, inputs=made_inside, device=device)
    assert outside.uncounted == inside.uncounted == []
    assert (inside.totals.macs, inside.totals.flops, inside.totals.peak_activation_bytes) == (
        outside.totals.macs, outside.totals.flops, outside.totals.peak_activation_bytes)
    assert inside.totals.macs == 2 * 36 * (8 * 3 * 9 + 8 * 24 + 36 * 8 + 36 * 8)


class ScalesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mul_(2))  # in place, as inside inference mode it may be


def test_an_inference_tensor_input_is_written_in_place_as_inside_inference_mode() -> None:
    with torch.inference_mode():
        x = torch.ones(3, 4)
        report = nncost.profile(ScalesItsInput(), inputs=x, device="cpu")
    assert report.totals.macs == 3 * 4 * 4


def test_inference_mode_compares_modules_as_outside() -> None:
    models = {"a": Composites(), "b": nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 2))}
    outside = nncost.compare(models, (3, 6, 6))
    with torch.inference_mode():
        inside = nncost.compare(models, (3, 6, 6))
    assert [e.totals for e in inside.models] == [e.totals for e in outside.models]
    assert inside.models[1].totals.macs == 4 * 16 * 27 + 64 * 2


def test_inference_mode_profiles_a_pt2_program_as_outside(tmp_path: Path) -> None:
    model = Composites().eval()
    path = tmp_path / "composites.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 6, 6),)), str(path))
    spec = resolve(str(path))
    outside = nncost.profile(spec.build(), inputs=spec.example_inputs[0])  # type: ignore[index]
    with torch.inference_mode():
        inside_spec = resolve(str(path))
        inside = nncost.profile(inside_spec.build(), inputs=inside_spec.example_inputs[0])  # type: ignore[index]
    assert outside.totals.macs == nncost.profile(model, (3, 6, 6), batch_size=2).totals.macs
    assert (inside.totals.macs, inside.totals.flops) == (outside.totals.macs, outside.totals.flops)
    assert inside.uncounted == outside.uncounted


# -- 2. jagged nested tensors ------------------------------------------------------------------------


class JaggedAttention(nn.Module):
    """A projection and self-attention over a batch of sequences of different lengths."""

    def __init__(self, features: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.proj = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, j, d)
        return F.scaled_dot_product_attention(q, q, q)


LENGTHS = (3, 5, 7, 2)


@pytest.fixture
def jagged() -> Iterator[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype, and say so
        yield torch.nested.nested_tensor([torch.randn(n, 16) for n in LENGTHS], layout=torch.jagged)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_jagged_nested_tensor_is_counted_per_sequence(jagged: torch.Tensor, device: str) -> None:
    report = nncost.profile(JaggedAttention(), inputs=jagged, device=device)
    features, heads, dim = 16, 2, 8
    projection = sum(n * features * features for n in LENGTHS)
    attention = sum(heads * (n * n * dim + n * n * dim) for n in LENGTHS)  # Q·Kᵀ and P·V of each sequence
    assert report.totals.macs == projection + attention
    assert report.layers[1].macs == projection
    assert report.execution == "real"  # PyTorch's jagged SDPA cannot run on meta tensors
    assert device == "cpu" or report.fallback_reason
    assert report.uncounted == []
    (batch, ragged, features_in), = report.layers[0].input_shapes  # the ragged dimension by its name, j1
    assert (batch, features_in) == (4, 16) and isinstance(ragged, str) and ragged.startswith("j")
    assert '"j' in report.to_json()


def test_jagged_linear_stays_on_meta(jagged: torch.Tensor) -> None:
    report = nncost.profile(nn.Linear(16, 4), inputs=jagged)
    assert report.execution == "meta"
    assert report.totals.macs == sum(LENGTHS) * 16 * 4


# -- 3. custom operators -------------------------------------------------------------------------------


def test_custom_op_without_fake_falls_back_to_a_real_run() -> None:
    report = nncost.profile(Through(double), (8,), batch_size=3)
    assert report.execution == "real"
    assert report.fallback_reason
    assert report.totals.macs == 3 * 8 * 8
    assert [u.op for u in report.uncounted] == [f"{_LIB}::double"]
    explained = report.explain("")
    assert f"{_LIB}::double: UNCOUNTED" in explained and f"aten.{_LIB}" not in explained


def test_custom_op_rejecting_its_input_is_named_by_its_namespace() -> None:
    with pytest.raises(nncost.InputMismatch) as info:
        nncost.profile(Through(even, features=7), (7,))
    message = str(info.value)
    assert f"in {_LIB}::even with 1×7" in message and f"aten.{_LIB}" not in message
    assert (info.value.layer_type, info.value.input_shapes) == ("Through", [(1, 7)])


# -- 4. random state ---------------------------------------------------------------------------------


class Stochastic(nn.Module):
    """Draws from the CPU generator, then needs data (``nonzero``) to go on: the meta run stops after
    the draw.  How many times the Linear runs depends on the draw."""

    def __init__(self, draws: list[int]) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draw = int(torch.randint(0, 1 << 30, ()).item())
        self.draws.append(draw)
        keep = torch.nonzero(x[:, 0] > -100).squeeze(1)
        x = x[keep]
        for _ in range(1 + draw % 5):
            x = self.fc(x)
        return x


def test_fallback_counts_on_the_random_state_of_a_direct_run() -> None:
    direct_draws: list[int] = []
    torch.manual_seed(1234)
    direct = nncost.profile(Stochastic(direct_draws), (6,), batch_size=5, device="cpu")
    fallback_draws: list[int] = []
    torch.manual_seed(1234)
    fallback = nncost.profile(Stochastic(fallback_draws), (6,), batch_size=5)
    # both meta attempts drew too: without shadows, and with them (capture.run._on_meta)
    assert fallback.execution == "real" and len(fallback_draws) == 3
    assert fallback_draws[2] == direct_draws[0]
    assert fallback.totals.macs == direct.totals.macs == (1 + direct_draws[0] % 5) * 5 * 6 * 6


class DrawsOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * float(torch.rand(()))  # a draw from the CPU generator, also on meta


def _rng_states() -> list[torch.Tensor]:
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


@pytest.mark.parametrize(("model", "options", "execution"), [
    (DrawsOnly, {}, "meta"),
    (lambda: Stochastic([]), {}, "real"),  # the fallback
    (DrawsOnly, {"device": "cpu"}, "real"),
    (DrawsOnly, {"measure_time": True, "repeats": 2}, "meta"),  # timed passes run for real
])
def test_callers_random_state_is_left_exactly_as_it_was(model: Any, options: dict[str, Any], execution: str) -> None:
    instance = model()
    before = _rng_states()
    report = nncost.profile(instance, (6,), batch_size=2, **options)
    assert report.execution == execution
    after = _rng_states()
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_random_state_is_left_exactly_as_it_was() -> None:
    class CudaDraws(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + torch.rand(6, device=x.device)

    torch.cuda.init()
    before = torch.cuda.get_rng_state_all()
    report = nncost.profile(CudaDraws().cuda(), (6,), device="cuda")
    assert report.execution == "real"
    assert all(torch.equal(a, b) for a, b in zip(before, torch.cuda.get_rng_state_all(), strict=True))


# -- 5. a meta limitation, decided without reading messages ---------------------------------------------


def test_a_meta_kernel_stricter_than_the_real_one_falls_back_whatever_it_says() -> None:
    report = nncost.profile(Through(picky), (8,), batch_size=2)
    assert report.execution == "real"
    assert report.fallback_reason and "no list of messages" in report.fallback_reason
    assert report.totals.macs == 2 * 8 * 8


class Watched(nn.Sequential):
    """Records the device of every forward: a wrong input must be reported from the meta run alone."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__(*modules)
        self.devices: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self.devices.append(x.device.type)
        return super().forward(x)


@pytest.mark.parametrize("weights", ["cpu", "meta"])
def test_wrong_channel_count_is_an_input_mismatch_from_the_meta_run_alone(weights: str) -> None:
    with torch.device(weights):
        model = Watched(nn.Conv2d(4, 8, 3), nn.ReLU())
    with pytest.raises(nncost.InputMismatch) as info:
        nncost.profile(model, (3, 64, 64), batch_size=8)
    assert model.devices == ["meta"]  # no real run of the model
    assert info.value.layer == "0" and info.value.layer_type == "Conv2d"
    assert info.value.input_shapes == [(8, 3, 64, 64)]
    assert "0 (Conv2d) expects 4 input channels, got 3 (input 8×3×64×64)" in str(info.value)


class ChecksItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 8:
            raise ValueError(f"expected 8 features, got {x.shape[-1]}")
        return self.fc(x)


class NeedsNumpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.detach().numpy().size)  # only a real tensor has a numpy view
        return self.fc(x) * scale


def test_a_models_own_check_is_an_input_mismatch_even_without_weights() -> None:
    with torch.device("meta"):
        model = ChecksItsInput()
    with pytest.raises(nncost.InputMismatch, match="expected 8 features, got 5"):
        nncost.profile(model, (5,))


def test_python_code_that_needs_a_real_tensor_falls_back() -> None:
    report = nncost.profile(NeedsNumpy(), (8,), batch_size=2)
    assert report.execution == "real" and report.totals.macs == 2 * 8 * 8


def test_raised_by_statement_tells_checks_from_errors_of_calls() -> None:
    from nncost.capture.limits import raised_by_statement

    def check() -> None:
        raise ValueError("a check")

    def call() -> None:
        torch.empty(1, device="meta").numpy()

    for fn, expected in ((check, True), (call, False)):
        try:
            fn()
        except Exception as exc:
            assert raised_by_statement(exc) is expected


# -- _grouped_mm and mixture-of-experts -----------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(groups=st.lists(st.integers(0, 5), min_size=1, max_size=4), k=st.integers(1, 6), n=st.integers(1, 6))
def test_grouped_mm_rows_against_the_sum_over_groups(groups: list[int], k: int, n: int) -> None:
    a_shape, b_shape = (sum(groups), k), (len(groups), k, n)
    cost = ATEN.get("_grouped_mm").fn(a_shape, b_shape, (len(groups),), None, None, out=((sum(groups), n),))
    assert cost.macs == sum(m * k * n for m in groups)
    assert cost.flops == 2 * cost.macs


@settings(max_examples=25, deadline=None)
@given(g=st.integers(1, 4), m=st.integers(1, 5), k=st.integers(1, 5), n=st.integers(1, 5), bias=st.booleans())
def test_grouped_mm_other_layouts(g: int, m: int, k: int, n: int, bias: bool) -> None:
    rule = ATEN.get("_grouped_mm").fn
    bias_shape = (g, n) if bias else None
    three = rule((g, m, k), (g, k, n), None, bias_shape, None, out=((g, m, n),))
    assert three.macs == g * m * k * n and three.flops == 2 * three.macs + (g * m * n if bias else 0)
    columns = rule((g, m, k), (k, g * n), (g,), None, None, out=((m, g * n),))
    assert columns.macs == sum(m * k * n for _ in range(g))
    inner = rule((m, g * k), (g * k, n), (g,), None, None, out=((g, m, n),))
    assert inner.macs == sum(m * k * n for _ in range(g))


def test_grouped_mm_counted_on_a_real_call() -> None:
    class Grouped(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
            return torch._grouped_mm(a, b, offs=offs)

    sizes = [3, 0, 5, 2]  # rows of a per group; the kernel wants rows of 16 bytes
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0).to(torch.int32)
    report = nncost.profile(Grouped(), inputs=(torch.randn(10, 4), torch.randn(4, 4, 8), offs), device="cpu")
    assert report.uncounted == []
    assert report.totals.macs == sum(m * 4 * 8 for m in sizes)


def test_tiny_mixtral_on_meta_gives_the_closed_form() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.MixtralConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_local_experts=4, num_experts_per_tok=2, vocab_size=100, max_position_embeddings=64)
    model = transformers.MixtralForCausalLM(config).eval()
    tokens = 8
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, tokens, dtype=torch.long)})
    hidden, inner, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    head_dim = hidden // heads
    kv = config.num_key_value_heads * head_dim
    per_token = config.num_hidden_layers * (
        2 * hidden * hidden + 2 * hidden * kv  # q, o; k, v
        + 2 * heads * tokens * head_dim  # Q·Kᵀ and P·V, dense
        + hidden * config.num_local_experts  # router
        + config.num_experts_per_tok * 3 * hidden * inner  # gate, up, down of each chosen expert
    ) + hidden * config.vocab_size  # lm_head
    assert report.totals.macs == tokens * per_token
    assert report.uncounted == []
    # _grouped_mm's meta kernel takes no float32: nncost answers it on meta (capture/meta_kernels.py)
    assert report.execution == "meta" and report.fallback_reason is None
