"""The device catalogue and the calibrated cpu."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from calibration_figures import plausible_figures
from nncost.analyses.roofline import FAMILIES
from nncost.errors import BadRequest
from nncost.hardware import calibration, catalogue_device, names
from nncost.hardware.calibration import resolve_device
from nncost.hardware.catalogue import DTYPES, match_cuda_name

ISSUE_DEVICES = ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l4", "l40s", "t4", "v100",
                 "rtx-4090", "rtx-3090")
GIB = 1 << 30


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NNCOST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_load", lambda: 0.0)  # an idle machine: no busy record measured again
    return tmp_path


@pytest.mark.parametrize("name", ISSUE_DEVICES)
def test_every_figure_has_a_cited_source(name: str) -> None:
    found = catalogue_device(name)
    assert found.kind == "cuda"
    assert found.bandwidth > 1e11 and found.memory_bytes and found.memory_bytes >= 16 * GIB
    assert set(found.peak_flops) <= set(DTYPES) and "fp32" in found.peak_flops
    for figure in [*found.peak_flops, "bandwidth", "memory_bytes"]:
        assert "http" in found.sources[figure], (name, figure)
    # tensor-core columns are never slower than the CUDA-core fp32 column
    assert all(found.peak_flops[d] >= found.peak_flops["fp32"] for d in found.peak_flops)


def test_dense_figures_are_half_the_datasheet_sparsity_figures() -> None:
    # H100 SXM datasheet: BF16 1,979 TFLOPS*, FP8 3,958 TFLOPS*, TF32 989 TFLOPS* (* with sparsity)
    h100 = catalogue_device("h100-sxm")
    assert h100.peak("bf16") == pytest.approx(1979e12 / 2, rel=1e-3)
    assert h100.peak("fp8") == pytest.approx(3958e12 / 2, rel=1e-3)
    assert h100.peak("tf32") == pytest.approx(989e12 / 2, rel=1e-3)
    # A100 datasheet prints dense figures: TF32 156, BF16 312; 40 GB at 1,555 GB/s, 80 GB at 2,039 GB/s
    assert catalogue_device("a100-40gb").peak("bf16") == 312e12
    assert catalogue_device("a100-40gb").bandwidth == 1.555e12
    assert catalogue_device("a100-80gb").bandwidth == 2.039e12
    assert catalogue_device("h200").memory_bytes == 141 * GIB


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(BadRequest, match=r"did you mean.*h100-sxm"):
        resolve_device("h100")
    with pytest.raises(BadRequest, match="unknown hardware"):
        resolve_device("tpu-v5")
    with pytest.raises(BadRequest, match="no bf16 peak"):
        catalogue_device("t4").peak("bf16")
    assert resolve_device("  H100-SXM ").name == "h100-sxm"
    assert set(ISSUE_DEVICES) | {"cpu"} == set(names())


@pytest.mark.parametrize("driver_name, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA L40S", "l40s"),
    ("NVIDIA L4", "l4"), ("Tesla T4", "t4"), ("Tesla V100-SXM2-32GB", "v100"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("NVIDIA GeForce RTX 3090", "rtx-3090"), ("NVIDIA B200", None),
])
def test_cuda_driver_names_map_to_the_catalogue(driver_name: str, key: str | None) -> None:
    assert match_cuda_name(driver_name) == key


def test_cpu_is_calibrated_quickly_and_cached(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # on torch's own threads: on a busy machine the calibration falls back to one thread by itself
    threads = torch.get_num_threads()
    said: list[str] = []
    cpu = resolve_device("cpu", say=said.append)
    assert said and said[0].startswith("measuring this cpu's roofs, once")
    assert cpu.kind == "cpu" and cpu.name == "cpu"
    assert cpu.peak("fp32") > 1e8 and cpu.bandwidth > 1e8 and 0 < cpu.op_overhead_seconds < 1e-3
    assert set(cpu.family_efficiency) == set(FAMILIES)  # the calibration networks cover every family
    assert set(cpu.family_overhead_seconds) == set(cpu.family_efficiency)
    assert all(0 < e <= 1 for e in cpu.family_efficiency.values())  # no family beats its roofs
    assert 0 < cpu.module_call_seconds < 1e-3
    working_sets = [ws for ws, _ in cpu.bandwidth_curve]
    assert working_sets == sorted(working_sets) and len(working_sets) == len(calibration.COPY_KIB)
    assert cpu.bandwidth == cpu.bandwidth_curve[-1][1] and all(bw > 0 for _, bw in cpu.bandwidth_curve)
    stored = json.loads((calibration.cache_dir() / "cpu_calibration.json").read_text())
    key = calibration.cache_key()
    assert f"threads={torch.get_num_threads()}" in key and torch.__version__ in key and key in stored
    assert calibration.problems(stored[key]) == []  # a real calibration passes its own checks
    assert stored[key]["threads"] in (1, threads) and torch.get_num_threads() == threads

    def fail() -> None:
        raise AssertionError("a cached calibration must not run again")

    monkeypatch.setattr(calibration, "calibrate", fail)
    monkeypatch.setattr(calibration, "_load", lambda: 1e3)  # still busy: a record of a busy machine is kept too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", calibration.CalibrationWarning)
        assert resolve_device("cpu").peak_flops == cpu.peak_flops


def test_the_cache_is_keyed_by_thread_count(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(calibration, "calibrate", lambda threads=None: calls.append(1) or plausible_figures())
    threads = torch.get_num_threads()
    try:
        resolve_device("cpu")
        resolve_device("cpu")
        torch.set_num_threads(max(1, threads - 1) if threads > 1 else 2)
        resolve_device("cpu")
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2


def test_the_cli_says_when_it_calibrates_the_cpu(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from nncost.cli import run

    monkeypatch.setattr(calibration, "calibrate", lambda threads=None: plausible_figures())
    assert not calibration.is_cached()
    pytest.importorskip("torchvision")
    argv = ["resnet18", "--input", "3x32x32", "--hardware", "cpu"]
    assert run(argv, out=lambda text: None) == 0
    assert "measuring this cpu's roofs, once" in capsys.readouterr().err
    assert calibration.is_cached()
    assert run(argv, out=lambda text: None) == 0
    assert "measuring" not in capsys.readouterr().err


def test_the_catalogue_is_data_and_the_cpu_is_not_in_it() -> None:
    with pytest.raises(BadRequest, match="measured on this machine"):
        catalogue_device("cpu")
    assert "cpu" in names()
