"""The published serving rows of docs/validation.md (bench/validation_rows.json) are well formed.

Every row names a source the file describes, a model it gives a config for, a device of the
catalogue and the fields nncost needs; every config, built by transformers on meta, has the
model's published parameter count within 1%.  Nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from nncost.hardware.catalogue import names
from scripts import ROOT, load_script

bench = load_script("bench/validation.py", "nncost_bench_validation")
DATA = bench.load()


def test_rows_parse_with_every_field() -> None:
    raw = json.loads(bench.ROWS_FILE.read_text())
    assert len(raw["rows"]) >= 6
    for row in raw["rows"]:
        assert set(row) == set(bench.ROW_FIELDS), row
    for row in DATA["rows"]:
        assert row.source in DATA["sources"] and DATA["sources"][row.source].strip()
        assert row.model in DATA["models"]
        assert row.prompt >= 1 and row.new_tokens >= 2 and row.batch >= 1 and row.tensor_parallel >= 1
        assert row.output_tokens_per_second > 0
        assert row.dtype in ("bfloat16", "float16")
        assert row.batch_meaning in ("batch", "max concurrency")
        assert row.ttft_ms is None or row.ttft_ms > 0


def test_rows_name_catalogue_devices() -> None:
    known = set(names())
    assert {row.hardware for row in DATA["rows"]} <= known


def test_every_model_has_a_sourced_count() -> None:
    for name, model in DATA["models"].items():
        assert model["params"] > 0 and model["params_source"].strip(), name


@pytest.mark.parametrize("name", sorted(DATA["models"]))
def test_config_matches_published_parameter_count(tmp_path, name: str) -> None:
    model = DATA["models"][name]
    config_dir = bench.write_config(tmp_path / name, model["config"])
    config = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in built.parameters())
    assert params == pytest.approx(model["params"], rel=0.01), f"{name}: {params / 1e9:.3f} B"


def test_commands_name_the_row() -> None:
    row = DATA["rows"][0]
    command = row.command("vllm")
    assert f"--prompt {row.prompt} " in command and f"--batch {row.batch} " in command
    assert command.endswith("--engine vllm")
    assert (ROOT / "bench" / "validation_doc.md").exists()
