"""The engine step model (``--engine vllm``) against a measured paged decode step, and the launch constants
of src/nncost/hardware/engines.py measured on this GPU.

    PYTHONPATH=src python3 bench/engine_cuda.py --json engine_cuda.json        # on a CUDA machine, about 30 s
    PYTHONPATH=src python3 bench/engine_cuda.py --device cpu --tiny --hardware h100-sxm   # the script's own check

**Launch constants** (the names of ``nncost.hardware.engines.CONSTANTS``), each the slope or intercept of
a line fitted to host-side wall times (``perf_counter`` around the launches and one synchronize; the
median of ``--repeats`` runs at each count):

- ``kernel_launch_seconds``: N null kernels (``torch.cuda._sleep(0)``) launched one by one, N = 16, 64,
  256: the slope.  The same for a one-element ``add_`` is shown beside it: a PyTorch operator's eager
  dispatch and launch, which is what an eager step pays per kernel;
- ``graph_launch_seconds`` and ``graph_node_seconds``: N null kernels captured in one CUDA graph and
  replayed, N = 8, 32, 128, 512: the intercept (one replay and its synchronize) and the slope;
- ``step_schedule_seconds`` (the engine's CPU work between steps) needs the engine itself and is not
  measured here.

**A paged decode step**, written with PyTorch's own kernels for a Llama-architecture config (the
published meta-llama/Llama-3.2-1B config of bench/generation_cuda.py, random bf16 weights; ``--tiny``:
its 2-layer shape): the model's operators as transformers' Llama runs them (separate q, k, v, gate and
up projections, RMSNorm in float32, rotary from the position), with each layer's keys and values kept in
a pool of blocks of 16 tokens (vLLM's layout ``[blocks, 16, kv heads, head dim]``), the blocks of a
sequence scattered through the pool by a block table.  A step at context L writes the new token's keys
and values into their slots with ``index_copy_`` (vLLM's ``reshape_and_cache``), gathers the sequence's
L + 1 tokens from its blocks, and runs ``scaled_dot_product_attention`` over them (FlashAttention on
CUDA in bf16, grouped-query heads not repeated).  The gather is a copy that vLLM's paged kernel does not
make (it reads the blocks in place): its kernel time is measured in a range of its own and taken out of
every figure compared.  torch 2.11's own flash-attention with a paged KV cache needs the external
FlashAttention 3/4 packages, which the device image does not have.

For each batch and context (1 and 32 sequences, 512 and 2,048 tokens cached), after warm-up:

- **kernels**: the CUDA kernels' summed time per step under ``torch.profiler``, and how many launched;
- **eager step**: the median step time between CUDA events, the device synchronized around each step
  (an engine waits for each step's tokens);
- **graph step**: the same step captured once in a CUDA graph, replayed (vLLM's decode);

beside nncost's estimate of the same step, ``nncost.cost(<config dir>, prompt=L, new_tokens=2,
batch=B, hardware=<this GPU's catalogue name>, engine="vllm", dtype="bfloat16")``: its JSON's
``generation.steps[0].seconds`` is the decode step, and ``generation.overhead`` what of it is overhead.
The bench has no scheduler, so the estimates compared leave out ``step_schedule_seconds``: the kernels'
time, plus K launches (eager) or one graph launch and K nodes (graph), K being nncost's kernel count.
The last column is nncost's whole step, scheduling included.

On the CPU (``--device cpu``) the same runs on CPU timers, the profiler's CPU operator times in place of
kernels; the CUDA-graph parts are skipped, and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nncost
from _profiler import PREFIX, kernel_seconds, profiled, range_seconds
from generation_cuda import LLAMA_32_1B, LLAMA_32_1B_PARAMS, TINY, device_and_hardware
from nncost.hardware.engines import CONSTANTS, GRAPH_LAUNCH_SECONDS, GRAPH_NODE_SECONDS, KERNEL_LAUNCH_SECONDS

BLOCK_TOKENS = 16  # vLLM's default block size, as src/nncost/capture/paged.py
EAGER_COUNTS = (16, 64, 256)
GRAPH_COUNTS = (8, 32, 128, 512)
DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Layer:
    input_norm: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


@dataclass(frozen=True)
class Weights:
    """A Llama-architecture model's weights, tied embeddings: the embedding table is the output head."""

    embed: torch.Tensor
    layers: tuple[Layer, ...]
    norm: torch.Tensor
    inv_freq: torch.Tensor  # rotary frequencies, float32

    def params(self) -> int:
        tensors = [self.embed, self.norm, *(t for layer in self.layers for t in vars(layer).values())]
        return sum(t.numel() for t in tensors)


@dataclass(frozen=True)
class PagedCache:
    """Each layer's keys and values in blocks of ``BLOCK_TOKENS`` tokens; ``table[b]`` the blocks of
    sequence b in order, ``slots[b]`` where its new token goes, ``tokens`` what attention reads (the
    context and the new token)."""

    keys: tuple[torch.Tensor, ...]  # per layer, [blocks, BLOCK_TOKENS, kv heads, head dim]
    values: tuple[torch.Tensor, ...]
    table: torch.Tensor  # [batch, blocks a sequence], int64
    slots: torch.Tensor  # [batch], int64
    tokens: int


def build(config: dict[str, Any], device: torch.device) -> Weights:
    torch.manual_seed(0)
    hidden, inter, d = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    def matrix(rows: int, columns: int) -> torch.Tensor:
        return torch.randn(rows, columns, device=device, dtype=DTYPE) * 0.02

    def ones() -> torch.Tensor:
        return torch.ones(hidden, device=device, dtype=DTYPE)

    layers = tuple(Layer(ones(), matrix(heads * d, hidden), matrix(kv_heads * d, hidden), matrix(kv_heads * d, hidden),
                         matrix(hidden, heads * d), ones(), matrix(inter, hidden), matrix(inter, hidden),
                         matrix(hidden, inter)) for _ in range(config["num_hidden_layers"]))
    inv_freq = 1.0 / config["rope_theta"] ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    return Weights(matrix(config["vocab_size"], hidden), layers, ones(), inv_freq)


def paged_cache(config: dict[str, Any], batch: int, context: int, device: torch.device) -> PagedCache:
    """A pool holding ``context`` tokens a sequence (random values) and room for the next, its blocks shuffled."""
    per_sequence = math.ceil((context + 1) / BLOCK_TOKENS)
    blocks = batch * per_sequence
    table = torch.randperm(blocks, device=device).view(batch, per_sequence)
    shape = (blocks, BLOCK_TOKENS, config["num_key_value_heads"], config["head_dim"])
    layers = range(config["num_hidden_layers"])
    return PagedCache(tuple(torch.randn(shape, device=device, dtype=DTYPE) for _ in layers),
                      tuple(torch.randn(shape, device=device, dtype=DTYPE) for _ in layers), table,
                      slots(table, context), context + 1)


def slots(table: torch.Tensor, position: int) -> torch.Tensor:
    """Each sequence's slot for its token at ``position``: the block that holds it, and its place there."""
    return table[:, position // BLOCK_TOKENS] * BLOCK_TOKENS + position % BLOCK_TOKENS


def write(pool: torch.Tensor, slots: torch.Tensor, new: torch.Tensor) -> None:
    """The new tokens' keys or values (``[batch, kv heads, 1, head dim]``) into their slots, in place."""
    pool.view(-1, *pool.shape[2:]).index_copy_(0, slots, new[:, :, 0])


def gather(pool: torch.Tensor, table: torch.Tensor, tokens: int) -> torch.Tensor:
    """The first ``tokens`` tokens of each sequence from its blocks, as ``[batch, kv heads, tokens, head dim]``."""
    batch, blocks = table.shape
    return pool[table].view(batch, blocks * BLOCK_TOKENS, *pool.shape[2:])[:, :tokens].transpose(1, 2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm: in float32, then the weight in the model's dtype."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def decode_step(weights: Weights, cache: PagedCache, ids: torch.Tensor, position: torch.Tensor,
                config: dict[str, Any], label: bool = False) -> torch.Tensor:
    """One decode step of ``ids`` (``[batch, 1]``) at ``position``: the logits, ``[batch, vocab]``.  With
    ``label``, the gathers run inside a profiler range of their own."""
    batch = ids.shape[0]
    heads, kv_heads, d = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps = config["rms_norm_eps"]
    x = F.embedding(ids, weights.embed)
    freqs = position.float()[:, :, None] * weights.inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [batch, 1, 1, head dim]
    cos, sin = angles.cos().to(DTYPE), angles.sin().to(DTYPE)
    for layer, key_pool, value_pool in zip(weights.layers, cache.keys, cache.values, strict=True):
        h = rms_norm(x, layer.input_norm, eps)
        q = rotate(F.linear(h, layer.q).view(batch, 1, heads, d).transpose(1, 2), cos, sin)
        k = rotate(F.linear(h, layer.k).view(batch, 1, kv_heads, d).transpose(1, 2), cos, sin)
        v = F.linear(h, layer.v).view(batch, 1, kv_heads, d).transpose(1, 2)
        write(key_pool, cache.slots, k)
        write(value_pool, cache.slots, v)
        with record_function(PREFIX + "gather") if label else contextlib.nullcontext():
            keys, values = gather(key_pool, cache.table, cache.tokens), gather(value_pool, cache.table, cache.tokens)
        attention = F.scaled_dot_product_attention(q, keys, values, enable_gqa=heads != kv_heads)
        x = x + F.linear(attention.transpose(1, 2).reshape(batch, 1, heads * d), layer.o)
        h = rms_norm(x, layer.post_norm, eps)
        x = x + F.linear(F.silu(F.linear(h, layer.gate)) * F.linear(h, layer.up), layer.down)
    return F.linear(rms_norm(x, weights.norm, eps), weights.embed)[:, -1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_seconds(call: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """The median time of ``call()``: between CUDA events on CUDA, the device synchronized around each call;
    on the CPU, its wall time."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            call()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def graph_replay(call: Callable[[], Any]) -> Callable[[], None]:
    """``call`` captured once in a CUDA graph (after warm-up on a side stream, as PyTorch asks): its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def wall(call: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """The median host wall time of ``call()`` and one synchronize."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        begin = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """The least-squares line through (count, seconds): its intercept and slope."""
    mean_n = statistics.fmean(n for n, _ in points)
    mean_t = statistics.fmean(t for _, t in points)
    slope = sum((n - mean_n) * (t - mean_t) for n, t in points) / sum((n - mean_n) ** 2 for n, _ in points)
    return mean_t - slope * mean_n, slope


def launch_line(kernel: Callable[[], Any], counts: Sequence[int], device: torch.device, repeats: int,
                graph: bool = False) -> dict[str, Any]:
    """Host wall time of N launches of ``kernel`` (one by one, or captured in one CUDA graph and replayed),
    at each N of ``counts``, and the line through them."""
    points = []
    for count in counts:
        def launches(count: int = count) -> None:
            for _ in range(count):
                kernel()
        call = graph_replay(launches) if graph else launches
        call()
        points.append((count, wall(call, device, repeats)))
    fixed, per = fit(points)
    return {"fixed_seconds": fixed, "per_kernel_seconds": per, "points": points}


def launch_constants(device: torch.device, repeats: int, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The launch constants (``CONSTANTS``' names: value, source, published value) and the lines they come from."""
    x = torch.zeros(1, device=device)
    lines: dict[str, Any] = {"eager_op": launch_line(lambda: x.add_(1), EAGER_COUNTS, device, repeats)}
    constants: dict[str, Any] = {}
    if device.type == "cuda":
        lines["eager_null_kernel"] = launch_line(lambda: torch.cuda._sleep(0), EAGER_COUNTS, device, repeats)
        lines["graph_null_kernel"] = launch_line(lambda: torch.cuda._sleep(0), GRAPH_COUNTS, device, repeats,
                                                 graph=True)
        eager, graph = lines["eager_null_kernel"], lines["graph_null_kernel"]
        constants["kernel_launch_seconds"] = (eager["per_kernel_seconds"],
                                              f"{source}: null kernels (torch.cuda._sleep(0)) launched one by one, "
                                              f"N = {', '.join(map(str, EAGER_COUNTS))}, the slope of host wall time")
        constants["graph_launch_seconds"] = (graph["fixed_seconds"],
                                             f"{source}: N null kernels captured in one CUDA graph and replayed, "
                                             f"N = {', '.join(map(str, GRAPH_COUNTS))}, the intercept (replay and "
                                             "synchronize)")
        constants["graph_node_seconds"] = (graph["per_kernel_seconds"], constants["graph_launch_seconds"][1]
                                           .replace("the intercept (replay and synchronize)", "the slope"))
    measured = {name: {"value": None, "source": "not measured here: needs the engine's scheduler"
                       if name == "step_schedule_seconds" else "not measured: needs CUDA",
                       "published": constant.value, "published_source": constant.source}
                for name, constant in CONSTANTS.items() if name != "max_capture_batch"}
    for name, (value, text) in constants.items():
        measured[name].update(value=value, source=text)
    return measured, lines


def estimate(config: dict[str, Any], batch: int, context: int, hardware: str) -> dict[str, Any]:
    """nncost's ``--engine vllm`` decode step at ``context``: its seconds, overhead and kernel count, from
    the JSON's ``generation`` section, and the step without the engine's scheduling, eager and graphed."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(config))
        result = nncost.cost(folder, prompt=context, new_tokens=2, batch=batch, hardware=hardware, engine="vllm",
                             dtype="bfloat16")
    document = json.loads(result.to_json())
    generation = document["generation"]
    step = generation["steps"][0]
    assert step["context"] == context and generation["decode_steps"] == 1, generation["steps"]
    overhead = generation["overhead"]
    kernels = overhead["decode_kernels"]
    kernel_time = step["seconds"] - overhead["decode_seconds"]
    return {"step_seconds": step["seconds"], "overhead_seconds": overhead["decode_seconds"],
            "cuda_graphs": overhead["cuda_graphs"], "kernels": kernels, "kernel_seconds": kernel_time,
            "eager_seconds": kernel_time + kernels * KERNEL_LAUNCH_SECONDS.value,
            "graph_seconds": kernel_time + GRAPH_LAUNCH_SECONDS.value + kernels * GRAPH_NODE_SECONDS.value,
            "params": document["totals"]["params"]}


def device_kernels(events: list[Any]) -> list[Any]:
    """The device's events, less the annotations that mirror a ``record_function`` range on the GPU."""
    return [e for e in events if e.device_type != DeviceType.CPU and not e.name.startswith(PREFIX)]


def operator_seconds(events: list[Any], device: torch.device) -> float:
    """The kernels' summed time on CUDA (a range's own device-side annotation is no kernel); on the CPU, the
    outermost operators' (and ranges') CPU time."""
    if device.type == "cuda":
        return kernel_seconds(device_kernels(events))
    return sum(e.cpu_time_total for e in events if e.device_type == DeviceType.CPU and e.cpu_parent is None) / 1e6


def measure(weights: Weights, config: dict[str, Any], batch: int, context: int, device: torch.device,
            repeats: int) -> dict[str, Any]:
    """The paged decode step's kernels, eager step and graph-replayed step (None off CUDA), per step."""
    cache = paged_cache(config, batch, context, device)
    ids = torch.randint(3, config["vocab_size"], (batch, 1), device=device)
    position = torch.full((batch, 1), context, device=device)

    def step(label: bool = False) -> torch.Tensor:
        return decode_step(weights, cache, ids, position, config, label)

    with torch.no_grad():
        for _ in range(3):
            step()
        eager = step_seconds(step, device, repeats)
        events = profiled(lambda: [step(label=True) for _ in range(repeats)], device.type)
        graph = step_seconds(graph_replay(step), device, repeats) if device.type == "cuda" else None
    launched = len(device_kernels(events)) / repeats if device.type == "cuda" else None
    return {"kernel_seconds": operator_seconds(events, device) / repeats,
            "gather_seconds": range_seconds(events, device.type).get("gather", 0.0) / repeats,
            "kernels_launched": launched, "eager_seconds": eager, "graph_seconds": graph}


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.3f} ms" if abs(seconds) >= 1e-3 else f"{seconds * 1e6:.1f} µs"


def ratio(estimated: float | None, measured: float | None) -> str:
    """est./meas.; "–" where either is missing or the measured figure, less the gather, is not positive."""
    return f"{estimated / measured:.2f}" if estimated is not None and measured is not None and measured > 0 else "–"


def constants_table(constants: dict[str, Any], lines: dict[str, Any]) -> str:
    rows = ["| constant | measured | published | meas./published |", "|---|---|---|---|"]
    for name, entry in constants.items():
        value = entry["value"]
        shown = f"{value * 1e6:.2f} µs" if value is not None else "–"
        rows.append(f"| {name} | {shown} | {entry['published'] * 1e6:.2f} µs | {ratio(value, entry['published'])} |")
    op = lines["eager_op"]
    rows.append(f"| (a one-element add_, eager: dispatch and launch) | {op['per_kernel_seconds'] * 1e6:.2f} µs "
                "| – | – |")
    return "\n".join(rows)


STEP_HEADER = ("| batch | context | kernels launched (nncost counts) | kernels measured | of it, the gather | "
               "kernels est. | est./meas. | eager step measured | eager est. | est./meas. | graph step measured | "
               "graph est. | est./meas. | nncost step, scheduling included |\n" + "|---" * 14 + "|")


def step_row(batch: int, context: int, m: dict[str, Any], e: dict[str, Any] | None) -> str:
    """One table row; every measured figure compared is less the gather's kernel time.  ``e`` None: the
    estimate failed, and its columns are empty."""
    gather = m["gather_seconds"]
    e = e or {"kernels": "–", **dict.fromkeys(("kernel_seconds", "eager_seconds", "graph_seconds", "step_seconds"))}

    def less(seconds: float | None) -> float | None:
        return seconds - gather if seconds is not None else None

    launched = f"{m['kernels_launched']:.0f}" if m["kernels_launched"] is not None else "–"
    compared = [f"{ms(e[key])} | {ratio(e[key], less(m[key]))}" if key == "kernel_seconds"
                else f"{ms(m[key])} | {ms(e[key])} | {ratio(e[key], less(m[key]))}"
                for key in ("kernel_seconds", "eager_seconds", "graph_seconds")]
    return (f"| {batch} | {context} | {launched} ({e['kernels']}) | {ms(m['kernel_seconds'])} | {ms(gather)} | "
            f"{' | '.join(compared)} | {ms(e['step_seconds'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for the script's own check")
    parser.add_argument("--hardware", help="catalogue name for the estimate (default: matched from the GPU's name)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048], help="tokens cached a sequence")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same architecture")
    parser.add_argument("--json", type=Path, help="write the measured constants and every row here")
    args = parser.parse_args()
    target = device_and_hardware(parser, args, "bench/engine_cuda.py")
    if target is None:
        return 2
    device, hardware = target
    config = TINY if args.tiny else LLAMA_32_1B
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(f"{versions}, {name}; estimate on {hardware}, --engine vllm, bf16, "
          f"{'tiny' if args.tiny else 'Llama-3.2-1B'} config", flush=True)
    source = f"bench/engine_cuda.py on {name}, {versions}, {dt.date.today().isoformat()}"
    document: dict[str, Any] = {"device": name, "hardware": hardware, "torch": torch.__version__,
                                "cuda": torch.version.cuda, "config": "tiny" if args.tiny else "Llama-3.2-1B",
                                "command": " ".join(sys.argv), "decode_steps": []}

    def save() -> None:
        if args.json is not None:
            args.json.write_text(json.dumps(document, indent=1) + "\n")

    document["constants"], document["launch_lines"] = launch_constants(device, max(args.repeats, 20), source)
    save()
    print(constants_table(document["constants"], document["launch_lines"]), flush=True)
    if device.type != "cuda":
        print("CUDA graphs: skipped (needs CUDA): no graph constants, no graph-replayed step", flush=True)

    weights = build(config, device)
    params = weights.params()
    failures = 0
    if not args.tiny and params != LLAMA_32_1B_PARAMS:
        print(f"the built model has {params:,} parameters, not the published {LLAMA_32_1B_PARAMS:,}", flush=True)
        failures += 1
    print(f"\nA paged decode step ({params:,} parameters; measured figures compared less the gather):", flush=True)
    print(STEP_HEADER, flush=True)
    for batch in args.batches:
        for context in args.contexts:
            try:
                e: dict[str, Any] | None = estimate(config, batch, context, hardware)
            except Exception as error:  # the measured step is still worth its row
                print(f"batch {batch}, context {context}: nncost's estimate failed: {error!r}", flush=True)
                e = None
                failures += 1
            if e is not None and e["params"] != params:
                print(f"nncost counts {e['params']:,} parameters, the step has {params:,}", flush=True)
                failures += 1
            m = measure(weights, config, batch, context, device, args.repeats)
            print(step_row(batch, context, m, e), flush=True)
            document["decode_steps"].append({"batch": batch, "context": context, "measured": m, "estimated": e})
            save()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print("ALL OK" if not failures else f"{failures} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
