"""Files torch.save and torch.jit.save write (.pt, .pth): a TorchScript archive is profiled, a
state dict is told it holds no architecture, and a module pickled whole is never unpickled
unless the user trusts the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nncost
from cli_runs import cli
from nncost.sources.saved import PICKLED, TORCHSCRIPT, WEIGHTS, inspect_saved

torchvision = pytest.importorskip("torchvision")

# A module whose unpickling leaves a mark: the proof that a file was, or was not, unpickled.
MARKED = '''
from pathlib import Path

from torch import nn

MARK = Path(__file__).with_name("unpickled.mark")


class Marked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)

    def __setstate__(self, state):
        MARK.write_text("code from the file ran")
        super().__setstate__(state)
'''


@pytest.fixture
def marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type[nn.Module]:
    (tmp_path / "marked_net.py").write_text(MARKED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "marked_net", raising=False)
    import marked_net

    return marked_net.Marked  # type: ignore[no-any-return]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_archive_costs_what_the_eager_model_costs(tmp_path: Path) -> None:
    model = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pt"
    torch.jit.save(torch.jit.script(model), path)
    assert inspect_saved(path).kind == TORCHSCRIPT
    code, text = cli(str(path), "--input", "3x32x32", "--format", "json")
    assert code == 0
    scripted = json.loads(text)
    eager = json.loads(cli("resnet18", "--input", "3x32x32", "--format", "json")[1])
    for key in ("params", "buffers", "macs", "flops", "peak_activation_bytes"):
        assert scripted["totals"][key] == eager["totals"][key], key
    assert scripted["uncounted"] == {}
    assert scripted["layers"][0]["type"] == "ResNet"


@pytest.mark.parametrize("legacy", [False, True])
def test_a_state_dict_holds_no_architecture(tmp_path: Path, legacy: bool,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "weights.pth"
    torch.save(nn.Linear(4, 3).state_dict(), path, _use_new_zipfile_serialization=not legacy)
    assert inspect_saved(path).kind == WEIGHTS
    assert cli(str(path), "--input", "4")[0] == 2
    err = capsys.readouterr().err
    assert "holds weights" in err and "no architecture" in err
    for form in ("file.py:Class", "torch.export.save", ".pt2", ".onnx"):
        assert form in err, form


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickled_module_is_not_unpickled_unasked(tmp_path: Path, marked: type[nn.Module], legacy: bool,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "full.pt"
    torch.save(marked(), path, _use_new_zipfile_serialization=not legacy)
    saved = inspect_saved(path)
    assert saved.kind == PICKLED and saved.classes[0] == "marked_net.Marked"
    assert cli(str(path), "--input", "4")[0] == 2
    err = capsys.readouterr().err
    assert "holds a pickled marked_net.Marked" in err and "--trust-pickle" in err and "Traceback" not in err
    assert not (tmp_path / "unpickled.mark").exists()


def test_a_trusted_pickle_is_profiled(tmp_path: Path, marked: type[nn.Module]) -> None:
    path = tmp_path / "full.pt"
    torch.save(marked(), path)
    code, text = cli(str(path), "--input", "4", "--trust-pickle", "--format", "json")
    assert code == 0 and json.loads(text)["totals"]["params"] == 4 * 3 + 3
    assert (tmp_path / "unpickled.mark").exists()
    request = nncost.Request(str(path), nncost.Inputs((4,)), trust_pickle=True)
    report = nncost.run(request).report
    assert report is not None and report.totals.macs == 12


def test_a_pickle_whose_class_is_gone_is_one_message(tmp_path: Path, marked: type[nn.Module],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "full.pt"
    torch.save(marked(), path)
    (tmp_path / "marked_net.py").unlink()
    monkeypatch.delitem(sys.modules, "marked_net")
    assert cli(str(path), "--input", "4", "--trust-pickle")[0] == 2
    assert "unpickling" in capsys.readouterr().err


def test_an_unknown_model_lists_every_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("resnet18x")[0] == 2
    err = capsys.readouterr().err
    for form in ("timm:NAME", "hf:NAME", "file.py:Class", ".pt2", ".pt", ".onnx"):
        assert form in err, form


def test_a_file_that_is_not_a_torch_save_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a model")
    assert cli(str(path))[0] == 2
    assert "not a file torch.save writes" in capsys.readouterr().err


def test_a_program_saved_with_torch_export_as_pt_is_read_as_one(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.export.save(torch.export.export(nn.Linear(4, 3), (torch.randn(2, 4),)), path)
    code, text = cli(str(path), "--format", "json")
    assert code == 0
    data = json.loads(text)
    assert data["batch_size"] == 2 and data["totals"]["macs"] == 2 * 4 * 3
