"""ONNX exports of torchvision models against torchvision's published ``_ops`` and ``num_params``.

A few models by default; every classification model with ``bench/onnx_zoo.py`` (docs/onnx_zoo.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import load_script

pytest.importorskip("torchvision")
pytest.importorskip("onnx")


bench = load_script("bench/onnx_zoo.py", "nncost_bench_onnx_zoo")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_0"])
def test_export_macs_and_params(name: str, tmp_path: Path) -> None:
    row = bench.check(name, tmp_path)
    assert not row.error, row.error
    assert not row.uncounted, row.uncounted
    assert row.macs_match, f"{name}: {row.macs / 1e9:.4f} G MACs, torchvision's _ops {row.ops}"
    # The file holds the module's parameters, less BatchNorm's γ and β (folded into the convs, which
    # gain one bias element per BatchNorm channel), less what the exporter stored once because the
    # values were equal (each extra user reads it through an Identity node).
    bn_channels = row.bn_affine // 2
    assert row.unexported == 0  # every module ran in the exported forward
    assert row.file_params == row.num_params - row.bn_affine + bn_channels - row.merged
    # rows are named after the modules of the exported model
    assert row.layer_names and row.layer_names <= row.module_names, row.layer_names - row.module_names
