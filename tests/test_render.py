"""Renderers show the report's figures; they compute none of their own."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.render import units
from nncost.render.formats import header, row_cells, summary_lines


@pytest.fixture(scope="module")
def report() -> nncost.Report:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    return nncost.profile(model, (3, 8, 8), batch_size=2)


def test_print_shows_the_table_and_totals(report: nncost.Report, capsys: pytest.CaptureFixture[str]) -> None:
    print(report)
    text = capsys.readouterr().out
    assert "Conv2d" in text and "Peak activations" in text
    assert max(len(line) for line in text.splitlines()) <= 120


def test_json_round_trips(report: nncost.Report) -> None:
    data = json.loads(report.to_json())
    assert data == report.to_dict()
    assert data["totals"]["macs"] == report.totals.macs == 2 * (6 * 6 * 8 * 27 + 288 * 5)


def test_csv_has_one_row_per_layer(report: nncost.Report) -> None:
    lines = report.to_csv().strip().splitlines()
    assert len(lines) == 1 + len(report.layers)
    assert lines[2].startswith("1,0,Conv2d,1,0,2×3×8×8,2×8×6×6,")


def test_markdown_and_html(report: nncost.Report) -> None:
    assert report.to_markdown().count("\n|") == len(report.layers) + 1
    html = report._repr_html_()
    assert html.count("<tr>") >= len(report.layers) and "Conv2d" in html


def test_dataframe(report: nncost.Report) -> None:
    pytest.importorskip("pandas")
    frame = report.to_dataframe()
    assert list(frame["macs"]) == [layer.macs for layer in report.layers]


def test_rich_protocol(report: nncost.Report) -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(report)
    assert "Linear" in console.export_text()


def test_wide_model_table_fits_120_columns() -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = torchvision.models.efficientnet_b0()
    text = nncost.profile(model, (3, 224, 224)).table()
    assert max(len(line) for line in text.splitlines()) <= 120


# -- the terminal table: it fits the width it is given ------------------------------------------
WIDTHS = (60, 80, 120, 200)


@pytest.fixture(scope="module")
def deep_reports() -> dict[str, nncost.Report]:
    """The deepest names and the widest numbers of the faults reported: a two-layer Llama of the
    7B's widths at 2048 tokens, Swin-B, and resnet50 at batch 64; all on meta."""
    transformers = pytest.importorskip("transformers")
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=2))
        swin = timm.create_model("swin_base_patch4_window7_224", pretrained=False)
        resnet = torchvision.models.resnet50()
    return {
        "llama": nncost.profile(llama, kwargs={"input_ids": torch.zeros(1, 2048, dtype=torch.long)}),
        "swin": nncost.profile(swin, (3, 224, 224)),
        "resnet50": nncost.profile(resnet, (3, 224, 224), batch_size=64),
    }


def cells_of(line: str) -> list[str]:
    """A table row's cells: columns are two or more spaces apart; a cell holds at most one."""
    return re.split(r" {2,}", line.strip())


def check_table(report: nncost.Report, width: int) -> str:
    """Assert the table's guarantees at ``width``; return its text."""
    text = report.table(width=width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert all(line == line.rstrip() for line in lines), "trailing spaces"
    headers = header(report)
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    shown = cells_of(lines[rule - 1])
    rows = lines[rule + 1: rule + 1 + len(report.layers)]
    below = " ".join(lines[rule + 1 + len(report.layers):]).split("Params ")[0]
    left_out = re.search(rf"Columns left out to fit {width}: (.*?) \(all in --format csv\)", below)
    dropped = left_out.group(1).split(", ") if left_out else []
    assert sorted(shown + dropped) == sorted(headers), "every header whole, shown or named as left out"
    assert [h for h in headers if h in shown] == shown
    printed: dict[str, set[str]] = {}
    for line, layer in zip(rows, report.layers, strict=True):
        cells = cells_of(line)
        full = row_cells(layer, report)
        assert cells[1:] == [full[headers.index(h)] for h in shown[1:]], line  # every number whole
        label = cells[0]
        printed.setdefault(label, set()).add(layer.label)
        if label != layer.label:
            assert "Names shortened in the middle" in below
            own = layer.label.rsplit(".", 1)[-1]
            assert label.endswith(own) and label[-len(own) - 1] in ".…", (label, layer.label)
            assert re.fullmatch(".*".join(map(re.escape, label.split("…"))), layer.label), (label, layer.label)
    assert all(len(names) == 1 for names in printed.values()), [n for n in printed.values() if len(n) > 1]
    return text


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("model", ["llama", "swin", "resnet50"])
def test_the_table_fits_and_keeps_every_number_header_and_name(
        deep_reports: dict[str, nncost.Report], model: str, width: int) -> None:
    text = check_table(deep_reports[model], width)
    if width == 200:  # room for everything: whole names, every column, nothing to say
        assert "Columns left out" not in text and "Names shortened" not in text


def test_wide_numbers_of_resnet50_at_batch_64(deep_reports: dict[str, nncost.Report]) -> None:
    text = deep_reports["resnet50"].table(width=120)
    assert "%FLOPs" in text and "100.0%" in text and "…" not in text


def test_the_table_takes_the_terminals_width(report: nncost.Report, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    wide = report.table(width=200)
    monkeypatch.setenv("COLUMNS", "50")
    print(report)
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 50 < max(len(line) for line in wide.splitlines())
    assert report.table(width=200) == wide  # width= overrides the terminal
    console = Console(record=True, width=50)
    console.print(report)
    assert max(len(line) for line in console.export_text().splitlines()) <= 50


def test_path_shortens_in_the_middle() -> None:
    assert units.path("layer1.0.downsample.0", 30) == "layer1.0.downsample.0"
    assert units.path("layer1.0.downsample.0", 20) == "layer1.0.down…mple.0"
    assert units.path("model.layers.1.self_attn.q_proj", 20) == "…1.self_attn.q_proj"
    assert units.path("layers.3.blocks.1.attn.softmax", 20) == "…3…1.attn.softmax"


@given(st.lists(st.from_regex(r"[a-z_]{1,9}|[0-9]{1,2}|[a-z]{1,5}[0-9]", fullmatch=True), min_size=1, max_size=7),
       st.integers(1, 60))
def test_path_is_never_longer_than_asked_and_keeps_what_it_shows_in_order(parts: list[str], limit: int) -> None:
    name = ".".join(parts)
    label = units.path(name, limit)
    assert len(label) <= limit
    assert label == name if len(name) <= limit else "…" in label
    assert re.fullmatch(".*".join(map(re.escape, label.split("…"))), name, flags=re.DOTALL)
    if len(parts[-1]) + 1 < limit:  # room for the layer's own name and one ellipsis: it stays whole
        assert label.endswith(parts[-1])


# -- one way to say a thing in every view --------------------------------------------------------
def test_param_memory_names_its_dtype_and_breaks_down_only_several() -> None:
    one = nncost.profile(nn.Linear(256, 256), (256,))
    assert dict(summary_lines(one))["Param memory"] == "257.00 KiB, float32"
    mixed = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256).half())
    line = dict(summary_lines(nncost.profile(mixed, (256,))))["Param memory"]
    assert line.startswith("385.50 KiB (") and "float16" in line and "float32" in line


def test_bound_is_spelled_out_with_measured_times() -> None:
    from html_fixtures import fill_roofline

    report = nncost.profile(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (64,), batch_size=4)
    report = fill_roofline(report)  # estimates and measured times: the table's Bound and Measured columns
    assert header(report)[5:7] == ("Bound", "Measured")
    assert {row_cells(layer, report)[5] for layer in report.layers} <= {"memory", "compute"}
    text = report.table(width=120)
    assert "memory" in text and "mem." not in text and "com." not in text
