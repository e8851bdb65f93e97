"""Values a meta run knows (nncost.capture.shadows): questions about them are answered, others still stop
the run, and the answers are the real values."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import nncost
from nncost.capture.scopes import Scopes
from nncost.capture.shadows import LIMIT, Shadows, entered
from nncost.capture.tracer import Tracer
from nncost.memory.measure import measure_cpu_peak
from nncost.rules import ATEN

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
