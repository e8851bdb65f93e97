"""The fusions of a compiled engine (nncost.analyses.fusion): runs of pointwise operators as one kernel.

On a toy block of known structure the fused step is written in closed form: a linear layer, an
RMS norm as six eager operators, a linear layer to twice the width, SiLU of one half times the
other, a linear layer.  The two pointwise runs become two kernels; the norm's reads its input
and its weight and writes what the next product reads; SiLU-and-mul reads the product once and
writes half of it.  On a tiny llama with ``--engine vllm`` the pass keeps the matrix work, lowers
the kernels and the bytes, leaves hf-generate as it was, and the decode phase still sums exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import nncost
from nncost.analyses.fusion import FUSED, fused
from nncost.analyses.overhead import kernels
from nncost.analyses.reads import bytes_read
from nncost.capture.generation import session
from nncost.capture.run import capture
from nncost.cli import run as cli_run
from nncost.records.trace import Trace
from nncost.request import Generation

TOKENS, WIDTH, HIDDEN, FP32 = 5, 16, 24, 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(WIDTH, WIDTH, bias=False)
        self.weight = nn.Parameter(torch.ones(WIDTH))
        self.up = nn.Linear(WIDTH, 2 * HIDDEN, bias=False)
        self.down = nn.Linear(HIDDEN, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + 1e-6)
        h = h * self.weight
        gate, up = self.up(h).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


def block_trace() -> Trace:
    return capture(Block(), (torch.zeros(TOKENS, WIDTH),), {})


def counted(trace: Trace) -> list[str]:
    return [op.unit for op in trace.ops if op.unit != "free"]


def test_the_toy_block_fuses_into_its_closed_form() -> None:
    eager = block_trace()
    assert counted(eager) == ["matmul", "transcendental", "reduction", "elementwise", "transcendental", "elementwise",
                              "elementwise", "matmul", "transcendental", "elementwise", "matmul"]
    after = fused(eager)
    assert counted(after) == ["matmul", FUSED, "matmul", FUSED, "matmul"]
    assert kernels(after) == 5 and kernels(eager) == 11
    assert sum(op.macs for op in after.ops) == sum(op.macs for op in eager.ops)
    assert sum(op.flops for op in after.ops) == sum(op.flops for op in eager.ops)
    norm, silu_mul = (op for op in after.ops if op.unit == FUSED)
    # the norm reads the first product and its weight, writes the normalised rows the next product reads
    assert norm.read_bytes == (TOKENS * WIDTH + WIDTH) * FP32
    assert norm.write_bytes == TOKENS * WIDTH * FP32
    # SiLU-and-mul reads both halves of the second product once, writes one half's size
    assert silu_mul.read_bytes == TOKENS * 2 * HIDDEN * FP32
    assert silu_mul.write_bytes == TOKENS * HIDDEN * FP32
    pointwise = [op.flops for op in eager.ops if op.unit not in ("matmul", "free")]
    assert (norm.flops, silu_mul.flops) == (sum(pointwise[:6]), sum(pointwise[6:]))
    matmuls = [op for op in after.ops if op.unit == "matmul"]
    assert matmuls == [op for op in eager.ops if op.unit == "matmul"]  # products are never touched


def test_intermediates_leave_the_memory_timeline() -> None:
    eager = block_trace()
    after = fused(eager)
    assert len(after.memory_events) < len(eager.memory_events)
    assert all(0 <= index <= len(after.ops) for index, _, _ in after.memory_events if index >= 0)
    assert fused(after) == after  # a fused trace has nothing left to fuse


transformers = pytest.importorskip("transformers")
BATCH, PROMPT, NEW = 2, 6, 7


def llama() -> nn.Module:
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                      max_position_embeddings=256)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def test_a_vllm_decode_step_keeps_its_matrix_work_with_fewer_kernels_and_bytes() -> None:
    with session(llama(), BATCH, dtype=torch.bfloat16, max_cache_length=40, kernels="cuda", engine="vllm") as run:
        step = bytes_read(run.decode_at(20)[0])
    after = fused(step)
    assert sum(op.macs for op in after.ops) == sum(op.macs for op in step.ops)
    assert sum(op.flops for op in after.ops) == sum(op.flops for op in step.ops)
    assert kernels(after) < kernels(step)
    moved = sum(op.read_bytes + op.write_bytes for op in after.ops)
    assert moved < sum(op.read_bytes + op.write_bytes for op in step.ops)
    # the cache's slot writes and attention stay kernels of their own
    assert sum(op.op == "index_copy_" for op in after.ops) == sum(op.op == "index_copy_" for op in step.ops) > 0
    assert [op for op in after.ops if op.unit == "attention"] == [op for op in step.ops if op.unit == "attention"]


def test_fusions_do_not_depend_on_the_context() -> None:
    with session(llama(), BATCH, dtype=torch.bfloat16, max_cache_length=60, kernels="cuda", engine="vllm") as run:
        steps = [fused(bytes_read(run.decode_at(context)[0])) for context in (6, 7, 30)]
    shapes = [[(op.op, op.layer, op.unit) for op in step.ops] for step in steps]
    assert shapes[0] == shapes[1] == shapes[2]


def costed(engine: str) -> nncost.records.generation.GenerationReport:
    generation = nncost.run(nncost.Request(llama(), nncost.Inputs(batch_size=BATCH), dtype=torch.bfloat16,
                                           generation=Generation(PROMPT, NEW, engine=engine))).generation
    assert generation is not None
    return generation


def test_the_summed_decode_phase_is_every_fused_step() -> None:
    with session(llama(), BATCH, dtype=torch.bfloat16, max_cache_length=PROMPT + NEW, kernels="cuda",
                 engine="vllm") as run:
        run.prefill(PROMPT)
        steps = [fused(bytes_read(run.decode_at(context)[0])) for context in range(PROMPT, PROMPT + NEW - 1)]
    decode = costed("vllm").decode.totals
    assert decode.macs == sum(op.macs for step in steps for op in step.ops)
    assert decode.flops == sum(op.flops for step in steps for op in step.ops)
    assert decode.read_bytes == sum(op.read_bytes for step in steps for op in step.ops)
    assert decode.write_bytes == sum(op.write_bytes for step in steps for op in step.ops)


def test_the_engine_fuses_and_hf_generate_does_not() -> None:
    vllm, hf = costed("vllm"), costed("hf-generate")
    assert vllm.decode.totals.macs == hf.decode.totals.macs
    assert vllm.prefill.totals.macs == hf.prefill.totals.macs
    units = {op.unit for layer in vllm.decode.layers for op in layer.self_ops}
    assert FUSED in units
    assert FUSED not in {op.unit for layer in hf.decode.layers for op in layer.self_ops}


@pytest.fixture
def llama_dir(tmp_path: Path) -> Path:
    transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=128).save_pretrained(tmp_path)
    return tmp_path


def test_hf_generate_json_is_unchanged_by_the_pass(llama_dir: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [str(llama_dir), "--prompt", "6", "--new-tokens", "5", "--hardware", "h100-sxm", "--format", "json"]
    assert cli_run(argv) == 0
    with_pass = json.loads(capsys.readouterr().out)
    monkeypatch.setattr("nncost.stages.generation.fused", lambda trace: pytest.fail("hf-generate was fused"))
    assert cli_run(argv) == 0
    assert json.loads(capsys.readouterr().out) == with_pass
