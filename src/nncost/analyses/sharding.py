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

from nncost.compat import StrEnum
from nncost.errors import BadRequest


class Sharding(StrEnum):
    """A data-parallel strategy, by the name it is given (the module docstring says what each divides)."""

    NONE = "none"
    DDP = "ddp"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    FSDP = "fsdp"

    @property
    def shards_optimizer(self) -> bool:
        """Whether each GPU holds 1/N of the optimizer state (ZeRO-1 and up, FSDP)."""
        return self in (Sharding.ZERO1, Sharding.ZERO2, Sharding.ZERO3, Sharding.FSDP)

    @property
    def shards_gradients(self) -> bool:
        """Whether each GPU holds 1/N of the gradients (ZeRO-2 and up, FSDP)."""
        return self in (Sharding.ZERO2, Sharding.ZERO3, Sharding.FSDP)

    @property
    def shards_parameters(self) -> bool:
        """Whether each GPU holds 1/N of the parameters, gathering a layer's as it runs (ZeRO-3, FSDP)."""
        return self in (Sharding.ZERO3, Sharding.FSDP)


STRATEGIES = tuple(s.value for s in Sharding)  # plain names: the CLI reads them without torch
SHARDS_OPTIMIZER = tuple(s.value for s in Sharding if s.shards_optimizer)


def sharding_named(name: str) -> Sharding:
    """The :class:`Sharding` of ``name``; a clear error naming the strategies there are."""
    try:
        return Sharding(name)
    except ValueError:
        raise BadRequest(f"unknown sharding {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def per_gpu(breakdown: dict[str, int], *, gpus: int, sharding: str, largest_layer_bytes: int,
            optimizer_temporaries: int = 0, parameter_casts: int = 0,
            largest_layer_cast_bytes: int = 0) -> dict[str, int]:
    """One GPU's share of ``breakdown`` (live bytes by category at one moment of the step), of which
    ``optimizer_temporaries`` are temporaries the optimizer's step made and ``parameter_casts``
    temporaries that are casts of parameters (``largest_layer_cast_bytes``: the largest layer's)."""
    named = sharding_named(sharding)
    if gpus < 1:
        raise BadRequest(f"--gpus must be at least 1, got {gpus}")
    if named is not Sharding.NONE and gpus == 1 and named is not Sharding.DDP:
        return dict(breakdown)
    out = dict(breakdown)
    out["communication"] = 0
    if named is Sharding.DDP:
        out["communication"] = breakdown["gradients"]
    if named.shards_optimizer:
        out["optimizer_state"] = -(-breakdown["optimizer_state"] // gpus)
        out["temporaries"] = breakdown["temporaries"] - optimizer_temporaries + -(-optimizer_temporaries // gpus)
    if named.shards_gradients:
        out["gradients"] = -(-breakdown["gradients"] // gpus)
        out["communication"] = largest_layer_bytes
    if named.shards_parameters:
        out["parameters"] = -(-breakdown["parameters"] // gpus)
        out["communication"] = 2 * largest_layer_bytes
        out["temporaries"] -= parameter_casts - min(parameter_casts, largest_layer_cast_bytes)
    return out
