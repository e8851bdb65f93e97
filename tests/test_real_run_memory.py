"""A real run never takes the machine down: one that needs more memory than there is is refused
before anything is built, an allocation that fails is one sentence, and ``--device meta`` with a
real run is refused as conflicting.  The available memory is read from files in temporary
directories or stubbed; nothing here allocates more than a small model."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
import torch

from nncost import pipeline
from nncost.cli import run as cli
from nncost.errors import NncostError, NotEnoughMemory
from nncost.hardware import machine
from nncost.request import Inputs, Request, Step
from nncost.sources.models import ModelSpec
from nncost.stages import real_run

transformers = pytest.importorskip("transformers")

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
          "max_position_embeddings": 128, "torch_dtype": "bfloat16", "tie_word_embeddings": False}


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The devices named models are built on."""
    seen: list[str] = []
    build = ModelSpec.build

    def spy(self: ModelSpec, device: str = "meta") -> torch.nn.Module:
        seen.append(device)
        return build(self, device)

    monkeypatch.setattr(ModelSpec, "build", spy)
    return seen


def reference_need(dtype: torch.dtype) -> int:
    """The bytes a real run of ``CONFIG`` holds at least, from transformers' own model: its
    parameters and buffers as built, a copy of the floating ones in ``dtype`` where they differ,
    and the margin."""
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    copies = sum(t.numel() * dtype.itemsize for t in tensors if t.is_floating_point() and t.dtype != dtype)
    return int((weights + copies) * (1 + real_run.RUN_MARGIN))


@pytest.mark.parametrize("flag", ["--measure-time", "--measure"])
def test_device_meta_with_a_real_run_is_refused_as_conflicting(flag: str, builds: list[str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["resnet18", flag, "--device", "meta"], out=lambda text: None) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nncost: error: {flag} runs the model for real, which --device meta rules out: drop one of them"
    assert builds == []


def test_a_real_run_past_the_available_memory_is_refused_before_it_is_built(
        llama: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    need = reference_need(torch.bfloat16)  # the config's dtype: the float32 build runs on a bf16 copy
    request = Request(str(llama), Inputs(seq=8), device="cpu")
    monkeypatch.setattr(real_run, "available_memory_bytes", lambda: need - 1)
    with pytest.raises(NotEnoughMemory, match=r"^running .* on cpu needs about .* of memory \(its weights: .* in "
                                              r"float32, a bfloat16 copy of .*\) and this machine has .* available"):
        pipeline.run(request)
    assert "cpu" not in builds
    monkeypatch.setattr(real_run, "available_memory_bytes", lambda: need)
    assert pipeline.run(request).report is not None and "cpu" in builds


def test_no_reading_of_the_memory_is_no_refusal(llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(real_run, "available_memory_bytes", lambda: None)
    assert pipeline.run(Request(str(llama), Inputs(seq=8), device="cpu")).report is not None


def test_a_real_step_past_the_available_memory_is_refused_before_it_runs(
        llama: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(real_run, "available_memory_bytes", lambda: 1 << 16)  # under the weights alone
    step = Step(mode="train", allocator="cpu", measure=True)
    with pytest.raises(NotEnoughMemory, match=r"^one real step of .* \(the simulated step's peak"):
        pipeline.run(Request(str(llama), Inputs(seq=8), step=step))
    assert "cpu" not in builds


@pytest.mark.parametrize("failure", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 234881024 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory."),
])
def test_an_allocation_that_fails_in_a_real_run_is_one_sentence(
        llama: Path, failure: BaseException, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    build = ModelSpec.build

    def failing(self: ModelSpec, device: str = "meta") -> torch.nn.Module:
        if device != "meta":
            raise failure
        return build(self, device)

    monkeypatch.setattr(ModelSpec, "build", failing)
    monkeypatch.setattr(real_run, "available_memory_bytes", lambda: 3 << 30)
    assert cli([str(llama), "--seq", "8", "--device", "cpu"], out=lambda text: None) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nncost: error: building ") and "on cpu ran out of memory (3.00 GiB available now)" in err


def test_other_failures_of_a_real_run_are_not_called_memory() -> None:
    with pytest.raises(RuntimeError, match="a kernel is missing"), real_run.real_run("building it"):
        raise RuntimeError("a kernel is missing")
    with pytest.raises(MemoryError), real_run.real_run("a meta capture", real=False):
        raise MemoryError


def test_a_failed_allocation_reported_as_a_layer_error_is_memory_too() -> None:
    # the capture names the layer a kernel failed in; the allocation it was raised from decides
    with pytest.raises(NotEnoughMemory, match=r"^profiling it on cpu ran out of memory"), \
            real_run.real_run("profiling it on cpu"):
        try:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 13153337344 bytes")
        except RuntimeError as exc:
            raise NncostError("layer 'conv1' (Conv2d) failed on input shapes 4096×3×224×224") from exc


# -- reading the memory available ------------------------------------------------------------

def machine_files(root: Path, meminfo_kb: int | None = None, cgroup: str = "0::/job", limit: str | None = None,
                  usage: int = 0, v1: bool = False, vm_kb: int = 0) -> tuple[Path, Path]:
    proc, groups = root / "proc", root / "cgroup"
    (proc / "self").mkdir(parents=True)
    if meminfo_kb is not None:
        (proc / "meminfo").write_text(f"MemTotal:       99999999 kB\nMemAvailable:   {meminfo_kb} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup + "\n")
    (proc / "self" / "status").write_text(f"Name:\tpython\nVmSize:\t{vm_kb} kB\n")
    if limit is not None:
        group = groups / "memory" if v1 else groups / "job"
        group.mkdir(parents=True)
        names = ("memory.limit_in_bytes", "memory.usage_in_bytes") if v1 else ("memory.max", "memory.current")
        (group / names[0]).write_text(limit + "\n")
        (group / names[1]).write_text(f"{usage}\n")
    return proc, groups


@pytest.mark.parametrize("files, available", [
    ({"meminfo_kb": 1000}, 1000 * 1024),
    ({"meminfo_kb": 1000, "limit": "max"}, 1000 * 1024),  # a cgroup without a limit
    ({"meminfo_kb": 1000, "limit": "900000", "usage": 100000}, 800000),  # a container's limit, under the host's
    ({"meminfo_kb": 1000, "limit": "900000", "usage": 950000}, 0),
    # cgroup v1, mounted at the container's root: the path /proc names is the host's
    ({"meminfo_kb": 1000, "cgroup": "4:memory:/host/path", "limit": "700000", "usage": 100000, "v1": True}, 600000),
    ({"meminfo_kb": 1000, "cgroup": "4:memory:/host/path", "limit": "9223372036854771712", "v1": True}, 1000 * 1024),
])
def test_the_memory_available_is_the_least_of_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         files: dict[str, Any], available: int) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert machine.available_memory_bytes(*machine_files(tmp_path, **files)) == available


def test_the_address_space_limit_counts_what_is_mapped_already(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (10 << 30, resource.RLIM_INFINITY))  # ulimit -v
    proc, groups = machine_files(tmp_path, meminfo_kb=20 << 20, vm_kb=6 << 20)
    assert machine.available_memory_bytes(proc, groups) == 4 << 30


def test_without_proc_psutil_answers_or_nothing_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    monkeypatch.setattr(machine, "_psutil_available", lambda: 12345)
    assert machine.available_memory_bytes(tmp_path / "none", tmp_path / "none") == 12345
    monkeypatch.setattr(machine, "_psutil_available", lambda: None)
    assert machine.available_memory_bytes(tmp_path / "none", tmp_path / "none") is None


def test_this_machine_has_some_memory_available() -> None:
    found = machine.available_memory_bytes()
    assert found is None or 0 < found
