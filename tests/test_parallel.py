"""Training over many GPUs: each layout's per-GPU memory and step time against closed forms written
from the config (the Megatron split by hand, ring all-reduces, Narayanan et al.'s 1F1B bubble),
against the one-GPU simulation of the same step, and the plan's best layout against a direct run."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nncost
from cli_runs import cli
from nncost.analyses.parallel import Cluster, Layouts, layout_step, plan, profile_step
from nncost.cli import build_parser
from nncost.records.parallel import Layout, Piece, Share, StepProfile
from nncost.request import Inputs, Request, Run, Step
from nncost.simulation.step import capture_step
from nncost.sources.models import resolve
from scripts import load_script

pytest.importorskip("transformers")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, VOCAB = 256, 4, 8, 4, 688, 1000
SEQ, BATCH = 64, 2
H100_NVLINK, H100_NETWORK = 900e9, 100e9  # both directions together, as the catalogue quotes them


def llama_config(**changes: Any) -> dict[str, Any]:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 4096,
              "tie_word_embeddings": False, "torch_dtype": "float32"}
    config.update(changes)
    return config


def write_config(folder: Path, **changes: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(llama_config(**changes)))
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("llama"))


def traced(model: Path, *, precision: str = "fp32", allocator: str = "cpu", batch: int = BATCH, seq: int = SEQ,
           optimizer: str = "adam", checkpointing: bool = False) -> tuple[Any, StepProfile | None]:
    built = resolve(str(model)).build("meta")
    ids = torch.zeros((batch, seq), dtype=torch.long)
    trace = capture_step(built, (), {"input_ids": ids}, mode="train", optimizer=optimizer, allocator=allocator,
                         precision=precision, checkpointing=checkpointing)
    if checkpointing:
        return trace, None
    config = built.config
    return trace, profile_step(trace, model="llama", allocator=allocator, optimizer=optimizer, batch_size=batch,
                               seq=seq, precision=precision, heads=config.num_attention_heads,
                               kv_heads=config.num_key_value_heads)


def one_gpu(model: Path, **step: Any) -> nncost.Result:
    """The default simulation of the same step on one GPU."""
    step.setdefault("allocator", "cpu")
    return nncost.run(Request(str(model), Inputs(batch_size=BATCH, seq=SEQ), report=False, step=Step(**step)))


def layout(gpus: int = 1, t: int = 1, p: int = 1, m: int = 1, *, sp: bool = False, ckpt: bool = False,
           sharding: str = "none", batch: int = BATCH) -> Layout:
    return Layout(gpus, t, p, gpus // (t * p), m, batch, sp, ckpt, sharding)


def h100(efficiency: float = 0.5) -> Cluster:
    return Cluster("h100-sxm", 989.5e12, efficiency, 3.35e12, "NVLink 4", H100_NVLINK, 8,
                   "InfiniBand NDR 400 Gb/s per GPU", H100_NETWORK)


@pytest.fixture(scope="module")
def fp32(llama: Path) -> Iterator[tuple[Any, StepProfile]]:
    trace, profile = traced(llama)
    assert profile is not None
    yield trace, profile


# -- one GPU: the arithmetic against the simulation it is derived from -----------------------
@pytest.mark.parametrize("precision, allocator", [("fp32", "cpu"), ("bf16-mixed", "cuda")])
def test_one_gpu_layout_is_the_simulated_step(llama: Path, precision: str, allocator: str) -> None:
    """T = P = D = M = 1: the pieces added up again give the simulated step's FLOPs exactly, and its
    peak within 3% (the arithmetic adds each piece's most temporaries to every saved activation)."""
    _, profile = traced(llama, precision=precision, allocator=allocator)
    assert profile is not None
    figures = layout_step(profile, layout())
    simulated = one_gpu(llama, allocator=allocator, optimizer="adam") if precision == "fp32" else nncost.run(
        Request(str(llama), Inputs(batch_size=BATCH, seq=SEQ), precision=precision, report=False,
                step=Step(allocator=allocator)))
    memory = simulated.memory
    assert memory is not None
    assert figures.flops == memory.forward_flops + memory.backward_flops + memory.optimizer_flops
    assert figures.peak_bytes == pytest.approx(memory.peak_bytes, rel=0.03)


def test_every_backward_operator_belongs_to_a_piece(fp32: tuple[Any, StepProfile], llama: Path) -> None:
    """The backward, attributed by autograd node: a matrix product's backward is two products of its
    size (grad input, grad weight), so each block's backward is about twice its forward and the output
    projection's exactly twice; nothing is left over."""
    _, profile = fp32
    memory = one_gpu(llama).memory
    assert memory is not None
    assert sum(piece.backward_flops.total for piece in profile.pieces) == memory.backward_flops
    assert sum(piece.forward_flops.total for piece in profile.pieces) == memory.forward_flops
    for piece in profile.pieces[1:-1]:
        assert piece.backward_flops.total == pytest.approx(2 * piece.forward_flops.total, rel=0.02)
    head = 2 * BATCH * SEQ * HIDDEN * VOCAB  # FLOPs of the output projection's forward
    assert profile.pieces[-1].backward_flops.split == 2 * head
    assert profile.blocks == LAYERS


# -- the Megatron split of a 70B layout, by hand ---------------------------------------------
def test_weights_of_a_tp8_pp8_70b_layout_by_hand(tmp_path: Path) -> None:
    """Llama 3 70B's shape, TP 8 × PP 8: each stage runs 10 of the 80 blocks; attention and MLP
    weights are split 8 ways, the two norms of a block kept whole; the first stage adds 1/8 of
    the embedding, the last the final norm and 1/8 of the output projection.  fp32 weights and
    gradients (4 bytes a parameter), Adam's two states (8 bytes)."""
    h, kv, inter, vocab, layers = 8192, 1024, 28672, 128256, 80
    model = write_config(tmp_path / "llama70b", hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=64, num_key_value_heads=8, vocab_size=vocab)
    _, profile = traced(model, allocator="cuda", batch=1, seq=16)
    assert profile is not None
    figures = layout_step(profile, layout(64, 8, 8))
    split_block = 2 * h * h + 2 * h * kv + 3 * h * inter
    block = split_block // 8 + 2 * h
    expected = [10 * block + vocab * h // 8, *[10 * block] * 6, 10 * block + h + vocab * h // 8]
    assert [stage.params for stage in figures.stages] == expected
    for stage, params in zip(figures.stages, expected, strict=True):
        assert stage.gradient_bytes == 4 * params
        assert stage.optimizer_state_bytes == 8 * params  # Adam's step counter stays on the host (CUDA)
        buffers = stage.parameter_bytes - 4 * params  # the rotary table, on the first stage
        assert (0 < buffers <= 4096) if stage.embedding else buffers == 0
    # every GPU of a stage holds 1/8 of the split weights: 8 copies of the whole ones
    assert 8 * sum(expected) - 7 * (layers * 2 * h + h) == 70_553_706_496  # Llama 3 70B's parameter count
    assert [stage.blocks for stage in figures.stages] == [(10 * i, 10 * i + 9) for i in range(8)]


# -- time: the 1F1B pipeline, all-reduces and sends, by closed form ---------------------------
def uniform_profile(blocks: int, flops: int, activation: int) -> StepProfile:
    """Identical blocks, nothing before or after them: equal pipeline stages."""
    empty = Piece("embedding", "embedding", Share(), Share(), Share(), Share(), Share(), Share(), (Share(),), 0,
                  Share(), Share(), (0, 0))
    block = replace(empty, kind="block", params=Share(1000, 0), parameter_bytes=Share(4000, 0),
                    gradient_bytes=Share(4000, 0), optimizer_state_bytes=Share(8000, 0),
                    largest_module_bytes=Share(4000, 0), activation_bytes=Share(activation, 0),
                    forward_flops=Share(flops, 0), backward_flops=Share(2 * flops, 0))
    pieces = (empty, *(replace(block, name=f"layers.{i}") for i in range(blocks)), replace(empty, kind="output"))
    return StepProfile("uniform", 1, 1, "fp32", "adam", "cpu", pieces, 0, 0, 0, 1000 * blocks, 4000 * blocks,
                       heads=8, kv_heads=8)


@pytest.mark.parametrize("stages, micro_batches", [(2, 1), (4, 4), (8, 16), (8, 3)])
def test_the_bubble_is_narayanans(stages: int, micro_batches: int) -> None:
    """Narayanan et al. 2021, §2.2.1: with p equal stages and m micro-batches, 1F1B takes
    (m + p − 1)·(t_f + t_b); the bubble is (p − 1)/m of the ideal time m·(t_f + t_b)."""
    flops = 10**12
    figures = Layouts(uniform_profile(16, flops, 100)).step(layout(stages, 1, stages, micro_batches), h100())
    per_micro_batch = 3 * flops * (16 // stages) / (989.5e12 * 0.5)  # forward + backward of one stage
    assert figures.compute_seconds == pytest.approx(micro_batches * per_micro_batch)
    assert figures.bubble_seconds == pytest.approx((stages - 1) * per_micro_batch)
    assert figures.bubble_seconds / figures.compute_seconds == pytest.approx((stages - 1) / micro_batches)
    assert figures.step_seconds == pytest.approx((micro_batches + stages - 1) * per_micro_batch
                                                 + figures.optimizer_seconds)


def test_in_flight_micro_batches_follow_1f1b() -> None:
    """Stage i of p holds min(p − i, m) micro-batches' activations (Narayanan et al. 2021, §2.2.1)."""
    layouts = Layouts(uniform_profile(8, 10**9, 1000))
    for micro_batches, expected in ((2, [2, 2, 2, 1]), (8, [4, 3, 2, 1]), (1, [1, 1, 1, 1])):
        figures = layouts.step(layout(4, 1, 4, micro_batches))
        assert [s.micro_batches_in_flight for s in figures.stages] == expected
        assert [s.held_activation_bytes for s in figures.stages] == [2 * 1000 * n for n in expected]
        assert figures.peak_stage == 0


def test_tensor_parallel_all_reduces_by_hand(llama: Path) -> None:
    """Each block all-reduces its attention's and its MLP's output in the forward and their inputs'
    gradients in the backward; the embedding's output once, the output projection's input gradient
    once: (4·L + 2) tensors of b·s·h fp32 values, 2(T − 1)/T of them through each GPU's NVLink, one
    way at half its quoted bandwidth."""
    figures = nncost.run(Request(str(llama), Inputs(batch_size=BATCH, seq=SEQ), hardware="h100-sxm", report=False,
                                 step=Step(allocator="cpu", gpus=4, tensor_parallel=4))).parallel
    assert figures is not None
    tensor = BATCH * SEQ * HIDDEN * 4
    expected = 2 * 3 / 4 * (4 * LAYERS + 2) * tensor / (H100_NVLINK / 2)
    assert figures.stages[0].tensor_parallel_seconds == pytest.approx(expected)
    assert figures.tensor_parallel_link == "NVLink 4"


@pytest.mark.parametrize("gpus, link, bandwidth", [(8, "NVLink 4", H100_NVLINK),
                                                   (16, "InfiniBand NDR 400 Gb/s per GPU (DGX H100)", H100_NETWORK)])
def test_data_parallel_reduction_by_hand(llama: Path, gpus: int, link: str, bandwidth: float) -> None:
    """DDP all-reduces every gradient once a step: 2(D − 1)/D of the fp32 gradients through each GPU,
    over NVLink inside an 8-GPU node, over its own InfiniBand port when the copies span nodes."""
    params = 2 * VOCAB * HIDDEN + HIDDEN + LAYERS * (2 * HIDDEN * HIDDEN + 2 * HIDDEN * HIDDEN * KV_HEADS // HEADS
                                                     + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN)
    figures = nncost.run(Request(str(llama), Inputs(batch_size=BATCH, seq=SEQ), hardware="h100-sxm", report=False,
                                 step=Step(allocator="cpu", gpus=gpus, sharding="ddp", micro_batches=2))).parallel
    assert figures is not None
    assert figures.stages[0].params == params
    assert figures.data_parallel_seconds == pytest.approx(2 * (gpus - 1) / gpus * 4 * params / (bandwidth / 2))
    assert figures.data_parallel_link == link


# -- memory under a layout --------------------------------------------------------------------
def test_sequence_parallelism_divides_every_activation(fp32: tuple[Any, StepProfile]) -> None:
    """Korthikanti et al. 2022, §4.2.2: tensor parallelism alone leaves the norms' and residuals'
    activations whole on every GPU; with sequence parallelism every activation is 1/t."""
    _, profile = fp32
    whole = layout_step(profile, layout()).stages[0].activation_bytes
    tensor = layout_step(profile, layout(4, 4)).stages[0].activation_bytes
    sequence = layout_step(profile, layout(4, 4, sp=True)).stages[0].activation_bytes
    assert sequence == pytest.approx(whole / 4, rel=1e-3)
    assert tensor > sequence * 1.1


@pytest.mark.parametrize("t", [2, 4])
def test_a_llama_block_splits_as_korthikanti_says(tmp_path: Path, t: int) -> None:
    """Korthikanti et al. 2022, §4.2: under tensor parallelism each GPU keeps the inputs of the norms
    and of the column-parallel projections whole, and 1/t of everything between them; under sequence
    parallelism 1/t of all of it.  The items of one HF Llama layer are bench/korthikanti.py's
    (``llama_formula``, written from the layer's code, kv heads = heads, bf16, SDPA's math kernel)."""
    korthikanti = load_script("bench/korthikanti.py", "nncost_bench_korthikanti_parallel")
    s, b, h, a, f = 64, 2, 128, 4, 344
    model = write_config(tmp_path / "llama", hidden_size=h, num_attention_heads=a, num_key_value_heads=a,
                         intermediate_size=f, num_hidden_layers=3, vocab_size=128, torch_dtype="bfloat16")
    _, profile = traced(model, precision="bf16", allocator="cuda", batch=b, seq=s)
    assert profile is not None
    items = korthikanti.llama_formula(s, b, h, a, f)
    whole = items["RMSNorm ×2"] + items["QKV input"] + 2 * s * b * h  # and the MLP's input (its gate's)
    middle = profile.pieces[2].activation_bytes  # model.layers.1: its input made by the block before it
    assert middle.total == sum(items.values())
    assert middle.whole == whole
    assert middle.on_gpu(t) == whole + (sum(items.values()) - whole) // t
    assert middle.on_gpu(t, sequence_parallel=True) == sum(items.values()) // t


def test_checkpointing_recomputes_each_block_forward(llama: Path) -> None:
    """Derived from the step traced without checkpointing, a checkpointed layout runs every block's
    forward again in the backward, as Megatron's full recomputation does: the blocks' FLOPs in the
    forward's own report.  PyTorch's non-reentrant checkpoint stops a block's recomputation once
    its last saved tensor is rebuilt (the MLP's down projection is not run again), so a real
    checkpointed step recomputes less; its peak is within 10% (the traced step keeps the model's
    output, and through it the checkpoints' inputs, alive through the optimizer)."""
    _, profile = traced(llama, allocator="cuda")
    assert profile is not None
    plain = layout_step(profile, layout())
    checkpointed = layout_step(profile, layout(ckpt=True))
    forward = nncost.run(Request(str(llama), Inputs(batch_size=BATCH, seq=SEQ))).report
    assert forward is not None
    blocks = sum(la.flops for la in forward.layers if la.name.startswith("model.layers.") and la.name.count(".") == 2)
    assert checkpointed.flops - plain.flops == blocks
    real = one_gpu(llama, checkpointing=True, allocator="cuda").memory
    assert real is not None and 0.7 * blocks < real.recompute_flops < blocks
    assert checkpointed.peak_bytes == pytest.approx(real.peak_bytes, rel=0.10)
    assert checkpointed.stages[0].activation_bytes < plain.stages[0].activation_bytes / 2


@pytest.mark.parametrize("sharding, optimizer_copies", [("ddp", 2), ("zero1", 1)])
def test_flops_add_up_to_the_single_gpu_step(llama: Path, fp32: tuple[Any, StepProfile], sharding: str,
                                             optimizer_copies: int) -> None:
    """Without tensor parallelism the GPUs of a step run, together, every micro-batch's forward and
    backward of the one-GPU step once, and the optimizer once per copy of its state."""
    _, profile = fp32
    memory = one_gpu(llama).memory
    assert memory is not None
    figures = layout_step(profile, layout(4, 1, 2, 3, sharding=sharding))
    expected = 2 * 3 * (memory.forward_flops + memory.backward_flops) + optimizer_copies * memory.optimizer_flops
    assert figures.flops == pytest.approx(expected, rel=1e-12)
    split = layout_step(profile, layout(8, 2, 2, 3, sharding=sharding))
    assert figures.flops < split.flops < figures.flops * 1.02  # the norms, repeated on each GPU of a pair


# -- the plan ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70B's widths, 4 blocks: 5.5 B parameters, 88 GB of fp32 weights, gradients and Adam state:
    no H100 holds it alone, a plan has to split it."""
    return write_config(tmp_path_factory.mktemp("wide"), hidden_size=8192, intermediate_size=28672,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=128256)


def test_the_plans_best_layout_is_the_direct_runs(wide: Path) -> None:
    base = (str(wide), "--seq", "256", "--batch", "1", "--train", "--hardware", "h100-sxm", "--gpus", "16",
            "--depth", "0", "--format", "json")
    code, text = cli(*base, "--plan")
    assert code == 0, text
    data = json.loads(text)
    jsonschema.validate(data, SCHEMA)
    found = data["plan"]
    assert found["fitting"] > 0 and found["best"]
    assert found["considered"] == found["fitting"] + sum(r["count"] for r in found["rejected"])
    assert any(r["reason"] == "over the device memory" for r in found["rejected"])
    per_token = [b["step_seconds"] / b["tokens_per_step"] for b in found["best"]]
    assert per_token == sorted(per_token)
    assert all(b["peak_bytes"] <= found["budget_bytes"] for b in found["best"])
    best = found["best"][0]
    assert data["parallel"]["peak_bytes"] == best["peak_bytes"]
    chosen = best["layout"]
    flags = ["--tensor-parallel", str(chosen["tensor_parallel"]), "--pipeline-parallel",
             str(chosen["pipeline_parallel"]), "--micro-batches", str(chosen["micro_batches"]),
             "--sharding", chosen["sharding"]] + (["--checkpointing"] if chosen["checkpointing"] else [])
    code, text = cli(*base, *flags)
    assert code == 0, text
    direct = json.loads(text)["parallel"]
    assert direct["peak_bytes"] == best["peak_bytes"]
    assert direct["step_seconds"] == best["step_seconds"]
    assert direct["layout"] == chosen


def test_a_global_batch_fixes_the_micro_batches(wide: Path) -> None:
    code, text = cli(str(wide), "--seq", "256", "--batch", "2", "--train", "--hardware", "h100-sxm", "--gpus", "16",
                     "--plan", "--global-batch", "64", "--format", "json")
    assert code == 0, text
    found = json.loads(text)["plan"]
    assert found["best"] and all(b["layout"]["global_batch"] == 64 for b in found["best"])


@pytest.mark.slow
def test_plan_for_llama_70b_on_64_h100s(tmp_path: Path) -> None:
    """The issue's case: Llama 3 70B, sequences of 4096, on 64 H100s."""
    model = write_config(tmp_path / "llama70b", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                         num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, torch_dtype="bfloat16")
    base = (str(model), "--seq", "4096", "--batch", "1", "--train", "--optimizer", "adamw", "--precision",
            "bf16-mixed", "--hardware", "h100-sxm", "--gpus", "64", "--depth", "0", "--format", "json")
    code, text = cli(*base, "--plan")
    assert code == 0, text
    found = json.loads(text)["plan"]
    assert found["considered"] >= 1000 and found["fitting"] > 0
    best = found["best"][0]["layout"]
    code, text = cli(*base, "--tensor-parallel", str(best["tensor_parallel"]), "--pipeline-parallel",
                     str(best["pipeline_parallel"]), "--micro-batches", str(best["micro_batches"]), "--sharding",
                     best["sharding"], *(["--checkpointing"] if best["checkpointing"] else []))
    assert code == 0, text
    assert json.loads(text)["parallel"]["peak_bytes"] == found["best"][0]["peak_bytes"]


def test_plan_reasons_count_every_layout_left_out(fp32: tuple[Any, StepProfile]) -> None:
    _, profile = fp32
    found = plan(profile, h100(), gpus=32, budget=80 << 30)
    reasons = {r.reason: r.count for r in found.rejected}
    # T of 16 or 32 do not divide 8 heads; P of 8, 16, 32 are more stages than 4 blocks
    assert reasons["tensor parallelism does not divide the attention heads"] > 0
    assert reasons["more pipeline stages than transformer blocks"] > 0
    assert found.considered == found.fitting + sum(reasons.values())
    assert len(found.best) == 5


# -- a whole run, the views, the errors -------------------------------------------------------
def test_a_training_run_takes_the_layout(llama: Path) -> None:
    request = Request(str(llama), Inputs(batch_size=BATCH, seq=SEQ), hardware="h100-sxm", report=True,
                      step=Step(allocator="cpu", gpus=16, tensor_parallel=2, pipeline_parallel=2, micro_batches=4,
                                sharding="zero1"), run=Run(10**9, price_per_gpu_hour=2.0))
    result = nncost.run(request)
    figures, whole_run = result.parallel, result.training_run
    assert figures is not None and whole_run is not None and result.memory is None
    assert whole_run.gpus == 16 and whole_run.layout == "TP2 PP2 DP4 M4 zero1"
    assert whole_run.tokens_per_step == BATCH * 4 * 4 * SEQ
    assert whole_run.steps == math.ceil(10**9 / whole_run.tokens_per_step)
    assert whole_run.flops == pytest.approx(whole_run.steps * figures.flops)
    assert whole_run.seconds == pytest.approx(whole_run.steps * figures.step_seconds)
    compute_only = figures.flops_per_gpu / (figures.efficiency * figures.peak_flops)
    assert figures.step_seconds > compute_only  # the bubble and the communication on top
    assert whole_run.cost == pytest.approx(2.0 * whole_run.gpu_hours)


def test_the_views_show_the_stages_and_the_plan(llama: Path, tmp_path: Path) -> None:
    argv = (str(llama), "--seq", str(SEQ), "--batch", str(BATCH), "--train", "--hardware", "h100-sxm", "--gpus", "8",
            "--depth", "0")
    code, text = cli(*argv, "--tensor-parallel", "2", "--pipeline-parallel", "2", "--micro-batches", "4",
                     "--sequence-parallel", "--html", str(tmp_path / "report.html"))
    assert code == 0, text
    assert "Activations × in flight" in text and "bubble" in text
    assert any(line.split()[:3] == ["With", "sequence", "parallel"] for line in text.splitlines())
    page = (tmp_path / "report.html").read_text()
    assert "memory of each pipeline stage" in page and page.count("<title>stage 1, parameters") == 1
    code, text = cli(*argv, "--plan")
    assert code == 0 and "fastest per token first" in text and "Peak per GPU" in text
    code, text = cli(*argv, "--plan", "--format", "csv")
    assert code == 0 and "plan,value" in text and "parallel,value" in text
    code, text = cli(*argv, "--plan", "--format", "markdown")
    assert code == 0 and "### Plan" in text and "| Stage |" in text
    code, text = cli(*argv, "--pipeline-parallel", "2", "--sharding", "zero3", "--format", "json")
    jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize("flags, message", [
    (("--train", "--gpus", "6", "--tensor-parallel", "4"), "multiple of their product"),
    (("--train", "--gpus", "8", "--pipeline-parallel", "8"), "cannot share 4 transformer blocks"),
    (("--train", "--gpus", "3", "--tensor-parallel", "3"), "8 attention heads cannot be split over 3"),
    (("--train", "--sequence-parallel"), "give --tensor-parallel of 2 or more"),
    (("--train", "--plan", "--tensor-parallel", "2", "--gpus", "2"), "drop --tensor-parallel"),
    (("--train", "--plan", "--checkpointing"), "drop --checkpointing"),
    (("--train", "--global-batch", "8"), "add --plan"),
    (("--micro-batches", "2"), "add --train"),
    (("--tensor-parallel", "2"), "add --train"),
    (("--train", "--gpus", "2", "--tensor-parallel", "2", "--fit"), "drop them"),
    (("--train", "--gpus", "2", "--tensor-parallel", "2", "--measure"), "drop them"),
    (("--train", "--gpus", "2", "--pipeline-parallel", "2", "--plot", "x.png"), "--plot draws the step one GPU"),
    (("--prompt", "4", "--new-tokens", "2", "--pipeline-parallel", "2"), "drop them with --prompt"),
    (("--train", "--plan"), "--plan searches layouts over --gpus N"),
    (("--train", "--sharding", "fsdp"), "give their number, --gpus N"),
    (("--train", "--sharding", "ddp", "--gpus", "1"), "give their number, --gpus N"),
    (("--train", "--gpus", "2", "--tensor-parallel", "2", "--sharding", "zero1"), "hold one copy spread over 2"),
])
def test_layout_errors_are_one_sentence(llama: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...],
                                        message: str) -> None:
    seq = () if "--prompt" in flags else ("--seq", str(SEQ))
    code, _ = cli(str(llama), *seq, "--hardware", "h100-sxm", "--allocator", "cpu", "--depth", "0", *flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_plan_needs_a_device(llama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(str(llama), "--seq", str(SEQ), "--train", "--plan", "--gpus", "8")
    assert code == 2 and "give --hardware" in capsys.readouterr().err


def test_tensor_parallelism_divides_the_key_value_heads(tmp_path: Path) -> None:
    """Qwen2.5-7B's attention: 28 query heads, 4 key-value heads.  7 GPUs divide the query heads,
    but not the 4 key-value heads, nor are they a multiple of them (each head repeated on
    T / 4 GPUs): refused.  4 GPUs (one key-value head each) are taken."""
    model = write_config(tmp_path / "qwen", hidden_size=224, num_attention_heads=28, num_key_value_heads=4,
                         num_hidden_layers=2, intermediate_size=256)

    def layout(t: int) -> Request:
        return Request(str(model), Inputs(seq=16), report=False, step=Step(allocator="cpu", gpus=t, tensor_parallel=t))

    with pytest.raises(nncost.BadRequest, match="4 key-value heads cannot be split over 7 GPUs"):
        nncost.run(layout(7))
    assert nncost.run(layout(4)).parallel is not None


def test_tensor_parallelism_stays_in_a_node(tmp_path: Path) -> None:
    model = write_config(tmp_path / "heads32", num_attention_heads=32, num_key_value_heads=32)
    with pytest.raises(nncost.BadRequest, match="tensor parallelism runs within a node: at most 8 GPUs"):
        nncost.run(Request(str(model), Inputs(seq=SEQ), hardware="h100-sxm", report=False,
                           step=Step(gpus=16, tensor_parallel=16)))


class _WideStem(nn.Module):
    """A wide first layer, then two small repeated blocks: no stack of blocks to place."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(64, 4096)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4096, 8), nn.Linear(8, 4096)) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)), "has no repeated blocks"),
    (_WideStem(), "less than half"),
])
def test_models_without_a_block_stack_are_refused(model: nn.Module, message: str) -> None:
    with pytest.raises(nncost.BadRequest, match=message):
        nncost.run(Request(model, Inputs((64 if isinstance(model, _WideStem) else 8,)), report=False,
                           step=Step(gpus=2, pipeline_parallel=2)))


def test_a_convolutional_network_pipelines_by_its_stages() -> None:
    """ResNet's four stages (layer1…layer4) are its repeated blocks: a pipeline can place them;
    tensor parallelism, which splits attention heads, cannot."""
    torchvision = pytest.importorskip("torchvision")
    result = nncost.run(Request(torchvision.models.resnet18(), Inputs((3, 64, 64), batch_size=2), report=False,
                               step=Step(gpus=2, pipeline_parallel=2)))
    assert result.parallel is not None and [s.blocks for s in result.parallel.stages] == [(0, 1), (2, 3)]
    with pytest.raises(nncost.BadRequest, match="names none"):
        nncost.run(Request(torchvision.models.resnet18(), Inputs((3, 64, 64)), report=False,
                           step=Step(gpus=2, tensor_parallel=2)))


def test_every_layout_flag_has_help() -> None:
    text = " ".join(build_parser().format_help().split())
    for flag, says in (("--tensor-parallel", "split each transformer block over T GPUs"),
                       ("--pipeline-parallel", "1F1B"), ("--micro-batches", "(P−1)/M"),
                       ("--sequence-parallel", "along the sequence"), ("--plan", "five fastest layouts"),
                       ("--global-batch", "with --plan")):
        assert flag in text and says in text, flag


def test_an_operator_without_a_rule_is_named_in_every_layout(fp32: tuple[Any, StepProfile]) -> None:
    """An operator the registry cannot cost adds nothing to a layout's FLOPs or time, so the layout says
    so, as a single-GPU step does: the step traced with one of its calls marked uncounted."""
    trace, profile = fp32
    assert profile.uncounted == {}
    k = next(i for i, op in enumerate(trace.ops) if op.op == "mm")
    ops = [*trace.ops[:k], replace(trace.ops[k], counted=False, flops=0, macs=0), *trace.ops[k + 1:]]
    marked = profile_step(replace(trace, ops=ops), model="llama", allocator="cpu", optimizer="adam",
                          batch_size=BATCH, seq=SEQ, precision="fp32", heads=HEADS, kv_heads=KV_HEADS)
    assert marked.uncounted == {"mm": 1}
    step = layout_step(marked, layout(gpus=2, p=2, m=2), h100())
    assert step.uncounted == {"mm": 1}
    assert "UNCOUNTED ops in the step  mm×1" in str(step)
    document = step.to_dict()
    assert document["uncounted"] == {"mm": 1}
