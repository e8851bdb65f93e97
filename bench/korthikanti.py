"""Korthikanti et al. 2022's transformer layer, and the bytes it keeps for backward, three ways.

    PYTHONPATH=src python bench/korthikanti.py            # the table of docs/training.md
    PYTHONPATH=src python bench/korthikanti.py --llama    # and an HF Llama layer beside the formula

"Reducing Activation Recomputation in Large Transformer Models" (Korthikanti, Casper, Lym,
McAfee, Andersch, Shoeybi, Catanzaro; MLSys 2023, arXiv:2205.05198), section 4 and Table 2,
counts the activation memory of one GPT layer in bytes, with 16-bit activations and 1-byte
dropout masks (s sequence, b micro-batch, h hidden, a heads, t tensor-parallel ranks):

- attention 11·sbh + 5·as²b: the QKV input 2sbh, Q and K 4sbh, the softmax output 2as²b, its
  dropout mask as²b, the dropout output 2as²b and V 2sbh, the output projection's input 2sbh,
  the dropout mask sbh;
- MLP 19·sbh: the first linear's input 2sbh, the GeLU's input 8sbh, the second linear's input
  8sbh, the dropout mask sbh;
- the two layer norms' inputs, 4·sbh.

:class:`KorthikantiLayer` is that layer as Megatron-LM runs it, one tensor-parallel rank's
shard of it, and with its selective or full recomputation.  The bytes it keeps are read from
nncost's training-step simulation (``MemoryReport.saved_for_backward``) and from PyTorch itself
on a real CPU run (``saved_tensors_hooks``, unique storages); :func:`expected` gives each figure
as the paper's formula plus the closed-form differences docs/training.md explains, and
tests/test_korthikanti.py checks all three against each other.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

RECOMPUTE = ("none", "selective", "full")
ACTIVATION_BYTES = 2  # the paper's 16-bit activations
MASK_BYTES = 1  # the paper's dropout masks


@dataclass(frozen=True)
class Shape:
    """One layer's sizes, with the paper's letters, and how it is split over ``t`` ranks."""

    s: int
    b: int
    h: int
    a: int
    t: int = 1
    sequence_parallel: bool = False

    def __post_init__(self) -> None:
        if self.h % self.a or self.a % self.t or (self.sequence_parallel and self.s % self.t):
            raise ValueError(f"{self}: h must split into a heads, a and (with sequence parallelism) s into t ranks")

    @property
    def label(self) -> str:
        split = f"t={self.t}" + (" +SP" if self.sequence_parallel else "")
        return f"s={self.s} b={self.b} h={self.h} a={self.a} {split}"


# -- the layer -----------------------------------------------------------------------------------------
class _GatheredLinear(torch.autograd.Function):
    """A column-parallel linear under sequence parallelism, as Megatron-LM's
    ``LinearWithGradAccumulationAndAsyncCommunication`` runs it: the input is this rank's 1/t of the
    sequence, all-gathered before the product and again in backward, so only the shard is saved.
    On one process the all-gather is a stand-in: the other ranks' shards have the shard's shape."""

    @staticmethod
    def forward(ctx: Any, shard: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ranks: int) -> torch.Tensor:
        ctx.save_for_backward(shard, weight)
        ctx.ranks = ranks
        return F.linear(shard.repeat(ranks, 1, 1), weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        shard, weight = ctx.saved_tensors
        gathered = shard.repeat(ctx.ranks, 1, 1)
        grad_input = (grad @ weight).narrow(0, 0, shard.shape[0])  # the reduce-scatter's stand-in
        grad_weight = grad.flatten(0, 1).t() @ gathered.flatten(0, 1)
        return grad_input, grad_weight, grad.sum((0, 1)), None


class KorthikantiLayer(nn.Module):
    """One pre-LN GPT layer as Megatron-LM runs it, in the paper's layout: input ``[s, b, h]``.

    LayerNorm, the QKV linear, Q·Kᵀ by ``baddbmm`` (scaled inside the product), softmax, dropout,
    attention over values by ``bmm``, the output projection, dropout, the residual; LayerNorm, the
    MLP h → 4h GeLU 4h → h, dropout, the residual.  No attention mask: Megatron's fused softmax
    applies the causal mask inside its kernel and keeps nothing for it.

    With ``tensor_parallel=t`` it is one rank's shard: a/t heads, the QKV and first MLP linears'
    outputs and the projections' inputs split t ways; the layer norms, dropouts and residuals are
    whole on every rank (their tensors are ``[s, b, h]``), or, with ``sequence_parallel``, each
    rank's 1/t of the sequence: the input is then ``[s/t, b, h]``, gathered before the QKV and first
    MLP linears (which save only the shard) and scattered after the output projections.  The
    collectives are single-process stand-ins with the right shapes: the figures are one rank's.

    ``recompute="selective"`` checkpoints the core attention (Q·Kᵀ, softmax, dropout, ·V) and
    ``"full"`` the whole layer, keeping only its input, both with ``torch.utils.checkpoint``.
    """

    def __init__(self, hidden: int, heads: int, *, tensor_parallel: int = 1, sequence_parallel: bool = False,
                 recompute: str = "none", dropout: float = 0.1) -> None:
        super().__init__()
        if recompute not in RECOMPUTE:
            raise ValueError(f"recompute is one of {RECOMPUTE}, got {recompute!r}")
        t = tensor_parallel
        self.heads, self.head_dim, self.ranks = heads // t, hidden // heads, t
        self.sequence_parallel, self.recompute, self.dropout = sequence_parallel and t > 1, recompute, dropout
        self.input_norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden // t)
        self.projection = nn.Linear(hidden // t, hidden)
        self.post_attention_norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 4 * hidden // t)
        self.fc2 = nn.Linear(4 * hidden // t, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recompute == "full":
            out: torch.Tensor = checkpoint(self.layer, x, use_reentrant=False)
            return out
        return self.layer(x)

    def layer(self, x: torch.Tensor) -> torch.Tensor:
        x = x + F.dropout(self.scatter(self.attention(self.input_norm(x))), self.dropout, self.training)
        mlp = self.fc2(F.gelu(self.column_parallel(self.fc1, self.post_attention_norm(x))))
        return x + F.dropout(self.scatter(mlp), self.dropout, self.training)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.column_parallel(self.qkv, x)
        s, b = mixed.shape[:2]
        query, key, value = mixed.view(s, b, self.heads, 3 * self.head_dim).split(self.head_dim, dim=-1)
        if self.recompute == "selective":
            context: torch.Tensor = checkpoint(self.core_attention, query, key, value, use_reentrant=False)
        else:
            context = self.core_attention(query, key, value)
        return self.projection(context)

    def core_attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        s, b, n, d = query.shape
        q, k, v = (x.reshape(s, b * n, d).transpose(0, 1) for x in (query, key, value))
        buffer = torch.empty(b * n, s, s, dtype=q.dtype, device=q.device)  # Megatron's global buffer; beta=0
        scores = torch.baddbmm(buffer, q, k.transpose(1, 2), beta=0.0, alpha=1 / math.sqrt(d))
        probabilities = F.dropout(F.softmax(scores, dim=-1), self.dropout, self.training)
        context = torch.bmm(probabilities, v)
        return context.view(b, n, s, d).permute(2, 0, 1, 3).reshape(s, b, n * d)

    def column_parallel(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self.sequence_parallel:
            out: torch.Tensor = _GatheredLinear.apply(x, linear.weight, linear.bias, self.ranks)
            return out
        return linear(x)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """The row-parallel output's all-reduce (identity here), or its reduce-scatter under sequence
        parallelism (this rank's 1/t of the sequence, a new tensor)."""
        return x.narrow(0, 0, x.shape[0] // self.ranks).clone() if self.sequence_parallel else x


def build(shape: Shape, recompute: str, dtype: torch.dtype = torch.bfloat16) -> tuple[KorthikantiLayer, torch.Tensor]:
    """The layer in training mode and an input for it, on the CPU, in ``dtype``."""
    layer = KorthikantiLayer(shape.h, shape.a, tensor_parallel=shape.t, sequence_parallel=shape.sequence_parallel,
                             recompute=recompute).to(dtype).train()
    rows = shape.s // shape.t if shape.sequence_parallel and shape.t > 1 else shape.s
    return layer, torch.randn(rows, shape.b, shape.h, dtype=dtype, requires_grad=True)


# -- the three figures ---------------------------------------------------------------------------------
def paper(shape: Shape, recompute: str) -> int:
    """Table 2's bytes per layer, on one rank: sbh(34 + 5as/h) without parallelism,
    sbh(10 + 24/t + 5as/(ht)) with tensor parallelism, sbh/t·(34 + 5as/h) with sequence parallelism
    too; selective recomputation drops the 5as/h term, full recomputation keeps the layer's input,
    2sbh (2sbh/t when sequence parallelism has split that input)."""
    s, b, h, a, t = shape.s, shape.b, shape.h, shape.a, shape.t
    sbh, attention = s * b * h, 5 * a * s * s * b // t
    sp = shape.sequence_parallel and t > 1
    if recompute == "full":
        return 2 * sbh // t if sp else 2 * sbh
    linear = 34 * sbh // t if sp else 10 * sbh + 24 * sbh // t
    return linear + (attention if recompute == "none" else 0)


@dataclass(frozen=True)
class Difference:
    """One named, closed-form difference between what a run keeps and the paper's count."""

    name: str
    bytes: int


def differences(shape: Shape, recompute: str, device: str) -> list[Difference]:
    """What PyTorch keeps beyond the paper's count, on ``device`` ("cuda" or "cpu"), in bf16.

    - LayerNorm saves its mean and inverse standard deviation besides its input (the paper counts
      the input only): 2 norms × 2 tensors × one value per token, fp32 on CUDA (as Megatron's fused
      LayerNorm), in the input's dtype on the CPU with 16-bit weights;
    - on the CPU, dropout keeps its mask in the input's dtype (``empty_like(x).bernoulli_()``, 2
      bytes) where CUDA's fused ``native_dropout`` and the paper keep 1 byte: one more byte per
      element of the two hidden dropouts and of the attention-probability dropout.
    Full recomputation keeps the layer's input only: no difference.
    """
    if recompute == "full":
        return []
    s, b, h, a, t = shape.s, shape.b, shape.h, shape.a, shape.t
    rows = s // t if shape.sequence_parallel and t > 1 else s  # the tokens of the replicated region
    statistic = 4 if device == "cuda" else ACTIVATION_BYTES
    found = [Difference("layer-norm mean and rstd", 2 * 2 * rows * b * statistic)]
    if device == "cpu":
        extra = ACTIVATION_BYTES - MASK_BYTES
        found.append(Difference("hidden dropout masks in bf16", 2 * rows * b * h * extra))
        if recompute == "none":
            found.append(Difference("attention dropout mask in bf16", a * s * s * b // t * extra))
    return found


def expected(shape: Shape, recompute: str, device: str) -> int:
    """The paper's figure plus the differences on ``device``: what a run must keep, to the byte."""
    return paper(shape, recompute) + sum(d.bytes for d in differences(shape, recompute, device))


def measured(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in a real forward of ``layer`` on ``x``
    (``torch.autograd.graph.saved_tensors_hooks``), parameters left out; the graph is then
    released by a backward pass."""
    weights = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    out.float().sum().backward()
    return sum(storages.values())


def simulated(layer: nn.Module, x: torch.Tensor, allocator: str) -> int:
    """nncost's figure: what the layer's forward saved for backward in a simulated bf16 training step."""
    import nncost

    report = nncost.memory(layer, inputs=(x.detach(),), precision="bf16", allocator=allocator, optimizer="sgd")
    return report.saved_for_backward[""]


# -- an HF Llama layer beside the formula -----------------------------------------------------------
def llama_layer_bytes(hidden: int, heads: int, kv_heads: int, intermediate: int, seq: int, batch: int,
                      layers: int = 2, allocator: str = "cuda") -> tuple[int, dict[str, int]]:
    """nncost's bytes saved for backward by ``model.layers.1`` of transformers' ``hf:llama`` with
    these sizes, in bf16, and by every module of that layer: a middle layer, whose input the previous
    layer made.  ``allocator="cuda"`` runs SDPA's math kernel (nncost does not model CUDA's fused
    attention yet), ``"cpu"`` the CPU's flash kernel where the CPU would pick it."""
    import nncost
    from nncost.request import Inputs, Request, Step

    overrides = {"hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                 "intermediate_size": intermediate, "num_hidden_layers": layers}
    request = Request("hf:llama", Inputs(batch_size=batch, seq=seq), config_overrides=overrides, precision="bf16",
                      report=False, step=Step(optimizer="sgd", allocator=allocator))
    memory = nncost.run(request).memory
    assert memory is not None
    inside = {k: v for k, v in memory.saved_for_backward.items() if k.startswith("model.layers.1")}
    return memory.saved_for_backward["model.layers.1"], inside


def llama_measured(hidden: int, heads: int, intermediate: int, seq: int, batch: int, *, fused: bool = False) -> int:
    """The same figure from PyTorch on a real CPU forward of a two-layer ``LlamaForCausalLM`` in bf16,
    SDPA on its math kernel (what nncost runs on meta), or with ``fused`` on the CPU's flash kernel: the
    distinct storages first saved while ``model.layers.1`` runs, parameters left out."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=heads,
                         intermediate_size=intermediate, num_hidden_layers=2, vocab_size=128)
    model = LlamaForCausalLM(config).to(torch.bfloat16).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    first: dict[int, tuple[bool, int]] = {}  # storage -> (first saved inside layer 1, its bytes)
    inside = [False]
    layer = model.model.layers[1]
    hooks = [layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)),
             layer.register_forward_hook(lambda *_: inside.__setitem__(0, False))]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            first.setdefault(storage.data_ptr(), (inside[0], storage.nbytes()))
        return t

    backend = SDPBackend.FLASH_ATTENTION if fused else SDPBackend.MATH
    with sdpa_kernel(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.zeros(batch, seq, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    return sum(nbytes for in_layer, nbytes in first.values() if in_layer)


def llama_formula(s: int, b: int, h: int, a: int, intermediate: int, *, fused: bool = False) -> dict[str, int]:
    """What one HF Llama layer (kv heads = heads) keeps in bf16 with SDPA's math kernel, item by item
    (docs/training.md): each RMSNorm its input upcast to fp32, the fp32 reciprocal root mean square and
    its bf16 output before the weight; q_proj the shared QKV input; the math kernel q and k (each scaled
    by the root of the scale), v and the softmax output, all upcast to fp32; o_proj its input; gate_proj
    the shared MLP input, SiLU its input, the product both its factors, down_proj its input. RoPE's cos
    and sin are saved once for the whole model (by the first layer), no dropout runs.  ``fused``: a
    flash kernel keeps q, k, v (after RoPE), its output (o_proj's input, a view of it) and the fp32
    log-sum-exp instead, no s×s term."""
    sbh, sbf = s * b * h, s * b * intermediate
    attention = ({"attention (fused kernel)": 4 * 2 * sbh + 4 * a * s * b} if fused else
                 {"attention (math kernel, fp32)": 3 * 4 * sbh + 4 * a * s * s * b, "o_proj input": 2 * sbh})
    return {
        "RMSNorm ×2": 2 * (4 * sbh + 4 * s * b + 2 * sbh),
        "QKV input": 2 * sbh,
        **attention,
        "SwiGLU MLP": 2 * sbh + 4 * 2 * sbf,
    }


# -- the table -------------------------------------------------------------------------------------------
SHAPES = [
    Shape(64, 2, 128, 8),
    Shape(128, 1, 256, 4),
    Shape(64, 2, 128, 8, t=2),
    Shape(64, 2, 128, 8, t=4),
    Shape(64, 2, 128, 8, t=2, sequence_parallel=True),
    Shape(64, 2, 128, 8, t=4, sequence_parallel=True),
]


def rows(shapes: list[Shape]) -> list[dict[str, Any]]:
    found = []
    for shape in shapes:
        for recompute in RECOMPUTE:
            torch.manual_seed(0)
            layer, x = build(shape, recompute)
            found.append({
                "shape": shape.label, "recompute": recompute, "paper": paper(shape, recompute),
                "cuda": simulated(layer, x, "cuda"), "cpu": simulated(layer, x, "cpu"), "measured": measured(layer, x),
                "cuda_differences": differences(shape, recompute, "cuda"),
                "cpu_differences": differences(shape, recompute, "cpu"),
            })
    return found


def _named(found: list[Difference]) -> str:
    return "; ".join(f"{d.name} {d.bytes:,}" for d in found) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama", action="store_true", help="also an HF Llama layer (meta, nncost only)")
    args = parser.parse_args()
    print("| shape | recompute | paper (B) | nncost cuda (B) | cuda − paper | nncost cpu (B) | measured cpu (B) "
          "| cpu − paper |")
    print("|---|---|--:|--:|---|--:|--:|---|")
    for row in rows(SHAPES):
        print(f"| {row['shape']} | {row['recompute']} | {row['paper']:,} | {row['cuda']:,} | "
              f"{_named(row['cuda_differences'])} | {row['cpu']:,} | {row['measured']:,} | "
              f"{_named(row['cpu_differences'])} |")
    if args.llama:
        s, b, h, a, f = 4096, 1, 4096, 32, 11008
        print(f"\nhf:llama, layer 1 (h={h}, a={a}, intermediate {f}, s={s}, b={b}, bf16); "
              f"sbh(34 + 5as/h) = {s * b * h * (34 + 5 * a * s // h):,} B")
        for allocator, fused in (("cuda", False), ("cpu", True)):
            total, inside = llama_layer_bytes(h, a, a, f, s, b, allocator=allocator)
            items = llama_formula(s, b, h, a, f, fused=fused)
            print(f"allocator {allocator}: nncost {total:,} B; items {sum(items.values()):,} B")
            for name, nbytes in (*items.items(), *inside.items()):
                print(f"  {name}: {nbytes:,}")

if __name__ == "__main__":
    main()
