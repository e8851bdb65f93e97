"""One name per concept: the enums of precision, allocator, sharding and layout rejections, and
the one resolver of a device name.

Each enum's members are their strings (``StrEnum``), so the requests, records and documents
that carried the strings carry the members unchanged: equal, hashed, printed and written to
JSON as the strings were.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nncost.analyses.parallel import Cluster, Layouts, plan
from nncost.analyses.sharding import STRATEGIES, Sharding, per_gpu
from nncost.analyses.split import LayoutRejected, Rejection, check_tensor_parallel
from nncost.errors import BadRequest
from nncost.hardware import ALLOCATORS, Allocator, calibration, catalogue_device
from nncost.precision import PRECISIONS, Precision, precision_named, resolve_precision
from nncost.records.parallel import Layout, Rejected
from nncost.simulation.step import capture_step

ENUMS = (Precision, Allocator, Sharding, Rejection)


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_a_member_is_its_string(enum: type) -> None:
    for member in enum:
        text = member.value
        assert member == text and hash(member) == hash(text) and {text: 1}[member] == 1
        assert str(member) == f"{member}" == text
        assert json.dumps(member) == json.dumps(text)
        assert json.dumps({"x": member}, indent=1) == json.dumps({"x": text}, indent=1)


def test_the_cli_tuples_are_the_enums_names_as_plain_strings() -> None:
    """argparse shows its choices with repr(): plain strings keep its messages as they were."""
    assert PRECISIONS == ("fp32", "bf16", "fp16", "bf16-mixed", "fp16-mixed")
    assert ALLOCATORS == ("cpu", "cuda")
    assert STRATEGIES == ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")
    for names in (PRECISIONS, ALLOCATORS, STRATEGIES):
        assert all(type(name) is str for name in names)


def test_the_names_load_without_torch() -> None:
    code = ("import sys, nncost.precision, nncost.hardware.catalogue, nncost.analyses.sharding, nncost.cli; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("name", "mixed", "compute", "grad_scaler"), [
    ("fp32", False, "fp32", False), ("bf16", False, "bf16", False), ("fp16", False, "fp16", False),
    ("bf16-mixed", True, "bf16", False), ("fp16-mixed", True, "fp16", True)])
def test_a_precision_says_what_it_is(name: str, mixed: bool, compute: str, grad_scaler: bool) -> None:
    precision = precision_named(name)
    assert (precision.mixed, precision.compute, precision.grad_scaler) == (mixed, compute, grad_scaler)
    setting = resolve_precision(name)
    assert setting.name is precision and setting.mixed == mixed and setting.grad_scaler == grad_scaler
    assert setting.autocast_dtype == ({"bf16": torch.bfloat16, "fp16": torch.float16}[compute] if mixed else None)


def test_an_unknown_precision_or_sharding_names_the_known_ones() -> None:
    with pytest.raises(BadRequest, match="unknown precision 'fp8'; choose one of fp32, bf16, fp16, bf16-mixed"):
        precision_named("fp8")
    with pytest.raises(BadRequest, match="unknown sharding 'zero4'; choose one of none, ddp, zero1"):
        per_gpu({}, gpus=2, sharding="zero4", largest_layer_bytes=0)


@pytest.mark.parametrize("sharding", list(Sharding))
def test_what_a_sharding_divides(sharding: Sharding) -> None:
    breakdown = {"parameters": 800, "gradients": 800, "optimizer_state": 1600, "activations": 80, "temporaries": 0,
                 "inputs": 8}
    share = per_gpu(breakdown, gpus=4, sharding=sharding, largest_layer_bytes=100)
    assert (share["optimizer_state"] < 1600) == sharding.shards_optimizer
    assert (share["gradients"] < 800) == sharding.shards_gradients
    assert (share["parameters"] < 800) == sharding.shards_parameters


# -- one resolver of a device name --------------------------------------------------------------
def test_a_catalogue_name_resolves_to_its_datasheet() -> None:
    assert calibration.resolve_device(" H100-SXM ") == catalogue_device("h100-sxm")
    assert catalogue_device("h100-sxm").kind is Allocator.CUDA
    with pytest.raises(BadRequest, match="unknown hardware"):
        calibration.resolve_device("h1000", calibrate=False)


def test_the_cpu_resolves_without_a_calibration_when_none_is_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    def calibrating(**_: object) -> None:
        raise AssertionError("calibrated")

    monkeypatch.setattr(calibration, "cpu_device", calibrating)
    cpu = calibration.resolve_device("CPU", calibrate=False)
    assert cpu.name == "cpu" and cpu.kind is Allocator.CPU
    assert cpu.memory_bytes == calibration.memory_bytes() and not cpu.peak_flops


def test_the_cpu_resolves_to_its_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    heard: list[object] = []
    measured = calibration.uncalibrated_cpu()
    monkeypatch.setattr(calibration, "cpu_device", lambda **kwargs: heard.append(kwargs) or measured)
    assert calibration.resolve_device("cpu", say=print) is measured
    assert heard == [{"refresh": False, "say": print}]


# -- the allocator by its name ---------------------------------------------------------------
def test_a_step_takes_its_allocator_semantics_by_that_name() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    args = (torch.randn(2, 8),)
    cpu = capture_step(model, args, {}, optimizer="adam", allocator="cpu")
    cuda = capture_step(model, args, {}, optimizer="adam", allocator="cuda")
    assert cpu.state_tensor_bytes != cuda.state_tensor_bytes  # Adam's step: host on CUDA
    # the optimizers' CUDA implementation is foreach, the CPU's a loop over the parameters
    assert any(op.op.startswith("_foreach_") for op in cuda.ops)
    assert not any(op.op.startswith("_foreach_") for op in cpu.ops)


# -- rejected layouts, by their reason ---------------------------------------------------------
@pytest.mark.parametrize(("heads", "kv_heads", "size", "per_node", "reason"), [
    (None, None, 2, None, Rejection.NO_HEADS), (6, 6, 4, None, Rejection.HEADS),
    (8, 3, 2, None, Rejection.KV_HEADS), (16, 16, 16, 8, Rejection.BEYOND_NODE)])
def test_a_tensor_parallel_check_says_why_by_its_reason(heads: int | None, kv_heads: int | None, size: int,
                                                          per_node: int | None, reason: Rejection) -> None:
    with pytest.raises(LayoutRejected) as caught:
        check_tensor_parallel(heads, size, gpus_per_node=per_node, hardware="h100-sxm", kv_heads=kv_heads)
    assert caught.value.reason is reason and isinstance(caught.value, BadRequest)


def test_a_link_the_catalogue_lacks_is_a_reason() -> None:
    cluster = Cluster("x", 1e15, 0.5, 3e12, "NVLink", None, 8, "", None)
    with pytest.raises(LayoutRejected) as caught:
        cluster.link(4)
    assert caught.value.reason is Rejection.NO_INTERCONNECT
    with pytest.raises(LayoutRejected) as caught:
        Cluster("x", 1e15, 0.5, 3e12, "NVLink", 900e9, 8, "", None).link(16)
    assert caught.value.reason is Rejection.NO_NETWORK


def test_a_rejected_layout_is_written_as_its_reasons_text() -> None:
    rejected = Rejected(Rejection.OVER_MEMORY, 3, 1, 2)
    assert json.dumps(asdict(rejected)) == json.dumps(asdict(Rejected("over the device memory", 3, 1, 2)))


def test_the_plan_counts_layouts_by_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reason a check raises is counted as one line, whatever its message's own numbers."""
    def check(self: Layouts, layout: Layout, cluster: object = None) -> None:
        t = layout.tensor_parallel
        raise LayoutRejected(Rejection.HEADS if t > 1 else Rejection.STAGES, f"numbers of its own: {t}")

    monkeypatch.setattr(Layouts, "check", check)
    cluster = Cluster("h100-sxm", 989.5e12, 0.5, 3.35e12, "NVLink 4", 900e9, 8, "", 100e9)
    found = plan(SimpleNamespace(batch_size=2), cluster, gpus=4, budget=1)  # type: ignore[arg-type]
    assert {r.reason for r in found.rejected} == {str(Rejection.HEADS), str(Rejection.STAGES)}
    assert found.considered == sum(r.count for r in found.rejected) and found.fitting == 0
