"""--measure-time: real per-layer latency on the CPU, the model left untouched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import nncost
from nncost.capture.timing import measure_times
from nncost.cli import run
from nncost.errors import BadRequest, NeedsWeights
from nncost.render.formats import row_cells


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Dropout()), nn.Flatten(),
                         nn.Linear(8 * 14 * 14, 10))


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "ids": [id(p) for p in model.parameters()] + [id(b) for b in model.buffers()],
        "dtypes": [p.dtype for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "buffers": [name for name, _ in model.named_buffers()],
    }


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_the_model_is_left_untouched(dtype: torch.dtype | None) -> None:
    model = small_cnn().train()
    before = snapshot(model)
    times = measure_times(model, (torch.randn(2, 3, 16, 16),), {}, dtype=dtype, repeats=2, warmup=1)
    after = snapshot(model)
    assert after["ids"] == before["ids"] and after["dtypes"] == before["dtypes"]
    assert after["training"] == before["training"] and after["hooks"] == before["hooks"]
    assert after["buffers"] == before["buffers"]
    for key, value in before["state"].items():  # type: ignore[attr-defined]
        assert torch.equal(after["state"][key], value), key  # type: ignore[index]
    assert len(times.seconds) == len(list(model.modules())) and all(s > 0 for s in times.seconds)
    assert times.names[0] == "" and times.names[1] == "0" and times.types[1] == "Conv2d"


def test_hooks_are_removed_when_the_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(RuntimeError):
        measure_times(model, (torch.randn(2, 5),), {}, repeats=1, warmup=0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_profile_puts_the_medians_on_every_layer_with_mfu() -> None:
    model = small_cnn()
    passes: list[int] = []
    report = nncost.profile(model, (3, 16, 16), batch_size=2, measure_time=True, repeats=3,
                            on_pass=lambda: passes.append(1))
    assert len(passes) == 2 + 3  # warm-up, then the timed passes
    assert all(layer.measured_seconds and layer.measured_seconds > 0 for layer in report.layers)
    r, t = report.roofline, report.totals
    assert r is not None and r.hardware == "cpu" and t.measured_seconds and t.estimated_seconds
    assert r.achieved_flops == pytest.approx(t.flops / t.measured_seconds)
    assert r.mfu == pytest.approx(r.achieved_flops / r.peak_flops)
    assert r.measured_samples_per_second == pytest.approx(2 / t.measured_seconds)
    # each call's interval encloses its children's, pass by pass; medians keep that within noise
    assert report.layers[0].measured_seconds >= 0.5 * max(layer.measured_seconds for layer in report.layers[1:])


class Uneven(nn.Module):
    """Slow on every other call: a forward timed in some passes and its layers in others would
    disagree by the sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % 2:
            time.sleep(0.02)
        return self.inner(x)


def test_the_model_row_is_the_measured_forward() -> None:
    model = nn.Sequential(Uneven(), nn.ReLU())
    report = nncost.profile(model, (4,), measure_time=True, repeats=3)
    total = report.totals.measured_seconds
    assert total is not None and report.layers[0].measured_seconds == total
    assert row_cells(report.layers[0], report)[-1] == "100.0%"
    # the shares are of the same passes: the slow child is most of the forward, never more
    assert 0.5 * total < (report.layers[1].measured_seconds or 0.0) <= total


def test_time_needs_real_weights_and_a_real_device() -> None:
    with torch.device("meta"):
        model = small_cnn()
    with pytest.raises(NeedsWeights):
        measure_times(model, (torch.randn(1, 3, 16, 16),), {})
    with pytest.raises(BadRequest):
        measure_times(small_cnn(), (torch.randn(1, 3, 16, 16),), {}, device="meta")
    with pytest.raises(BadRequest):
        measure_times(small_cnn(), (torch.randn(1, 3, 16, 16),), {}, repeats=0)


def test_cli_measure_time_on_the_cpu(tmp_path: Path) -> None:
    source = tmp_path / "cnn.py"
    source.write_text("import torch\nfrom torch import nn\n"
                      "def build():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), "
                      "nn.Linear(8 * 14 * 14, 10))\n")
    chunks: list[str] = []
    assert run([f"{source}:build", "--input", "3x16x16", "--measure-time", "--repeats", "2"], out=chunks.append) == 0
    text = "".join(chunks)
    header = next(line for line in text.splitlines() if "Layer" in line)
    assert "Measured" in header and "%time" in header and "Est. time" in header
    assert "Measured forward" in text and "MFU" in text and "samples/s" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    chunks.clear()
    assert run([f"{source}:build", "--input", "3x16x16", "--measure-time", "--repeats", "1", "--format", "json"],
               out=chunks.append) == 0
    data = json.loads("".join(chunks))
    assert data["totals"]["measured_seconds"] > 0 and data["roofline"]["mfu"] > 0
    assert all(layer["measured_seconds"] > 0 for layer in data["layers"])


def test_mixed_precision_is_measured_under_autocast() -> None:
    seen: list[torch.dtype] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = nn.functional.linear(x, torch.ones(4, 4))
            seen.append(out.dtype)
            return out

    report = nncost.profile(Probe(), (4,), measure_time=True, repeats=1, precision="bf16-mixed")
    assert report.totals.measured_seconds and set(seen[-2:]) == {torch.bfloat16}
