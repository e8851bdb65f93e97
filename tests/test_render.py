"""Renderers show the report's figures; they compute none of their own."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import nncost


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
