"""Cost rules for ATen operators, the level at which nncost's dispatch tracer sees a model.

Importing this package fills :data:`ATEN`; each module registers one kind of operators.
"""

from nncost.rules.registry import Registry

ATEN = Registry()

from nncost.rules.aten import (  # noqa: E402  (the modules register into ATEN on import)
    attention,
    backward,
    bitsandbytes,
    conv,
    elementwise,
    free,
    fused_attention,
    grouped_mm,
    linalg,
    linear,
    movement,
    nested,
    norm,
    optimizer,
    pool,
    rnn,
    small_fused,
    special,
    spectral,
    vision,
)

__all__ = [
    "ATEN", "attention", "backward", "bitsandbytes", "conv", "elementwise", "free", "fused_attention", "grouped_mm",
    "linalg", "linear", "movement", "nested", "norm", "optimizer", "pool", "rnn", "small_fused", "special", "spectral",
    "vision",
]
