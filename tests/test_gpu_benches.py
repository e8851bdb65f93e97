"""The GPU session's scripts (bench/gpu_session.sh), checked here on the CPU so that the short time on a
lent GPU is not spent finding their bugs: what runs on the CPU is run, the rest is imported."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scripts import ROOT, load_script

pytest.importorskip("transformers")
SESSION = ROOT / "bench" / "gpu_session.sh"


def session_scripts() -> list[str]:
    return re.findall(r"python3 (bench/\S+\.py)", SESSION.read_text())


def test_the_session_script_parses_and_runs_every_cuda_bench() -> None:
    subprocess.run(["bash", "-n", str(SESSION)], check=True)
    scripts = session_scripts()
    expected = ["cuda_learn", "memory_cuda", "roofline_cuda", "generation_cuda", "cuda_check", "engine_cuda"]
    assert [Path(s).stem for s in scripts] == expected
    assert all((ROOT / s).is_file() for s in scripts)
    limits = [int(n) for n in re.findall(r"^run (\d+) ", SESSION.read_text(), flags=re.M)]
    assert len(limits) == len(expected) and sum(limits) <= 420  # leaves a rerun inside 15 device minutes


def test_the_session_writes_at_most_the_eight_files_the_device_tool_brings_back() -> None:
    """summary.txt, one text file per ``run`` line's FILE (two steps may share one), and the JSON files
    the steps are told to write; the header comment names each of them."""
    text = SESSION.read_text()
    files = {"summary.txt"} | {f"{name}.txt" for name in re.findall(r"^run \d+ (\w+) ", text, flags=re.M)}
    files |= set(re.findall(r'"\$out/(\w+\.json)"', text))
    assert len(files) <= 8, sorted(files)
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert all(re.search(rf"\b{re.escape(name)}\b", header) for name in files), sorted(files)
    assert all(f"bench/{Path(s).name}" in header for s in session_scripts())


@pytest.mark.parametrize("script", ["bench/cuda_learn.py", "bench/memory_cuda.py", "bench/cuda_check.py",
                                    "bench/roofline_cuda.py", "bench/generation_cuda.py", "bench/engine_cuda.py"])
def test_each_cuda_bench_imports(script: str) -> None:
    load_script(script, "nncost_gpu_" + Path(script).stem)


def test_generation_bench_runs_on_the_cpu(tmp_path: Path) -> None:
    """The tiny model of the same architecture, generated for real on the CPU: one table row per batch, and
    nncost's parameter count equal to the built model's."""
    run = subprocess.run([sys.executable, "bench/generation_cuda.py", "--device", "cpu", "--tiny", "--hardware",
                          "h100-sxm", "--prompt", "8", "--new", "3", "--batches", "1", "2", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]
    tiny = load_script("bench/generation_cuda.py", "nncost_gpu_generation").TINY
    head_dim = tiny["head_dim"]
    params = (tiny["vocab_size"] * tiny["hidden_size"]  # tied embeddings
              + tiny["num_hidden_layers"] * (
                  tiny["hidden_size"] * head_dim * (2 * tiny["num_attention_heads"] + 2 * tiny["num_key_value_heads"])
                  + 3 * tiny["hidden_size"] * tiny["intermediate_size"] + 2 * tiny["hidden_size"])
              + tiny["hidden_size"])
    assert all(row.split("|")[-2].strip().startswith(f"{params:,} ") for row in rows)
    assert run.stdout.rstrip().endswith("ALL OK")


def test_the_published_llama_config_has_its_published_parameter_count() -> None:
    bench = load_script("bench/generation_cuda.py", "nncost_gpu_generation")
    model = bench.build(bench.LLAMA_32_1B, torch.device("meta"))
    assert sum(p.numel() for p in model.parameters()) == bench.LLAMA_32_1B_PARAMS == 1_235_814_400


def test_leaf_kernel_seconds_times_every_leaf_on_the_cpu() -> None:
    roofline_cuda = load_script("bench/roofline_cuda.py", "nncost_gpu_roofline")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(8 * 14 * 14, 4)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = roofline_cuda.leaf_kernel_seconds(model, {"input_size": (3, 16, 16), "batch_size": 2}, "fp32", "cpu",
                                                passes=2)
    assert set(seconds) == {"0", "1", "2.0", "2.1"}
    assert all(s > 0 for s in seconds.values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_roofline_table_judges_rows_at_the_shared_and_held_out_factors() -> None:
    """Two rows at efficiencies 0.5 and 0.8: the shared factor is their geometric mean, √0.4, and each row's
    error under it and under the other row's factor follows from the definitions."""
    roofline_cuda = load_script("bench/roofline_cuda.py", "nncost_gpu_roofline")

    def row(model: str, estimated: float, kernels: float, batch: int) -> dict[str, object]:
        leaves = [{"name": "fc", "type": "Linear", "estimated": estimated, "measured": kernels}]
        return {"model": model, "precision": "bf16", "batch": batch, "seq": None, "estimated": estimated,
                "kernels": kernels, "forward": 2 * kernels, "mfu": 0.1, "leaves": leaves}

    text = roofline_cuda.table([row("a", 0.5, 1.0, 1), row("b", 0.8, 1.0, 64)], "GPU", "h200", "cmd", "torch x")
    factor = math.sqrt(0.5 * 0.8)
    assert f"**{factor:.3f}**" in text
    a = next(line for line in text.splitlines() if line.startswith("| a |"))
    cells = [c.strip() for c in a.split("|")]
    assert cells[7] == "0.500"
    assert cells[8].startswith(f"{100 * (0.5 / factor - 1):+.1f}%")
    assert cells[9] == f"{100 * (0.5 / 0.8 - 1):+.1f}%"
    linear = next(line for line in text.splitlines() if line.startswith("| Linear |"))
    assert [c.strip() for c in linear.split("|")][3:5] == ["0.50", "0.80"]  # roof reached at batch 1 and 64


def test_engine_bench_runs_on_the_cpu(tmp_path: Path) -> None:
    """The paged decode step of the tiny config, measured on the CPU beside nncost's --engine vllm estimate: one
    row per batch and context, the CUDA-graph parts skipped with a line that says so, and the JSON's constants
    named as src/nncost/hardware/engines.py names them, each beside its published value."""
    from nncost.hardware.engines import CONSTANTS

    out = tmp_path / "engine.json"
    run = subprocess.run([sys.executable, "bench/engine_cuda.py", "--device", "cpu", "--tiny", "--hardware", "h100-sxm",
                          "--batches", "1", "2", "--contexts", "20", "--repeats", "2", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if re.match(r"\| \d+ \| \d+ \|", line)]
    assert [(row[1].strip(), row[2].strip()) for row in rows] == [("1", "20"), ("2", "20")]
    assert "CUDA graphs: skipped (needs CUDA)" in run.stdout
    assert run.stdout.rstrip().endswith("ALL OK")
    document = json.loads(out.read_text())
    assert set(document["constants"]) == set(CONSTANTS) - {"max_capture_batch"}
    for name, entry in document["constants"].items():
        assert entry["published"] == CONSTANTS[name].value and entry["value"] is None  # nothing CUDA on the CPU
    assert document["launch_lines"]["eager_op"]["per_kernel_seconds"] > 0
    steps = document["decode_steps"]
    assert [(s["batch"], s["context"]) for s in steps] == [(1, 20), (2, 20)]
    assert all(s["estimated"]["kernels"] > 0 and s["measured"]["graph_seconds"] is None for s in steps)


def test_the_engine_bench_writes_slots_and_gathers_the_context_in_order() -> None:
    """Tokens written one position at a time through the shuffled block table come back from the gather in
    their positions' order; the step's own slots are the new token's."""
    bench = load_script("bench/engine_cuda.py", "nncost_gpu_engine")
    config = {**bench.TINY, "num_hidden_layers": 1}
    batch, context = 3, 40
    cache = bench.paged_cache(config, batch, context, torch.device("cpu"))
    pool = cache.keys[0]
    assert sorted(cache.table.flatten().tolist()) == list(range(pool.shape[0]))  # each block once
    assert torch.equal(cache.slots, bench.slots(cache.table, context))
    written = torch.randn(batch, config["num_key_value_heads"], context + 1, config["head_dim"]).to(bench.DTYPE)
    for position in range(context + 1):
        bench.write(pool, bench.slots(cache.table, position), written[:, :, position:position + 1])
    assert torch.equal(bench.gather(pool, cache.table, cache.tokens), written)
