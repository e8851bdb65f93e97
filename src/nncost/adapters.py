"""LoRA adapters, put on a model with the real peft library as a user's script would.

``LoraConfig(r=R, lora_alpha=A or 2R, target_modules=…, lora_dropout=P)`` and
``get_peft_model``: the base model frozen, each targeted linear layer given two trainable
low-rank matrices.  The training step then runs what autograd really runs: no weight gradients
for the frozen base, input gradients through it, the optimizer's state for the adapters only.
peft is an optional extra (``pip install 'nncost[peft]'``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from nncost.errors import BadRequest

if TYPE_CHECKING:
    from torch import nn

    from nncost.request import Lora


def with_lora(model: nn.Module, lora: Lora) -> nn.Module:
    """``model`` wrapped by peft with ``lora``'s adapters (peft changes the module it is given:
    pass a model of nncost's own building, or a copy)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise BadRequest("LoRA adapters are put on with peft: pip install 'nncost[peft]'") from exc
    targets: Any = lora.targets if lora.targets == "all-linear" else list(lora.targets)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.rank,
                        target_modules=targets, lora_dropout=lora.dropout)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft's word for targets that match no module
        raise BadRequest(f"LoRA: {exc}".splitlines()[0]) from exc


def with_lora_copy(model: nn.Module, lora: Lora) -> nn.Module:
    """A copy of the user's ``model`` with adapters; the model itself is left as it was."""
    return with_lora(copy.deepcopy(model), lora)
