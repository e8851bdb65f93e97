"""Guarantee: profiling leaves the user's model exactly as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nncost


class WithEverything(nn.Module):
    """BatchNorm (running stats move in train mode), dropout, a shared module, a tied weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.embed = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        y = self.act(y) * self.scale  # the same ReLU twice
        return self.head(self.drop(y.mean((2, 3))))


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "param_ids": [id(p) for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "attrs": [sorted(vars(m)) for m in model.modules()],
        "buffers": [name for name, _ in model.named_buffers()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
             len(m._forward_hooks_with_kwargs), len(m._forward_hooks_always_called))
            for m in model.modules()
        ],
        "devices": [t.device for t in model.state_dict().values()],
        "dtypes": [t.dtype for t in model.state_dict().values()],
    }


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_model_is_left_exactly_as_it_was(device: str, training: bool, dtype: torch.dtype | None) -> None:
    model = WithEverything().train(training)
    model.drop.eval()  # a mixed state that a blanket model.train() would not restore
    before = snapshot(model)
    report = nncost.profile(model, (3, 16, 16), batch_size=2, device=device, dtype=dtype)
    assert report.totals.macs > 0
    after = snapshot(model)
    for key in before:
        if key == "state":
            for name, value in before["state"].items():  # type: ignore[union-attr]
                assert torch.equal(value, after["state"][name]), name  # type: ignore[index]
        else:
            assert before[key] == after[key], key
    assert model.head.weight is model.embed.weight


def test_running_stats_do_not_move_even_in_train_mode() -> None:
    model = WithEverything().train()
    stats = model.bn.running_mean.clone(), model.bn.running_var.clone(), model.bn.num_batches_tracked.clone()
    nncost.profile(model, (3, 8, 8), device="cpu")
    assert torch.equal(stats[0], model.bn.running_mean)
    assert torch.equal(stats[1], model.bn.running_var)
    assert torch.equal(stats[2], model.bn.num_batches_tracked)


def test_user_hooks_survive_and_are_not_run_twice() -> None:
    model = WithEverything()
    calls: list[str] = []
    model.conv.register_forward_hook(lambda *_: calls.append("hook"))
    nncost.profile(model, (3, 8, 8))
    # once in each forward nncost ran: at batch 1, and at 2 for the feature maps of a sample
    # (docs/conventions.md)
    assert calls == ["hook"] * 2
    assert len(model.conv._forward_hooks) == 1


def test_global_rng_is_untouched_by_a_real_run() -> None:
    model = WithEverything()
    state = torch.random.get_rng_state()
    nncost.profile(model, (3, 8, 8), device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())


def test_a_deep_copy_profiles_to_the_same_figures() -> None:
    model = WithEverything()
    a = nncost.profile(model, (3, 8, 8))
    b = nncost.profile(copy.deepcopy(model), (3, 8, 8))
    assert (a.totals.macs, a.totals.flops, a.totals.params) == (b.totals.macs, b.totals.flops, b.totals.params)


class CachesInForward(nn.Module):
    """Like torchvision's AnchorGenerator: rebinds a plain tensor attribute during forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.anchors = [torch.ones(3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.anchors = [a.to(x.device) for a in self.anchors]
        self.seen = True
        return self.fc(x) + self.anchors[0].sum()


def test_attributes_rebound_in_forward_are_put_back() -> None:
    model = CachesInForward()
    anchors = model.anchors
    nncost.profile(model, (4,))  # on meta, the forward would leave meta anchors behind
    assert model.anchors is anchors and model.anchors[0].device.type == "cpu"
    assert not hasattr(model, "seen")
    assert model(torch.ones(1, 4)).shape == (1, 4)
