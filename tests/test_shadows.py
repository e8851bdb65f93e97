"""Values a meta run knows (nncost.capture.shadows): questions about them are answered, others still stop
the run, and the answers are the real values."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

import nncost
from nncost.capture.scopes import Scopes
from nncost.capture.shadows import LIMIT, Shadows, entered
from nncost.capture.tracer import Tracer
from nncost.rules import ATEN
from nncost.simulation.measure import measure_cpu_peak

META = torch.device("meta")


def traced(fn: Any) -> tuple[Any, Tracer]:
    """``fn(shadows)`` run under a tracer with shadows kept inside it, as a capture runs it."""
    tracer = Tracer(ATEN, lambda: 0, memoise=True)
    shadows = Shadows()
    with tracer, entered(shadows):
        value = fn(shadows)
    return value, tracer


def test_questions_about_values_made_from_shapes_get_the_real_answers() -> None:
    def run(_: Shadows) -> Any:
        positions = torch.arange(3, 11, device=META).unsqueeze(0).expand(2, -1)
        steps = torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1)
        packed = (steps != 1).cumsum(-1)
        return (bool((packed[:, -1] == 0).all()), positions.sum().item(), positions[1].tolist(),
                (positions * 2).cpu())

    (one_sequence, total, row, host), tracer = traced(run)
    assert one_sequence is True
    assert total == 2 * sum(range(3, 11))
    assert row == list(range(3, 11))
    assert isinstance(host, torch.Tensor) and host.device.type == "cpu"
    assert torch.equal(host, 2 * torch.arange(3, 11).unsqueeze(0).expand(2, -1))
    copies = [op for op in tracer.ops if op.op == "_to_copy"]
    assert copies and copies[-1].read_bytes == 2 * 8 * 8  # the copy to the host, recorded at its size


def test_seeded_inputs_and_writes_through_views_are_followed() -> None:
    ids = torch.tensor([[5, 1, 4], [2, 7, 0]])

    def run(shadows: Shadows) -> Any:
        meta_ids = torch.empty_like(ids, device=META)
        shadows.seed(meta_ids, ids)
        grid = torch.zeros(2, 3, dtype=torch.long, device=META)
        grid[0].add_(meta_ids[1])  # through a view of the grid
        filled = torch.empty(4, device=META).fill_(2.5)
        # an index list becomes a tensor below the dispatcher: transformers' padding check on the ids' ends
        padded = 0 in meta_ids[:, [-1, 0]]
        return meta_ids.max().item(), grid.sum().item(), grid[1].sum().item(), filled.sum().item(), padded

    (largest, total, second_row, filled, padded), _ = traced(run)
    assert largest == 7 and total == 9 and second_row == 0 and filled == 10.0 and padded


@pytest.mark.parametrize("make", [
    lambda s: torch.randn(3, device=META),  # random
    lambda s: torch.empty(3, device=META),  # undefined
    lambda s: torch.arange(LIMIT + 1, device=META),  # larger than the shadows' limit
    lambda s: torch.arange(3, device=META) + torch.empty(3, device=META),  # one operand unknown
])
def test_values_not_known_still_stop_the_run(make: Any) -> None:
    with pytest.raises(RuntimeError, match="meta"):
        traced(lambda s: make(s).sum().item())


def test_a_write_from_unknown_values_spoils_the_shadow_and_its_views() -> None:
    def run(_: Shadows) -> Any:
        x = torch.arange(4, device=META)
        view = x[1:]
        x.add_(torch.empty(4, dtype=torch.long, device=META))
        return view.sum().item()

    with pytest.raises(RuntimeError, match="meta"):
        traced(run)


# -- transformers' decoders without a cache -------------------------------------------------------
LLAMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 256, "use_cache": False}


def llama() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))


def closed_form_macs(batch: int, seq: int) -> int:
    """Projections and MLP per token, QKᵀ and PV over every query head, the LM head."""
    d, layers, kv = LLAMA["hidden_size"], LLAMA["num_hidden_layers"], LLAMA["num_key_value_heads"] * 16
    per_token = layers * (2 * d * d + 2 * d * kv + 3 * d * LLAMA["intermediate_size"]) + d * LLAMA["vocab_size"]
    return batch * (seq * per_token + layers * 2 * seq * seq * d)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_decoder_without_cache_runs_on_meta(batch: int) -> None:
    """With no cache and no mask, transformers asks whether the position ids pack several sequences into a
    row (``find_packed_sequence_indices``: ``.all()`` of a comparison, read as a bool); the positions
    are an ``arange``, so the answer is known and the forward stays on meta."""
    model = llama()
    ids = torch.randint(0, LLAMA["vocab_size"], (batch, 16))
    report = nncost.profile(model, kwargs={"input_ids": ids})
    assert report.execution == "meta" and report.fallback_reason is None
    assert report.totals.macs == closed_form_macs(batch, 16)


def test_a_training_step_without_cache_runs_on_meta_and_matches_the_measured_peak() -> None:
    """The step that stopped with "needs real values" before: simulated on meta, against the CPU
    allocator's events over a real step."""
    model = llama()
    ids = torch.randint(0, LLAMA["vocab_size"], (2, 32))
    simulated = nncost.memory(model, kwargs={"input_ids": ids}, optimizer="adamw", allocator="cpu")
    measured = measure_cpu_peak(model, (), {"input_ids": ids}, mode="train", optimizer="adamw")
    assert simulated.forward_macs == closed_form_macs(2, 32)
    assert simulated.peak_bytes == pytest.approx(measured, rel=0.01)


def test_the_model_is_left_as_it_was() -> None:
    model = llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nncost.memory(model, kwargs={"input_ids": torch.zeros(2, 8, dtype=torch.long)}, optimizer="adamw",
                  allocator="cpu")
    assert all(torch.equal(v, model.state_dict()[k]) and model.state_dict()[k].device.type == "cpu"
               for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_scopes_are_untouched_by_a_shadowed_run() -> None:
    """Shadows runs its CPU work outside every mode: the tracer records the model's operators only."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    scopes = Scopes(model)
    tracer = Tracer(ATEN, scopes.current, memoise=True)
    with tracer, entered(Shadows()):
        torch.arange(4, device=META)[[0, 2]].sum().item()
    assert [op.op for op in tracer.ops] == ["arange", "index", "sum"]


class AsksItsInput(torch.nn.Module):
    """Branches on a value of its input, and notes the device of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.devices: list[str] = []

    def forward(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        self.devices.append(x.device.type)
        for _ in range(int(steps.max())):
            x = self.fc(x)
        return x


def test_a_question_about_the_input_is_answered_and_no_batch_runs_for_real() -> None:
    """The request's inputs carry values; the other batches a report captures (for the bytes a sample adds)
    are made without values, and a forward that needs them is not run for real at those batches."""
    model = AsksItsInput()
    report = nncost.profile(model, inputs=(torch.randn(1, 4), torch.tensor([3, 1])))
    assert report.execution == "meta"
    assert report.totals.macs == 3 * 4 * 4  # three calls of the layer, as the input's values say
    assert "cpu" not in model.devices


class CountedShadows(Shadows):
    made: ClassVar[list[CountedShadows]] = []

    def __init__(self) -> None:
        super().__init__()
        CountedShadows.made.append(self)


class AsksOneBuffer(torch.nn.Module):
    """A CNN block whose forward reads one small buffer's value (how many times to apply its conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)
        self.register_buffer("repeats", torch.tensor(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(int(self.repeats)):
            x = self.bn(self.conv(x))
        return x


def test_no_value_is_copied_when_nothing_asks_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward that asks no question about values keeps no shadows at all: no parameter or buffer is
    copied, and no dispatch or function mode runs beside the tracer."""
    monkeypatch.setattr(CountedShadows, "made", [])
    monkeypatch.setattr("nncost.capture.run.Shadows", CountedShadows)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))
    report = nncost.profile(model, (3, 8, 8))
    assert report.execution == "meta" and CountedShadows.made == []


def test_only_the_values_asked_for_are_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward asks one buffer's value: shadows are kept for that run, and of the six parameters and
    buffers seeded (conv weight and bias, BatchNorm's four, the buffer asked) only the one asked for
    is copied."""
    monkeypatch.setattr(CountedShadows, "made", [])
    monkeypatch.setattr("nncost.capture.run.Shadows", CountedShadows)
    report = nncost.profile(AsksOneBuffer(), (3, 8, 8))
    assert report.execution == "meta"
    assert report.totals.macs == 2 * 8 * 8 * 3 * 3 * 3 * 3  # the conv twice, as the buffer says
    assert CountedShadows.made and all(shadows.copies == 1 for shadows in CountedShadows.made)
