"""Saved torch.export programs (.pt2): profiled through the same capture and rules as the module."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import nncost
from cli_runs import cli
from nncost.errors import ModelNotFound
from nncost.sources.models import resolve

torchvision = pytest.importorskip("torchvision")


class Small(nn.Module):
    """A conv, a module called twice (two rows), a functional op and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(x * 2)
        return self.head(x.mean(dim=(2, 3)))


def save(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, **kwargs: object) -> Path:
    torch.export.save(torch.export.export(model.eval(), example, **kwargs), str(path))  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def resnet18_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = torchvision.models.resnet18(weights=None)
    return save(model, (torch.randn(1, 3, 224, 224),), tmp_path_factory.mktemp("pt2") / "resnet18.pt2")


def rows(report: nncost.Report) -> list[tuple[str, str, int, int, int]]:
    return [(layer.name, layer.type, layer.params, layer.macs, layer.flops) for layer in report.layers]


def test_small_program_profiles_like_its_module(tmp_path: Path) -> None:
    model = Small()
    path = save(model, (torch.randn(2, 3, 12, 10),), tmp_path / "small.pt2")
    direct = nncost.profile(model, (3, 12, 10), batch_size=2)
    spec = resolve(str(path))
    exported = nncost.profile(spec.build(), inputs=spec.example_inputs[0])  # type: ignore[index]
    # Same rows: names from the module tree, the original class names, the same counts.
    assert rows(exported)[1:] == rows(direct)[1:]
    assert exported.layers[0].type == "Small"
    assert [layer.name for layer in exported.layers].count("act") == 2  # called twice, two rows
    assert exported.totals.params == direct.totals.params == 8 * 3 * 9 + 2 * 8 + 8 * 5 + 5
    assert exported.totals.buffers == direct.totals.buffers
    assert exported.totals.macs == direct.totals.macs == 2 * 12 * 10 * 8 * 3 * 9 + 2 * 8 * 5


def test_resnet18_program_matches_the_module_and_torchvision(resnet18_pt2: Path) -> None:
    code, text = cli(str(resnet18_pt2), "--format", "json")
    assert code == 0
    data = json.loads(text)
    direct = nncost.profile(torchvision.models.resnet18(weights=None), (3, 224, 224))
    meta = torchvision.models.get_model_weights("resnet18").DEFAULT.meta
    assert data["totals"]["params"] == direct.totals.params == meta["num_params"]
    assert data["totals"]["macs"] == direct.totals.macs
    assert data["totals"]["macs"] == pytest.approx(meta["_ops"] * 1e9, rel=0.005)  # _ops is GMACs
    assert data["totals"]["flops"] == direct.totals.flops
    assert [(row["name"], row["type"], row["macs"]) for row in data["layers"][1:]] == [
        (layer.name, layer.type, layer.macs) for layer in direct.layers[1:]]
    assert data["layers"][0]["type"] == "ResNet"


def test_example_inputs_are_the_default_and_batch_rescales_a_dynamic_program(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=64)
    path = save(Small(), (torch.randn(2, 3, 12, 10),), tmp_path / "dyn.pt2", dynamic_shapes=({0: batch},))
    code, text = cli(str(path), "--format", "json")
    assert code == 0
    data = json.loads(text)
    assert data["batch_size"] == 2 and data["layers"][0]["input_shapes"] == [[2, 3, 12, 10]]
    code, text = cli(str(path), "--format", "json", "--batch", "4")
    assert code == 0
    assert json.loads(text)["layers"][0]["input_shapes"] == [[4, 3, 12, 10]]
    assert json.loads(text)["totals"]["macs"] == 2 * data["totals"]["macs"]


def test_an_input_size_the_program_was_not_exported_for_is_a_clear_error(
    resnet18_pt2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(str(resnet18_pt2), "--input", "3x128x128")
    err = capsys.readouterr().err
    assert code == 2
    assert "224" in err and "128" in err and "Traceback" not in err


def test_a_program_compares_equal_to_its_module(resnet18_pt2: Path) -> None:
    comparison = nncost.compare(["resnet18", str(resnet18_pt2)])
    assert all(value == 1.0 for value in comparison.ratios[1].values())
    assert [stage.name for stage in comparison.stages][:2] == ["conv1", "bn1"]


def rewritten(source: Path, target: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """A copy of the archive with each member changed (``None`` drops it)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            content = change(name, old.read(name))
            if content is not None:
                new.writestr(name, content)


@pytest.mark.parametrize("damage", ["truncated", "not_zip", "empty", "foreign_zip", "broken_json", "no_weights"])
def test_damaged_files_are_one_clear_error(
    resnet18_pt2: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = resnet18_pt2.read_bytes()
    path = tmp_path / f"{damage}.pt2"
    if damage == "foreign_zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    elif damage == "broken_json":
        rewritten(resnet18_pt2, path, lambda name, content: content[: len(content) // 2]
                  if name.endswith("models/model.json") else content)
    elif damage == "no_weights":
        rewritten(resnet18_pt2, path, lambda name, content: None if "/weights/" in name else content)
    else:
        path.write_bytes({"truncated": data[: len(data) - 4096], "not_zip": b"not a zip", "empty": b""}[damage])
    with pytest.raises(ModelNotFound, match=r"torch\.export"):
        resolve(str(path))
    code, _ = cli(str(path))
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err and "Traceback" not in err and "W1" not in err  # no torch log lines either
    assert len(err.strip().splitlines()) == 1


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(str(tmp_path / "nowhere.pt2"))
    err = capsys.readouterr().err
    assert code == 2 and "no such file" in err and "nowhere.pt2" in err
