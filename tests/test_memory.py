"""The training-step memory simulator: byte-exact categories, and the estimate against a real step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nncost
from nncost.cli import run
from nncost.simulation.measure import measure_cpu_peak, without_profiler_noise

FP32 = 4


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) * FP32


def test_adam_step_categories_are_byte_exact_on_cpu() -> None:
    model = mlp()
    report = nncost.memory(model, (64,), batch_size=1, optimizer="adam", allocator="cpu")
    assert report.peak_phase == "optimizer"  # weights dominate at batch 1: the peak is in the step
    assert report.breakdown["parameters"] == param_bytes(model)
    assert report.breakdown["gradients"] == param_bytes(model)
    # exp_avg and exp_avg_sq per parameter, and Adam's scalar fp32 `step` per parameter tensor
    assert report.breakdown["optimizer_state"] == 2 * param_bytes(model) + 4 * 4
    assert report.breakdown["inputs"] == 64 * FP32


def test_cuda_semantics_round_to_blocks_and_keep_the_step_on_the_host() -> None:
    model = mlp()
    report = nncost.memory(model, (64,), optimizer="adam", allocator="cuda")

    def block(n: int) -> int:
        return -(-n // 512) * 512

    assert report.breakdown["parameters"] == sum(block(p.numel() * FP32) for p in model.parameters())
    assert report.breakdown["optimizer_state"] == 2 * report.breakdown["parameters"]


@pytest.mark.parametrize(("optimizer", "states"), [("sgd", 0), ("sgd-momentum", 1), ("adagrad", 1), ("rmsprop", 1)])
def test_optimizer_state_follows_pytorch(optimizer: str, states: int) -> None:
    model = mlp()
    report = nncost.memory(model, (64,), optimizer=optimizer, allocator="cuda")
    # Every optimizer keeps its scalar `step` on the host unless capturable: not GPU memory.
    assert report.breakdown["optimizer_state"] == states * report.breakdown["parameters"]


def test_backward_counts_what_autograd_runs_not_twice_the_forward() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    model[0].requires_grad_(False)  # frozen: no weight gradient, and so no input gradient for layer 1
    report = nncost.memory(model, (8,), batch_size=3, optimizer="sgd", allocator="cpu")
    assert report.forward_macs == 3 * 8 * 16 + 3 * 16 * 4
    assert report.backward_macs == 3 * 16 * 4  # only layer 1's weight gradient
    assert report.breakdown["gradients"] <= (16 * 4 + 4) * FP32


def test_inference_mode_peak_is_the_profile_peak_plus_weights_and_input() -> None:
    # 6 output channels: oneDNN's blocked dst pads them to a vector (8 lanes on AVX2, 16 on AVX-512)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 30 * 30, 10))
    profiled = nncost.profile(model, (3, 32, 32), batch_size=4)
    report = nncost.memory(model, (3, 32, 32), batch_size=4, mode="infer", allocator="cpu")
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    highest_live = max(sum(live) for _, live in report.timeline)  # tensors only: no kernel workspaces
    assert highest_live == weights + 4 * 3 * 32 * 32 * FP32 + profiled.totals.peak_activation_bytes
    # on the CPU, oneDNN's blocked copies inside the convolution set the peak
    assert report.peak_bytes > highest_live and report.peak_at.startswith("aten.convolution")
    assert report.peak_at.endswith("(inside its kernel)")


def test_the_users_model_is_untouched_by_a_simulated_step() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout())
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nncost.memory(model, (4,), batch_size=2, optimizer="adam")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_estimate_agrees_with_a_measured_cpu_step() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    simulated = nncost.memory(model, (3, 64, 64), batch_size=4, allocator="cpu").peak_bytes
    measured = measure_cpu_peak(model, (torch.empty(4, 3, 64, 64, device="meta"),), {}, mode="train",
                                optimizer="adam")
    assert abs(simulated - measured) / measured < 0.02


NET = """
from torch import nn


def Net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
"""


def test_a_measured_cpu_step_prints_no_profiler_noise(tmp_path: Path) -> None:
    # The CPU step runs under torch.profiler, whose C++ side writes profiler_start/stop markers
    # and, without a GPU, "gpuGetDeviceCount failed" to file descriptor 2: only a process shows it.
    (tmp_path / "net.py").write_text(NET)
    env = {**os.environ, "PYTHONPATH": str(Path(nncost.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "nncost", f"{tmp_path / 'net.py'}:Net", "--input", "64", "--measure", "--train",
         "--hardware", "cpu"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Measured peak" in result.stdout
    for noise in ("profiler_start", "profiler_stop", "gpuGetDeviceCount", "USDT"):
        assert noise not in result.stderr


def test_what_is_not_profiler_noise_still_reaches_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with without_profiler_noise():
        print("a warning", file=sys.stderr)
        os.write(2, b"USDT:2026-11-30 08:22:32 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n"
                    b"from C++\n"
                    b"ERROR:2026-11-30 08:22:32 1:1 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35\n")
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "a warning\nfrom C++\nafter\n"


def test_cli_train_json_has_the_memory_section() -> None:
    pytest.importorskip("torchvision")
    chunks: list[str] = []
    assert run(["resnet18", "--train", "--batch", "2", "--format", "json"], out=chunks.append) == 0
    data = json.loads("".join(chunks))
    memory = data["memory"]
    assert memory["mode"] == "train" and memory["optimizer"] == "adam" and memory["allocator"] == "cuda"
    assert set(memory["breakdown"]) == {"parameters", "gradients", "optimizer_state", "activations",
                                        "temporaries", "inputs"}
    assert memory["peak_bytes"] == sum(memory["breakdown"].values())
    assert memory["backward_macs"] > data["totals"]["macs"]  # in the memory section, not patched into totals
    assert "backward_macs" not in data["totals"]


def test_cli_rejects_an_unknown_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["resnet18", "--train", "--optimizer", "adamx"]) == 2
    assert "invalid choice: 'adamx'" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("24GiB", 24 << 30), ("80GB", 80 * 10**9), ("512 MiB", 512 << 20),
                                             ("1e9", 10**9)])
def test_parse_bytes(text: str, value: int) -> None:
    from nncost.analyses.fit import parse_bytes

    assert parse_bytes(text) == value


def test_largest_batch_is_confirmed_not_extrapolated() -> None:
    from nncost.analyses.fit import largest_batch

    calls: list[int] = []

    def peak(n: int) -> int:  # linear with a jump at 100: extrapolation from 1 and 2 would overshoot
        calls.append(n)
        return 1000 + 10 * n + (5000 if n >= 100 else 0)

    assert largest_batch(peak, 5_000) == 99  # a straight line through 1 and 2 would say 400
    assert 99 in calls and 100 in calls


def test_fit_finds_a_batch_whose_simulated_peak_fits() -> None:
    model = mlp()
    budget = nncost.memory(model, (64,), batch_size=40, allocator="cpu").peak_bytes
    report = nncost.memory(model, (64,), allocator="cpu", fit=budget)
    assert report.max_batch is not None
    assert nncost.memory(model, (64,), batch_size=report.max_batch, allocator="cpu").peak_bytes <= budget
    assert nncost.memory(model, (64,), batch_size=report.max_batch + 1, allocator="cpu").peak_bytes > budget


def test_a_budget_smaller_than_the_weights_is_refused() -> None:
    with pytest.raises(nncost.BadRequest, match="even batch 1"):
        nncost.memory(mlp(), (64,), fit="1KiB")


@pytest.mark.parametrize("strategy", ["ddp", "zero1", "zero2", "zero3", "fsdp"])
def test_sharding_divides_the_model_states(strategy: str) -> None:
    """Parameters and optimizer state live through the whole step, so they follow the sharding
    rule whichever moment is one GPU's highest; gradients are at most their share; the per-GPU
    peak is no higher than the one-GPU peak (DDP's bucket copy of the gradients aside)."""
    model = mlp()
    single = nncost.memory(model, (64,), allocator="cpu")
    sharded = nncost.memory(model, (64,), allocator="cpu", gpus=4, sharding=strategy)
    assert sharded.per_gpu is not None
    b, s = single.breakdown, sharded.per_gpu
    expected_state = b["optimizer_state"] if strategy == "ddp" else -(-b["optimizer_state"] // 4)
    assert s["optimizer_state"] == expected_state
    assert s["parameters"] == (-(-b["parameters"] // 4) if strategy in ("zero3", "fsdp") else b["parameters"])
    assert s["gradients"] <= (b["gradients"] if strategy in ("ddp", "zero1") else -(-b["gradients"] // 4))
    if strategy != "ddp":
        assert sum(s.values()) - s["communication"] <= single.peak_bytes


def test_checkpointing_recomputes_the_blocks_forward_and_saves_less() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    plain = nncost.memory(model, (3, 128, 128), batch_size=8, allocator="cpu")
    checkpointed = nncost.memory(model, (3, 128, 128), batch_size=8, allocator="cpu", checkpointing=True)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert checkpointed.checkpointed == blocks  # the BasicBlocks, the outermost repeated modules
    profiled = nncost.profile(model, (3, 128, 128), batch_size=8)
    block_macs = sum(layer.macs for layer in profiled.layers if layer.name in blocks)
    assert checkpointed.recompute_macs == block_macs
    assert checkpointed.backward_macs == plain.backward_macs + block_macs
    assert plain.peak_phase == checkpointed.peak_phase == "backward"
    assert checkpointed.breakdown["activations"] < plain.breakdown["activations"]
    assert checkpointed.peak_bytes < plain.peak_bytes
    assert all("forward" not in vars(module) for module in model.modules())  # the wrapper is gone


def test_checkpointing_named_modules_and_unknown_names() -> None:
    model = nn.Sequential(mlp(), nn.Linear(64, 8))
    report = nncost.memory(model, (64,), checkpointing=["0"])
    # Early stop: the recomputation ends once the saved tensors backward needs exist again, so the
    # last Linear, whose output backward does not need, is not re-run.
    assert report.checkpointed == ["0"] and report.recompute_macs == 64 * 256
    with pytest.raises(nncost.BadRequest, match="no module named '9'"):
        nncost.memory(model, (64,), checkpointing=["9"])


def test_checkpoint_early_stop_keeps_layer_attribution_balanced() -> None:
    """Non-reentrant checkpointing aborts its recomputation with an exception; the backward after it
    must not be attributed to the module that was running when it stopped."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    report = nncost.memory(model, (3, 64, 64), batch_size=2, allocator="cpu", checkpointing=True)
    assert report.recompute_macs < report.backward_macs / 2


def test_checkpointed_transformers_layers_leave_the_cache_alone() -> None:
    """As transformers' own gradient checkpointing: a checkpointed layer gets no KV cache, so its
    recomputation does not append its keys and values a second time (a cache of 2 × seq)."""
    transformers = pytest.importorskip("transformers")
    from nncost.simulation.step import capture_step

    seq = 64
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, max_position_embeddings=128))
    trace = capture_step(model, (), {"input_ids": torch.zeros((1, seq), dtype=torch.long)}, checkpointing=True)
    assert trace.checkpointed == ["model.layers.0", "model.layers.1"]
    assert not any(len(shape) == 4 and shape[2] == 2 * seq for op in trace.ops for shape in op.out_shapes)


def test_plot_writes_a_png(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    from pathlib import Path

    target = Path(str(tmp_path)) / "memory.png"
    from nncost.render.plot import plot_memory

    report = nncost.memory(mlp(), (64,), batch_size=8)
    plot_memory(report, str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert max(sum(live) for _, live in report.timeline) == report.peak_bytes


def test_a_data_dependent_model_says_the_simulation_needs_meta_execution() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x[torch.nonzero(x[:, 0] > 0).squeeze(1)])

    with pytest.raises(nncost.NeedsWeights, match="needs real values"):
        nncost.memory(DataDependent(), (6,), batch_size=3)


def test_a_wrong_input_names_the_layer_in_the_simulation_too() -> None:
    with pytest.raises(nncost.InputMismatch, match=r"0 \(Linear\) expects 64 input features .* got 32"):
        nncost.memory(mlp(), (32,))


class WrongWidth(ValueError):
    """An exception class defined in Python: the capture holds it by weak reference."""


class ChecksWidth(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 256:
            raise WrongWidth(f"expected 256 features, got {x.shape[-1]}")
        return x


def test_a_models_own_exception_class_still_names_the_layer() -> None:
    model = nn.Sequential(nn.Linear(64, 128), ChecksWidth())
    with pytest.raises(nncost.InputMismatch, match=r"1 \(ChecksWidth\)'s forward raised WrongWidth: expected 256"):
        nncost.memory(model, (64,), batch_size=2)


def test_saved_for_backward_counts_each_storage_once_for_its_first_saver() -> None:
    """``Linear → ReLU → Linear`` at batch 8: the first linear keeps its input (counted, although the
    step made it before the forward), ReLU its output, which the second linear would keep too;
    parameters are not counted; the model's entry is the sum."""
    report = nncost.memory(mlp(), (64,), batch_size=8, allocator="cpu")
    x, hidden = 8 * 64 * FP32, 8 * 256 * FP32
    assert report.saved_for_backward == {"": x + hidden, "0": x, "1": hidden, "2": 0}
    assert nncost.memory(mlp(), (64,), batch_size=8, mode="infer").saved_for_backward == {}


def test_a_checkpointed_block_keeps_its_input_for_backward() -> None:
    model = nn.Sequential(nn.Linear(64, 64), mlp())
    report = nncost.memory(model, (64,), batch_size=8, allocator="cpu", checkpointing=["1"])
    x = 8 * 64 * FP32
    assert report.saved_for_backward["1"] == x  # its input, which torch.utils.checkpoint saves
    assert report.saved_for_backward["1.1"] == 0  # nothing inside it until the backward recomputes it
    assert report.saved_for_backward[""] == 2 * x


def test_dropout_keeps_a_bool_mask_with_cuda_s_kernels_and_a_dtype_mask_with_the_cpu_s() -> None:
    """CUDA runs ``F.dropout`` as the fused ``native_dropout`` (a 1-byte mask); the CPU and meta
    tensors multiply by a noise tensor of the input's dtype."""
    model = nn.Sequential(nn.Linear(64, 64), nn.Dropout(0.1))
    cuda = nncost.memory(model, (64,), batch_size=8, allocator="cuda").saved_for_backward
    cpu = nncost.memory(model, (64,), batch_size=8, allocator="cpu").saved_for_backward
    assert cuda["1"] == 8 * 64 * 1
    assert cpu["1"] == 8 * 64 * FP32
    inplace = nn.Sequential(nn.Linear(64, 64), nn.Dropout(0.1, inplace=True))  # dropout_ never fuses
    assert nncost.memory(inplace, (64,), batch_size=8, allocator="cuda").saved_for_backward["1"] == 8 * 64 * FP32


@pytest.mark.parametrize("allocator", ["cpu", "cuda"])
def test_checkpointed_attention_recomputes_down_the_same_kernels(allocator: str) -> None:
    """The backward runs with the capture's kernel paths active: a checkpointed block's recomputed
    forward takes the CPU's flash attention (or CUDA's fused dropout) as its first forward did, and
    checkpointing's metadata check passes."""
    model = nn.Sequential(*(nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True) for _ in range(2)))
    plain = nncost.memory(model, (16, 64), batch_size=2, allocator=allocator)
    checkpointed = nncost.memory(model, (16, 64), batch_size=2, allocator=allocator, checkpointing=True)
    assert checkpointed.checkpointed == ["0", "1"]
    assert checkpointed.recompute_flops > 0
    assert checkpointed.saved_for_backward[""] < plain.saved_for_backward[""]


def test_a_bf16_layer_norm_keeps_bf16_statistics_on_the_cpu_and_fp32_on_cuda() -> None:
    """LayerNorm's mean and rstd: the input's dtype on the CPU when the weights are 16-bit too, fp32
    on CUDA (and on the CPU when autocast leaves the weights in fp32)."""
    model = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64))
    tokens, bf16 = 8, 2
    cpu = nncost.memory(model, (64,), batch_size=tokens, allocator="cpu", precision="bf16").saved_for_backward
    cuda = nncost.memory(model, (64,), batch_size=tokens, allocator="cuda", precision="bf16").saved_for_backward
    mixed = nncost.memory(model, (64,), batch_size=tokens, allocator="cpu", precision="bf16-mixed").saved_for_backward
    assert cpu["1"] == tokens * 64 * bf16 + 2 * tokens * bf16
    assert cuda["1"] == tokens * 64 * bf16 + 2 * tokens * FP32
    assert mixed["1"] == tokens * 64 * bf16 + 2 * tokens * FP32


@pytest.mark.parametrize("strategy", ["zero1", "zero3", "fsdp"])
def test_each_gpu_runs_the_optimizer_on_its_shard_only(strategy: str) -> None:
    """A model that is all parameters peaks in the optimizer's step, among the temporaries
    foreach Adam makes for every parameter.  Sharded, each GPU updates 1/N of them: its peak is
    a 1/N share of the one-GPU peak, plus what is not sharded (the input, the activations, the
    full layer ZeRO-3 gathers and its gradient before the reduce-scatter, and the layer gradient
    the backward is making), not the optimizer's temporaries for the whole model."""
    width, layers, gpus = 512, 4, 8
    model = nn.Sequential(*(nn.Linear(width, width, bias=False) for _ in range(layers)))
    one = nncost.memory(model, (width,), batch_size=1, optimizer="adam", allocator="cpu")
    report = nncost.memory(model, (width,), batch_size=1, optimizer="adam", allocator="cpu", gpus=gpus,
                           sharding=strategy)
    assert one.peak_phase == "optimizer"
    assert report.per_gpu is not None
    layer = width * width * 4
    unsharded = {"zero1": 2 * layer * layers, "zero3": 3 * layer, "fsdp": 3 * layer}[strategy]  # zero1: params, grads
    activations = 4 * width * (layers + 1) * 2  # inputs and outputs of every layer, forward and backward
    assert sum(report.per_gpu.values()) <= one.peak_bytes / gpus + unsharded + activations



def stacked_linears(width: int, layers: int) -> nn.Sequential:
    """Repeated blocks of one bias-free ``width × width`` linear layer each: checkpointing's blocks."""
    return nn.Sequential(*(nn.Sequential(nn.Linear(width, width, bias=False), nn.ReLU()) for _ in range(layers)))


def test_fsdp_gathers_one_layers_autocast_casts_at_a_time() -> None:
    """bf16-mixed under FSDP with checkpointing: autocast's bf16 casts of the fp32 weights are
    made from the unit FSDP has gathered, and the checkpointed forward saves none of them, so at
    most one layer's casts are live on a GPU, not the whole model's.

    Closed form of one GPU's peak, P = L·w² parameters over G GPUs: the optimizer's step holds
    the fp32 parameters, gradients and AdamW's two moments, 16·P/G bytes, and FSDP's gathered
    layer and its gradient, 2·4·w².  The backward of a layer holds at most the same, plus its bf16
    cast (2·w²) and its weight's bf16 gradient (2·w²), with the small activations of batch 2."""
    width, layers, gpus, batch = 256, 16, 16, 2
    report = nncost.memory(stacked_linears(width, layers), (width,), batch_size=batch, optimizer="adamw",
                           allocator="cpu", precision="bf16-mixed", gpus=gpus, sharding="fsdp", checkpointing=True)
    assert report.per_gpu is not None
    params, layer = layers * width * width, width * width
    model_states = 16 * params // gpus + 2 * FP32 * layer
    activations = 8 * batch * width * (layers + 2)  # each block's input, and a few fp32 rows in flight
    assert model_states <= report.peak_per_gpu_bytes <= model_states + 2 * 2 * layer + activations
    # the whole model's casts, 2·P bytes, would be more than all of that allowance
    assert 2 * params > 2 * 2 * layer + activations


def test_fsdp_keeps_the_casts_a_matrix_product_saves() -> None:
    """Without checkpointing, each matrix product saves its bf16 weight for backward: autograd
    holds those casts until the backward, whatever FSDP frees, so the end of the forward holds all
    of them (2·P bytes) besides the sharded fp32 parameters and moments and the gathered layer."""
    width, layers, gpus = 256, 16, 16
    report = nncost.memory(stacked_linears(width, layers), (width,), batch_size=2, optimizer="adamw",
                           allocator="cpu", precision="bf16-mixed", gpus=gpus, sharding="fsdp")
    assert report.per_gpu is not None
    params, layer = layers * width * width, width * width
    assert report.per_gpu["activations"] >= 2 * (params - layer)
    assert report.peak_per_gpu_bytes >= 12 * params // gpus + 2 * FP32 * layer + 2 * params


LLAMA_3_70B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
               "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
               "intermediate_size": 28672, "vocab_size": 128256, "rope_theta": 500000.0,
               "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
               "torch_dtype": "bfloat16"}  # its published config.json


@pytest.mark.slow
def test_llama_3_70b_fsdp_mixed_is_bf16_plus_the_fp32_master_state(tmp_path: Path) -> None:
    """``--seq 4096 --train --optimizer adamw --hardware h100-sxm --gpus 64 --sharding fsdp
    --checkpointing``: bf16-mixed keeps fp32 parameters, gradients and AdamW's two moments
    (16 bytes a parameter, sharded over 64 GPUs) where bf16 keeps 16-bit ones; its per-GPU peak
    is the bf16 one plus that master state, within 20% (the activations differ: mixed keeps an
    fp32 residual stream, and the two attention paths differ)."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_3_70B))
    c = LLAMA_3_70B
    h, layers, vocab, inter = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    params = 2 * vocab * h + h + layers * (2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h)
    assert params == 70_553_706_496  # Meta's 70.6 B

    def per_gpu(precision: str) -> int:
        step = nncost.Step(optimizer="adamw", gpus=64, sharding="fsdp", checkpointing=True)
        request = nncost.Request(str(tmp_path), nncost.Inputs(seq=4096), precision=precision,
                                 hardware="h100-sxm", report=False, step=step)
        memory = nncost.run(request).memory
        assert memory is not None
        return memory.peak_per_gpu_bytes

    expected = per_gpu("bf16") + 16 * params / 64
    assert abs(per_gpu("bf16-mixed") / expected - 1) <= 0.2

def small_llama() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))


# A small Llama: the closed forms below read these values.
LLAMA = {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 256, "tie_word_embeddings": False}
LLAMA_BATCH, LLAMA_SEQ = 2, 64


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
@pytest.mark.parametrize("seq", [64, 256])  # the peak in the optimizer's step, in the backward
def test_a_checkpointed_llama_step_agrees_with_a_measured_one(precision: str, seq: int) -> None:
    """A real step under the same non-reentrant checkpointing of the decoder layers, measured with
    the profiler's allocator events.  The real step also stashes the CPU generator's state per
    checkpointed block (``preserve_rng_state``: a 5,056-byte CPU tensor, made outside any operator
    the tracer sees), hence a tolerance of one such tensor for each block."""
    model = small_llama()
    ids = torch.randint(0, LLAMA["vocab_size"], (LLAMA_BATCH, seq))
    simulated = nncost.memory(model, kwargs={"input_ids": ids}, optimizer="adamw", allocator="cpu",
                              checkpointing=True, precision=precision)
    measured = measure_cpu_peak(model, (), {"input_ids": ids}, mode="train", optimizer="adamw",
                                precision=precision, checkpointing=True)
    plain = measure_cpu_peak(model, (), {"input_ids": ids}, mode="train", optimizer="adamw", precision=precision)
    assert measured < plain  # the measured step checkpoints too
    rng_state = torch.get_rng_state().numel()
    assert 0 <= measured - simulated.peak_bytes <= LLAMA["num_hidden_layers"] * rng_state


@pytest.mark.parametrize(("precision", "logit_bytes"), [("fp32", 4), ("bf16-mixed", 2)])
def test_a_checkpointed_step_frees_the_blocks_inputs_when_the_backward_ends(precision: str, logit_bytes: int) -> None:
    """What the forward and backward made and the optimizer's step finds alive is what a training
    loop holds there: the gradients (fp32, one per parameter) and the model's output, the logits
    (kept until the step is done; bf16 under autocast).  Non-reentrant checkpointing ends each
    block's recomputation by raising inside the recomputed forward and catching it; nothing of
    that forward, nor the blocks' inputs, may outlive the backward."""
    from nncost.simulation.step import capture_step

    d, f, layers, vocab = (LLAMA[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "vocab_size"))
    params = 2 * vocab * d + layers * (4 * d * d + 3 * d * f + 2 * d) + d
    ids = torch.randint(0, vocab, (LLAMA_BATCH, LLAMA_SEQ))
    trace = capture_step(small_llama(), (), {"input_ids": ids}, optimizer="adamw", allocator="cpu",
                         checkpointing=True, precision=precision)
    live: dict[int, int] = {}
    for op_index, delta, allocation in trace.memory_events:
        if op_index > trace.backward_end:
            break
        if delta > 0 and op_index < trace.backward_end:
            live[allocation] = delta
        elif delta < 0:
            live.pop(allocation, None)
    assert sum(live.values()) == FP32 * params + LLAMA_BATCH * LLAMA_SEQ * vocab * logit_bytes
