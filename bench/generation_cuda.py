"""Generation estimated against the real ``model.generate`` on a GPU (issue 14, item 3).

    PYTHONPATH=src python3 bench/generation_cuda.py                   # on a CUDA machine, about a minute
    PYTHONPATH=src python3 bench/generation_cuda.py --device cpu --tiny --hardware h100-sxm   # the script's own check

The model is meta-llama/Llama-3.2-1B's published config (1,235,814,400 parameters; written below,
nothing is downloaded), built with random weights in bf16 on the device, SDPA attention.  For each
batch (1 and 16 sequences of ``--prompt`` tokens), after a warm-up call:

- **time to first token**: the median wall time of ``generate(max_new_tokens=1)`` (the prefill and
  the first token's choice), against nncost's ``time_to_first_token_seconds``;
- **tokens/s** (one sequence's decode rate, as nncost reports it): ``(N − 1) / (t_N − t_1)`` for
  ``generate(max_new_tokens=N)``, against nncost's ``tokens_per_second``;
- **the device's own time per decode step**: the CUDA kernels' summed time under ``torch.profiler``
  over ``generate(N)`` less that over ``generate(1)``, divided by ``N − 1``.  ``generate`` launches
  every kernel from Python, one decode step at a time; where the wall time per step is far above the
  kernels' time, the host's launches, not the GPU, set the rate, and the roofline (a model of the
  device) is compared with the kernels' time;
- **peak memory**: ``torch.cuda.max_memory_allocated()`` over ``generate(N)``, weights included,
  against nncost's ``peak_bytes``.

The estimate: ``nncost.run(Request(<config dir>, Inputs(batch_size=B),
generation=Generation(P, N), hardware=<this GPU>, precision="bf16"))``, on meta tensors.
End-of-sequence is switched off so that every call makes exactly N tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nncost
from _profiler import kernel_seconds, profiled
from nncost.request import Generation, Inputs

# meta-llama/Llama-3.2-1B, config.json as published (tied embeddings, grouped-query attention)
LLAMA_32_1B: dict[str, Any] = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "hidden_act": "silu", "torch_dtype": "bfloat16",
    "bos_token_id": 128000, "eos_token_id": 128001,
}
LLAMA_32_1B_PARAMS = 1_235_814_400  # the published model's count (safetensors metadata of the Hub repo)
# The same architecture at a size a CPU generates with in seconds: the script's own check.
TINY: dict[str, Any] = {**LLAMA_32_1B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
                        "bos_token_id": 1, "eos_token_id": 2}


def estimate(config: dict[str, Any], batch: int, prompt: int, new: int, hardware: str) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(config))
        result = nncost.run(nncost.Request(folder, Inputs(batch_size=batch), generation=Generation(prompt, new),
                                           hardware=hardware, precision="bf16"))
    assert result.generation is not None
    return result.generation


def build(config: dict[str, Any], device: torch.device) -> torch.nn.Module:
    import transformers

    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in config.items() if k != "architectures"})
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with device:
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    model.generation_config.eos_token_id = None  # exactly max_new_tokens tokens every call
    model.generation_config.pad_token_id = 0
    return model


def wall(call: Any, device: torch.device, repeats: int) -> float:
    """The median wall time of ``call()`` over ``repeats`` runs, the device synchronized around each."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: torch.nn.Module, batch: int, prompt: int, new: int, device: torch.device,
            repeats: int) -> dict[str, Any]:
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device=device)
    mask = torch.ones_like(ids)

    def generate(tokens: int) -> Any:
        def call() -> Any:
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False)
            assert out.shape == (batch, prompt + tokens), f"generate made {out.shape[1] - prompt} of {tokens} tokens"
            return out
        return call

    generate(new)()  # warm-up: kernels chosen, workspaces allocated
    first = wall(generate(1), device, repeats)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    whole = wall(generate(new), device, max(1, repeats // 2))
    peak = int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None
    per_step_kernels = None
    if device.type == "cuda":
        per_step_kernels = (kernel_seconds(profiled(generate(new), "cuda"))
                            - kernel_seconds(profiled(generate(1), "cuda"))) / (new - 1)
    return {"ttft": first, "tokens_per_second": (new - 1) / (whole - first), "kernel_step": per_step_kernels,
            "peak": peak}


def ratio(estimated: float | None, measured: float | None) -> str:
    return f"{estimated / measured:.2f}" if estimated and measured else "–"


def device_and_hardware(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        script: str) -> tuple[torch.device, str] | None:
    """The device a CUDA bench runs on and the catalogue name of its estimates (``--hardware``, else
    the GPU's own); None, said on stderr, where CUDA is asked for and there is none."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{script} needs a CUDA GPU (or --device cpu)", file=sys.stderr)
        return None
    hardware = args.hardware
    if hardware is None:
        from nncost.hardware.catalogue import match_cuda_name

        hardware = match_cuda_name(torch.cuda.get_device_name()) if device.type == "cuda" else None
        if hardware is None:
            parser.error("pass --hardware NAME (a catalogue name)")
    return device, hardware


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for the script's own check")
    parser.add_argument("--hardware", help="catalogue name for the estimate (default: matched from the GPU's name)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--new", type=int, default=128, help="new tokens per sequence (at least 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same architecture")
    args = parser.parse_args()
    if args.new < 2:
        parser.error("--new must be at least 2: the decode rate needs a decode step")
    target = device_and_hardware(parser, args, "bench/generation_cuda.py")
    if target is None:
        return 2
    device, hardware = target
    import transformers

    config = TINY if args.tiny else LLAMA_32_1B
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}; estimate on {hardware}; "
          f"prompt {args.prompt}, {args.new} new tokens, bf16, {'tiny' if args.tiny else 'Llama-3.2-1B'} config",
          flush=True)
    model = build(config, device)
    params = sum(p.numel() for p in model.parameters())
    if not args.tiny and params != LLAMA_32_1B_PARAMS:
        print(f"the built model has {params:,} parameters, not the published {LLAMA_32_1B_PARAMS:,}", file=sys.stderr)
        return 1
    print("| batch | TTFT measured | TTFT estimated | est./meas. | tokens/s measured | tokens/s estimated | "
          "est./meas. | kernels per decode step | wall per decode step | peak measured | peak estimated | "
          "est./meas. | nncost params |", flush=True)
    failures = 0
    for batch in args.batches:
        start = time.perf_counter()
        g = estimate(config, batch, args.prompt, args.new, hardware)
        estimated_in = time.perf_counter() - start
        failures += g.prefill.totals.params != params
        m = measure(model, batch, args.prompt, args.new, device, args.repeats)
        kernels = f"{m['kernel_step'] * 1e3:.3f} ms" if m["kernel_step"] is not None else "–"
        peak = f"{m['peak']:,}" if m["peak"] is not None else "–"
        print(f"| {batch} | {m['ttft'] * 1e3:.4g} ms | {(g.time_to_first_token_seconds or 0) * 1e3:.4g} ms | "
              f"{ratio(g.time_to_first_token_seconds, m['ttft'])} | {m['tokens_per_second']:.1f} | "
              f"{g.tokens_per_second or 0:.1f} | {ratio(g.tokens_per_second, m['tokens_per_second'])} | {kernels} | "
              f"{1e3 / m['tokens_per_second']:.3f} ms | {peak} | {g.peak_bytes:,} | {ratio(g.peak_bytes, m['peak'])} | "
              f"{g.prefill.totals.params:,} (estimated in {estimated_in:.1f} s) |", flush=True)
    print("ALL OK" if not failures else f"{failures} batches: nncost's parameter count differs from the model's")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
