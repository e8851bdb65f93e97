"""Per-GPU memory of data-parallel training, derived from the simulated step's categories.

The simulated step is one GPU's step at the given (per-GPU) batch.  Sharding then divides the
model states as the ZeRO paper (Rajbhandari et al., 2020) and FSDP do, over N GPUs:

* ``ddp``: every GPU holds everything; DDP also keeps its gradient buckets, a flat copy of the
  gradients (``gradient_as_bucket_view=False``, the default), so gradients count twice.
* ``zero1``: optimizer state / N.
* ``zero2``: optimizer state and gradients / N (a reduce-scatter bucket the size of the largest
  gradient is assumed on top).
* ``zero3`` and ``fsdp`` (full shard): parameters, gradients and optimizer state / N, plus the
  largest layer's parameters gathered in full while it runs (and its gradients before the
  reduce-scatter): ``2 × largest layer``.  The casts of parameters that only autocast's cache
  holds through the forward (bf16-/fp16-mixed: the 16-bit copies of the fp32 weights, which a
  checkpointed forward does not save) are made from the gathered unit and go with it: at most the
  largest layer's casts are live.  Casts a matrix product saves for backward stay, as autograd
  keeps them, and so do a checkpointed block's recomputed casts, which live until its backward ends.

Activations, temporaries and inputs are per GPU and are not divided, except the optimizer's own
temporaries under ZeRO and FSDP: each GPU's optimizer updates its shard only.  The per-GPU peak is
the highest point of the step after sharding, which need not be the one-GPU peak's moment
(``nncost.analyses.memory``).
"""

from __future__ import annotations

from nncost.errors import BadRequest

STRATEGIES = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")
SHARDS_OPTIMIZER = ("zero1", "zero2", "zero3", "fsdp")  # the strategies that divide the optimizer state


def per_gpu(breakdown: dict[str, int], *, gpus: int, strategy: str, largest_layer_bytes: int,
            optimizer_temporaries: int = 0, parameter_casts: int = 0,
            largest_layer_cast_bytes: int = 0) -> dict[str, int]:
    """One GPU's share of ``breakdown`` (live bytes by category at one moment of the step), of which
    ``optimizer_temporaries`` are temporaries the optimizer's step made and ``parameter_casts``
    temporaries that are casts of parameters (``largest_layer_cast_bytes``: the largest layer's)."""
    if strategy not in STRATEGIES:
        raise BadRequest(f"unknown sharding {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if gpus < 1:
        raise BadRequest(f"--gpus must be at least 1, got {gpus}")
    if strategy != "none" and gpus == 1 and strategy != "ddp":
        return dict(breakdown)
    out = dict(breakdown)
    out["communication"] = 0
    if strategy == "ddp":
        out["communication"] = breakdown["gradients"]
    if strategy in SHARDS_OPTIMIZER:
        out["optimizer_state"] = -(-breakdown["optimizer_state"] // gpus)
        out["temporaries"] = breakdown["temporaries"] - optimizer_temporaries + -(-optimizer_temporaries // gpus)
    if strategy in ("zero2", "zero3", "fsdp"):
        out["gradients"] = -(-breakdown["gradients"] // gpus)
        out["communication"] = largest_layer_bytes
    if strategy in ("zero3", "fsdp"):
        out["parameters"] = -(-breakdown["parameters"] // gpus)
        out["communication"] = 2 * largest_layer_bytes
        out["temporaries"] -= parameter_casts - min(parameter_casts, largest_layer_cast_bytes)
    return out
