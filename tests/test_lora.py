"""LoRA from the command line: peft's own adapters, a frozen base, the step against a real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import nncost
from cli_runs import cli_json
from nncost.cli import run
from nncost.request import Inputs, Lora, Request, Step

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128,
          "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 1000, "max_position_embeddings": 512, "tie_word_embeddings": False}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


def peft_trainable(rank: int, targets: Any) -> tuple[int, int]:
    """peft's own count of (trainable, all) parameters for the same config, built here."""
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**{
        k: v for k, v in CONFIG.items() if k not in ("model_type", "architectures")}))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    trainable, total = wrapped.get_nb_trainable_parameters()
    return int(trainable), int(total)


def test_the_step_of_a_lora_model_is_the_measured_step(config_dir: Path) -> None:
    data = cli_json(str(config_dir), "--seq", "128", "--batch", "4", "--train", "--optimizer", "adam", "--hardware",
                    "cpu", "--lora", "8", "--measure")
    d, f = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    kv = d // CONFIG["num_attention_heads"] * CONFIG["num_key_value_heads"]
    per_layer = 8 * ((d + d) + (d + kv) * 2 + (d + d) + (d + f) * 2 + (f + d))  # r·(in + out) per linear
    assert data["totals"]["trainable_params"] == 4 * per_layer == peft_trainable(8, "all-linear")[0]
    assert data["totals"]["params"] == peft_trainable(8, "all-linear")[1]
    memory = data["memory"]
    assert abs(memory["peak_bytes"] - memory["measured_peak_bytes"]) <= 0.02 * memory["measured_peak_bytes"]


def test_named_targets_and_alpha_reach_peft(config_dir: Path) -> None:
    data = cli_json(str(config_dir), "--seq", "16", "--lora", "4", "--lora-targets", "q_proj,v_proj")
    assert data["totals"]["trainable_params"] == peft_trainable(4, ["q_proj", "v_proj"])[0]


def test_targets_that_match_nothing_are_one_sentence(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(config_dir), "--lora", "4", "--lora-targets", "no_such_proj"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncost: error: LoRA:") and "Traceback" not in err


def test_the_users_module_is_left_as_it_was() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    before = {name: p.clone() for name, p in model.state_dict().items()}
    result = nncost.run(Request(model, Inputs((16,), 2), lora=Lora(2, targets=("0", "2")), step=Step()))
    assert result.report is not None and result.report.totals.trainable_params == 2 * (16 + 16) + 2 * (16 + 4)
    assert set(model.state_dict()) == set(before)  # no adapters put on the user's module
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_lora_flags_without_a_rank_are_refused(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(config_dir), "--lora-targets", "q_proj"]) == 2
    assert "go with --lora R" in capsys.readouterr().err
