"""A whole training run (--tokens): steps, FLOPs against the closed form 6·N·D + attention, the
GPU-hours arithmetic at the published median MFU, the cost, and every flag's errors."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import pytest

import nncost
from cli_runs import cli
from nncost.analyses.training_run import A100_BF16_PEAK, ACHIEVABLE_MFU, MFU_SOURCE, PUBLISHED_FLOP_RATES
from nncost.errors import BadRequest
from nncost.request import Inputs, Request, Run, Step, token_count

pytest.importorskip("transformers")

HIDDEN, LAYERS, VOCAB, INTERMEDIATE, SEQ, BATCH, GPUS = 256, 2, 1000, 688, 256, 2, 8


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    """A small Llama config directory, as nncost takes it."""
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": VOCAB, "max_position_embeddings": 512,
              "tie_word_embeddings": False, "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def training_run(model: Path, *extra: str) -> dict:
    code, text = cli(str(model), "--seq", str(SEQ), "--batch", str(BATCH), "--train", "--optimizer", "adamw",
                     "--precision", "bf16-mixed", "--hardware", "a100-80gb", "--gpus", str(GPUS),
                     "--sharding", "fsdp", "--format", "json", *extra)
    assert code == 0, text
    return json.loads(text)


@pytest.mark.parametrize("text, tokens", [("2T", 2 * 10**12), ("300B", 300 * 10**9), ("1.5e12", 15 * 10**11),
                                          ("4096", 4096), ("2.5k", 2500), ("1_000M", 10**9)])
def test_token_counts(text: str, tokens: int) -> None:
    assert token_count(text) == tokens


@pytest.mark.parametrize("text", ["two", "", "0", "-3B", "1e400"])
def test_bad_token_counts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        token_count(text)


def test_flops_are_six_n_d_plus_attention(llama: Path) -> None:
    """Kaplan/Chinchilla: 6 FLOPs a token a matrix parameter (the embedding lookup is none), plus
    the dense attention products, 3 × 4·L·seq·d a token, and the flash kernel's QKᵀ recomputed in
    its backward, 2·L·seq·d; nncost adds the elementwise work."""
    data = training_run(llama, "--tokens", "1B")
    run_ = data["training_run"]
    tokens = 10**9
    per_step = BATCH * SEQ * GPUS
    assert run_["tokens_per_step"] == per_step
    assert run_["steps"] == math.ceil(tokens / per_step)
    matrix_params = data["totals"]["params"] - VOCAB * HIDDEN
    closed = (6 * matrix_params + (12 + 2) * LAYERS * SEQ * HIDDEN) * run_["steps"] * per_step
    assert run_["flops"] == pytest.approx(closed, rel=0.05)
    assert run_["flops"] > closed  # norms, softmax, activations, loss and the optimizer on top
    memory = data["memory"]
    assert run_["flops"] == pytest.approx(
        run_["steps"] * GPUS * (memory["forward_flops"] + memory["backward_flops"] + memory["optimizer_flops"] / GPUS))


def test_checkpointing_adds_the_recomputed_forward(llama: Path) -> None:
    plain = training_run(llama, "--tokens", "1B")["training_run"]["flops"]
    data = training_run(llama, "--tokens", "1B", "--checkpointing")
    recompute = data["memory"]["recompute_flops"]
    assert recompute > 0
    steps = data["training_run"]["steps"]
    assert data["training_run"]["flops"] == pytest.approx(plain + recompute * steps * GPUS, rel=1e-3)


def test_gpu_hours_at_the_published_median(llama: Path) -> None:
    data = training_run(llama, "--tokens", "2T", "--price-per-gpu-hour", "1.5")
    run_ = data["training_run"]
    assert run_["efficiency"] == ACHIEVABLE_MFU and run_["efficiency_source"] == MFU_SOURCE
    assert run_["peak_flops"] == A100_BF16_PEAK  # the A100's dense bf16 peak
    assert run_["seconds"] == pytest.approx(run_["flops"] / GPUS / (ACHIEVABLE_MFU * A100_BF16_PEAK))
    assert run_["gpu_hours"] == pytest.approx(run_["flops"] / (ACHIEVABLE_MFU * A100_BF16_PEAK) / 3600)
    assert run_["cost"] == pytest.approx(1.5 * run_["gpu_hours"])
    assert run_["tokens"] == 2 * 10**12


def test_mfu_given_replaces_the_median(llama: Path) -> None:
    median = training_run(llama, "--tokens", "1B")["training_run"]
    given = training_run(llama, "--tokens", "1B", "--mfu", "0.25")["training_run"]
    assert given["efficiency"] == 0.25 and given["efficiency_source"] == "given"
    assert given["gpu_hours"] == pytest.approx(median["gpu_hours"] * ACHIEVABLE_MFU / 0.25)
    assert given["cost"] is None


def test_the_median_is_the_published_table() -> None:
    rates = [rate / A100_BF16_PEAK for _, rate, _ in PUBLISHED_FLOP_RATES]
    assert ACHIEVABLE_MFU == pytest.approx(statistics.median(rates), abs=5e-4)
    assert 0.4 < ACHIEVABLE_MFU < 0.55


def test_the_terminal_shows_the_run(llama: Path) -> None:
    code, text = cli(str(llama), "--seq", str(SEQ), "--train", "--hardware", "a100-80gb", "--tokens", "300B",
                     "--price-per-gpu-hour", "2", "--depth", "0")
    assert code == 0, text
    block = text[text.index("training run"):]
    for label in ("tokens", "FLOPs", "rate", "time", "GPU-hours", "cost"):
        assert label in block
    for fmt, marker in (("markdown", "### Training run"), ("csv", "training_run,value")):
        code, text = cli(str(llama), "--seq", str(SEQ), "--train", "--hardware", "a100-80gb", "--tokens", "1B",
                         "--format", fmt)
        assert code == 0 and marker in text


def test_a_run_whose_step_does_not_fit_says_so(tmp_path: Path) -> None:
    """A 3.1 B-parameter model trained with AdamW in fp32 under DDP keeps 16 bytes a parameter on
    every GPU (parameters, gradients, two moments), 49 GB: more than a T4's 16 GiB, so the run's
    costs are those of a run that cannot run as laid out.  The text says so in a warning line, the
    JSON in ``fits``; the same holds for a layout's run (here tensor parallelism over 2 T4s, 25 GB
    of model states on each GPU)."""
    hidden, vocab, inter, layers, kv = 8192, 32_000, 28672, 3, 1024
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 64,
              "num_key_value_heads": 8, "vocab_size": vocab, "max_position_embeddings": 512,
              "tie_word_embeddings": False, "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    params = 2 * vocab * hidden + hidden + layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
                                                     + 2 * hidden)
    t4 = 16 * 2**30
    assert 16 * params > t4 and 16 * params / 2 > t4
    for layout in ({}, {"tensor_parallel": 2}):
        step = Step(optimizer="adamw", gpus=2, sharding="none" if layout else "ddp", **layout)
        result = nncost.run(Request(str(tmp_path), Inputs(seq=16), hardware="t4", depth=0, step=step,
                                    run=Run(10**9)))
        run = result.to_dict()["training_run"]
        assert run["fits"] is False and run["budget_bytes"] == t4 and run["step_peak_bytes"] > t4
        warning = [line for line in str(result).splitlines() if line.strip().startswith("warning")]
        assert len(warning) == 1 and "the step does not fit" in warning[0] and "16.00 GiB of t4" in warning[0]


def test_a_run_whose_step_fits_has_no_warning(llama: Path) -> None:
    code, text = cli(str(llama), "--seq", str(SEQ), "--train", "--hardware", "a100-80gb", "--tokens", "1B")
    assert code == 0, text
    assert "warning" not in text and "does not fit" not in text
    document = json.loads(cli(str(llama), "--seq", str(SEQ), "--train", "--hardware", "a100-80gb", "--tokens", "1B",
                              "--format", "json")[1])
    assert document["training_run"]["fits"] is True

@pytest.mark.parametrize("argv, message", [
    (("--seq", "64", "--hardware", "a100-80gb", "--tokens", "1B"), "--train"),
    (("--seq", "64", "--train", "--tokens", "1B"), "--hardware"),
    (("--train", "--hardware", "a100-80gb", "--tokens", "1B"), "--seq"),
    (("--seq", "64", "--train", "--hardware", "a100-80gb", "--price-per-gpu-hour", "2"), "--tokens"),
    (("--seq", "64", "--train", "--hardware", "a100-80gb", "--mfu", "0.4"), "--tokens"),
])
def test_run_flag_errors(llama: Path, argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(str(llama), *argv)
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--price-per-gpu-hour", "-1"), ("--mfu", "1.5"), ("--tokens", "0")])
def test_run_flag_values(llama: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(str(llama), "--seq", "64", "--train", "--hardware", "a100-80gb", "--tokens", "1B", f"{flag}={value}")
    assert code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_run_request_checks() -> None:
    with pytest.raises(BadRequest, match="token"):
        Run(0)
    with pytest.raises(BadRequest, match="utilisation"):
        Run(10, mfu=0)
    with pytest.raises(BadRequest, match="report"):
        Request("hf:llama", Inputs(seq=8), hardware="a100-80gb", step=Step(), run=Run(10), report=False)


def test_the_run_document_is_the_api_result_and_follows_the_schema(llama: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())
    code, text = cli(str(llama), "--seq", str(SEQ), "--train", "--hardware", "a100-80gb", "--gpus", "4",
                     "--sharding", "zero2", "--tokens", "1B", "--price-per-gpu-hour", "2", "--format", "json")
    assert code == 0, text
    jsonschema.validate(json.loads(text), schema)
    request = Request(str(llama), Inputs(seq=SEQ), hardware="a100-80gb", step=Step(gpus=4, sharding="zero2"),
                      run=Run(10**9, price_per_gpu_hour=2.0))
    result = nncost.run(request)
    assert result.training_run is not None and result.training_run.cost is not None
    assert text == result.to_json()


def test_every_run_flag_has_help() -> None:
    from nncost.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    for flag, words in (("--tokens", "2T, 300B, 1.5e12"), ("--price-per-gpu-hour", "price of one GPU-hour"),
                        ("--mfu", "median of published runs")):
        assert flag in text and words in text, flag
