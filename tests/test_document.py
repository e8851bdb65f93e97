"""One document: the command line prints exactly the result of the request it built.

``nncost MODEL --format json`` is ``Result.to_json()`` (and, without a step,
``Report.to_json()``) of the same request; every document follows docs/schema.json; the CSV and
Markdown views carry the same sections as the JSON.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from torch import nn

import nncost
from nncost.cli import run

torchvision = pytest.importorskip("torchvision")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())


def cli(*argv: str) -> str:
    chunks: list[str] = []
    assert run(list(argv), out=chunks.append) == 0
    return "".join(chunks)


def test_the_cli_json_is_the_api_json_of_the_same_request() -> None:
    text = cli("resnet18", "--format", "json")
    module = nncost.profile(torchvision.models.resnet18(), (3, 224, 224), name="resnet18")
    assert text == module.to_json()
    assert text == nncost.run(nncost.Request("resnet18")).to_json()
    assert json.loads(text)["totals"]["macs"] == 1_814_073_344  # torchvision's _ops: 1.81 GMACs


def test_train_json_is_the_result_of_the_same_request() -> None:
    text = cli("resnet18", "--batch", "2", "--train", "--optimizer", "adamw", "--format", "json")
    request = nncost.Request("resnet18", nncost.Inputs(batch_size=2), step=nncost.Step(optimizer="adamw"))
    assert text == nncost.run(request).to_json()
    data = json.loads(text)
    assert data["memory"]["mode"] == "train" and data["memory"]["peak_bytes"] > 0


@pytest.mark.parametrize("argv", [
    ("resnet18",),
    ("resnet18", "--depth", "1", "--train", "--batch", "2"),
    ("resnet18", "--hardware", "h100-sxm", "--train", "--gpus", "4", "--sharding", "zero2", "--precision",
     "bf16-mixed"),
    ("resnet18", "--hardware", "a100-80gb", "--train", "--fit"),
    ("resnet18", "--allocator", "cpu", "--checkpointing"),
])
def test_every_document_follows_the_schema(argv: tuple[str, ...]) -> None:
    data = json.loads(cli(*argv, "--format", "json"))
    jsonschema.validate(data, SCHEMA)


def test_the_schema_refuses_what_it_does_not_list() -> None:
    data = json.loads(cli("resnet18", "--depth", "0", "--format", "json"))
    data["totals"]["backward_macs"] = 1  # the /1 document patched the step's figures into the totals
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_a_depth_is_a_view_of_every_layer() -> None:
    full = nncost.profile(torchvision.models.resnet18(), (3, 224, 224))
    shallow = nncost.profile(torchvision.models.resnet18(), (3, 224, 224), depth=1)
    assert len(shallow.layers) == len(full.layers)  # nothing dropped
    assert [layer.name for layer in shallow.shown()] == [layer.name for layer in full.layers if layer.depth <= 1]
    assert len(json.loads(shallow.to_json())["layers"]) == len(shallow.shown())
    timed = nncost.roofline(shallow, "h100-sxm")  # the roofline still sees every layer
    assert timed.totals.estimated_seconds == nncost.roofline(full, "h100-sxm").totals.estimated_seconds


def test_records_do_not_change_after_they_are_built() -> None:
    report = nncost.profile(nn.Sequential(nn.Linear(8, 8)), (8,))
    with pytest.raises(AttributeError):
        report.layers = []  # type: ignore[misc]
    with pytest.raises(AttributeError):
        report.totals.macs = 0  # type: ignore[misc]


@pytest.mark.parametrize("fmt", ["csv", "markdown", "json", "table"])
def test_train_output_carries_the_training_peak_in_every_format(fmt: str) -> None:
    text = cli("resnet18", "--batch", "2", "--train", "--format", fmt)
    memory = nncost.memory(torchvision.models.resnet18(), (3, 224, 224), batch_size=2, name="resnet18")
    if fmt == "csv":
        layers, section = text.split("\n\n")
        assert next(csv.DictReader(io.StringIO(layers)))["name"] == ""  # the model's row first
        rows = dict(csv.reader(io.StringIO(section)))
        assert rows["peak_bytes"] == str(memory.peak_bytes) and rows["mode"] == "train"
    elif fmt == "json":
        assert json.loads(text)["memory"]["peak_bytes"] == memory.peak_bytes
    else:
        assert f"{memory.peak_bytes:,} B" in text and "Peak" in text
