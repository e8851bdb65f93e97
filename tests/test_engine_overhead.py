"""``--engine vllm``: each step's overhead beyond its kernels, against its closed form.

A prefill costs the engine's scheduling plus one launch per kernel; each of the ``M − 1`` decode
steps costs the scheduling plus, with CUDA graphs, one graph launch and its nodes, else one launch
per kernel.  The kernels are the counted operators of the traced prefill and decode step (views
launch none).  The closed form below is written from the constants of
:mod:`nncost.hardware.engines`; the times (TTFT, tokens/s) are the kernels' plus it.  hf-generate
has no overhead, and its document is what it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import nncost
from nncost.analyses.fusion import fused
from nncost.analyses.overhead import graphs_used, kernels
from nncost.analyses.reads import bytes_read
from nncost.capture.generation import session
from nncost.cli import run as cli_run
from nncost.errors import BadRequest
from nncost.hardware import engines
from nncost.request import Generation

transformers = pytest.importorskip("transformers")

PROMPT, NEW, BATCH = 8, 5, 3
ARGS = ["--prompt", str(PROMPT), "--new-tokens", str(NEW), "--batch", str(BATCH), "--dtype", "bfloat16",
        "--hardware", "h100-sxm", "--format", "json"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama")
    transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=128, max_position_embeddings=256).save_pretrained(path)
    return path


def document(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert cli_run([str(path), *ARGS, *extra]) == 0
    return json.loads(capsys.readouterr().out)["generation"]


def closed_form(prefill_kernels: int, step_kernels: int, steps: int, graphs: bool) -> tuple[float, float]:
    schedule = engines.STEP_SCHEDULE_SECONDS.value
    launch = engines.KERNEL_LAUNCH_SECONDS.value
    step = schedule + (engines.GRAPH_LAUNCH_SECONDS.value + step_kernels * engines.GRAPH_NODE_SECONDS.value
                       if graphs else step_kernels * launch)
    return schedule + prefill_kernels * launch, steps * step


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_the_overhead_is_the_closed_form_of_the_constants(llama_dir: Path, capsys: pytest.CaptureFixture[str],
                                                           mode: str) -> None:
    g = document(llama_dir, capsys, "--engine", "vllm", "--cuda-graphs", mode)
    o = g["overhead"]
    assert o["cuda_graphs"] is (mode != "off")
    prefill, decode = closed_form(o["prefill_kernels"], o["decode_kernels"], NEW - 1, o["cuda_graphs"])
    assert o["prefill_seconds"] == pytest.approx(prefill, rel=1e-12)
    assert o["decode_seconds"] == pytest.approx(decode, rel=1e-12)
    assert g["time_to_first_token_seconds"] == pytest.approx(g["prefill"]["seconds"] + prefill, rel=1e-12)
    assert g["tokens_per_second"] == pytest.approx((NEW - 1) / (g["decode"]["seconds"] + decode), rel=1e-12)


def test_the_kernels_are_the_traced_steps_counted_operators(llama_dir: Path) -> None:
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(llama_dir))
    with session(model, BATCH, dtype=torch.bfloat16, model_name="llama", max_cache_length=PROMPT + NEW - 1,
                 kernels="cuda", engine="vllm") as run:
        prefill, _ = run.prefill(PROMPT)
        step, _, _ = run.decode_at(PROMPT + 1)
    generation = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=BATCH), dtype=torch.bfloat16,
                                           generation=Generation(PROMPT, NEW, engine="vllm"))).generation
    assert generation is not None and generation.overhead is not None
    prefill, step = fused(bytes_read(prefill)), fused(bytes_read(step))  # as the engine compiles them
    assert generation.overhead.prefill_kernels == kernels(prefill) == sum(op.unit != "free" for op in prefill.ops)
    assert generation.overhead.decode_kernels == kernels(step) > 0


def test_cuda_graphs_make_decode_cheaper(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    on = document(llama_dir, capsys, "--engine", "vllm", "--cuda-graphs", "on")
    off = document(llama_dir, capsys, "--engine", "vllm", "--cuda-graphs", "off")
    assert on["overhead"]["decode_seconds"] < off["overhead"]["decode_seconds"]
    assert on["tokens_per_second"] > off["tokens_per_second"]
    assert on["overhead"]["prefill_seconds"] == off["overhead"]["prefill_seconds"]  # the prefill runs eagerly
    assert on["time_to_first_token_seconds"] == off["time_to_first_token_seconds"]


def test_auto_captures_up_to_vllms_largest_graph() -> None:
    largest = int(engines.MAX_CAPTURE_BATCH.value)
    assert graphs_used("auto", largest) and not graphs_used("auto", largest + 1)
    assert graphs_used("on", largest + 1) and not graphs_used("off", 1)


def test_one_new_token_has_no_decode_overhead(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run([str(llama_dir), "--prompt", "4", "--new-tokens", "1", "--engine", "vllm", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"]["overhead"]["decode_seconds"] == 0


def test_hf_generate_has_no_overhead_and_the_same_times(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = document(llama_dir, capsys)
    assert g["overhead"] is None
    assert g["time_to_first_token_seconds"] == g["prefill"]["seconds"]
    assert g["tokens_per_second"] == (NEW - 1) / g["decode"]["seconds"]


def test_hf_generate_documents_what_they_did_before(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hf-generate document gains one key, last and null; the steps' times are the kernels'
    alone (the time of a step at its sampled context, with no overhead added)."""
    g = document(llama_dir, capsys)
    assert list(g)[-1] == "overhead" and g["overhead"] is None
    vllm = document(llama_dir, capsys, "--engine", "vllm")
    per_step = vllm["overhead"]["decode_seconds"] / (NEW - 1)
    assert list(vllm) == list(g)
    assert all(s["seconds"] > per_step for s in vllm["steps"])
    assert all(s["seconds"] < per_step for s in g["steps"])  # a tiny step's kernels take less than its overhead


def test_the_overhead_shows_on_one_line(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run([str(llama_dir), *ARGS[:-2], "--engine", "vllm"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the line wraps at the terminal's width
    assert "Engine overhead" in out and "one CUDA graph of" in out and "in the times" in out
    assert cli_run([str(llama_dir), *ARGS[:-2]]) == 0
    assert "Engine overhead" not in capsys.readouterr().out


def test_every_constant_names_its_source() -> None:
    assert engines.CONSTANTS
    for constant in engines.CONSTANTS.values():
        assert constant.value > 0 and len(constant.source) > 40


def test_cuda_graphs_without_vllm_are_refused(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run([str(llama_dir), "--prompt", "4", "--new-tokens", "2", "--cuda-graphs", "off"]) != 0
    assert "--cuda-graphs sets how vLLM launches a step's kernels: add --engine vllm" in capsys.readouterr().err
    with pytest.raises(BadRequest, match="add --engine vllm"):
        Generation(4, 2, cuda_graphs="on")
    with pytest.raises(BadRequest, match="auto, on, off"):
        Generation(4, 2, engine="vllm", cuda_graphs="sometimes")
    with pytest.raises(BadRequest, match="add --engine vllm"):
        nncost.build_request(str(llama_dir), cuda_graphs="on")


def test_the_flag_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_run(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--cuda-graphs {auto,on,off}" in out and "one CUDA graph" in out


def test_the_decode_time_is_what_the_decode_rate_divides(llama_dir: Path) -> None:
    """``decode_seconds`` holds the kernels, the sends and the engine's overhead, as
    ``tokens_per_second`` does."""
    generation = nncost.cost(str(llama_dir), prompt=PROMPT, new_tokens=NEW, batch=BATCH, dtype="bfloat16",
                             hardware="h100-sxm", engine="vllm").generation
    assert generation is not None and generation.overhead is not None and generation.overhead.decode_seconds > 0
    assert generation.decode_seconds is not None and generation.tokens_per_second is not None
    assert generation.decode_seconds == pytest.approx((generation.new_tokens - 1) / generation.tokens_per_second)


def test_each_phase_says_the_efficiency_its_kernels_are_timed_at(llama_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert [document(llama_dir, capsys)[phase]["efficiency"] for phase in ("prefill", "decode")] == [1.0, 1.0]
    halved = document(llama_dir, capsys, "--engine", "vllm", "--efficiency", "0.5")
    assert [halved[phase]["efficiency"] for phase in ("prefill", "decode")] == [0.5, 0.5]
    no_device = nncost.cost(str(llama_dir), prompt=PROMPT, new_tokens=NEW).to_dict()["generation"]
    assert [no_device[phase]["efficiency"] for phase in ("prefill", "decode")] == [None, None]
