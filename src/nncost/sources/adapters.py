"""LoRA adapters, put on a model with the real peft library as a user's script would; QLoRA's
4-bit base, put on with the real bitsandbytes.

``LoraConfig(r=R, lora_alpha=A or 2R, target_modules=…, lora_dropout=P)`` and
``get_peft_model``: the base model frozen, each targeted linear layer given two trainable
low-rank matrices (float32: peft's ``autocast_adapter_dtype`` widens 16-bit adapters).  The
training step then runs what autograd really runs: no weight gradients for the frozen base, input
gradients through it, the optimizer's state for the adapters only.  peft is an optional extra
(``pip install 'nncost[peft]'``).

QLoRA (Dettmers et al., 2023) is LoRA over a base whose linear layers are bitsandbytes'
``Linear4bit``: NF4 codes in blocks of 64, each block's absmax quantized again to 8 bits with a
float32 absmax per 256 blocks (double quantization), the products computed in a 16-bit dtype.
:func:`with_nf4_base` replaces the layers as transformers' ``BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=…)`` does when
it loads a model, and quantizes each weight with bitsandbytes' own ``quantize_4bit`` where the
weight is: on meta, bitsandbytes' fake kernels give the codes and every quantization constant
their shapes without data.  peft then puts its own 4-bit LoRA layer on them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nncost.errors import BadRequest
from nncost.quantization import NF4_BLOCKS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nncost.request import Lora

NF4_BLOCK = 64  # bitsandbytes' default 4-bit block, QLoRA's


@dataclass(frozen=True)
class Nf4Base:
    """QLoRA's base: linear weights held as ``dtype`` when quantized (the dtype the model was
    loaded in; None: as they are), NF4 in blocks of ``block``, products computed in ``compute``."""

    compute: torch.dtype
    dtype: torch.dtype | None = None
    block: int = NF4_BLOCK


def with_lora(model: nn.Module, lora: Lora, *, nf4: Nf4Base | None = None) -> nn.Module:
    """``model`` wrapped by peft with ``lora``'s adapters (peft changes the module it is given:
    pass a model of nncost's own building, or a copy); with ``nf4``, over a QLoRA base
    (:func:`with_nf4_base`)."""
    try:
        with _bitsandbytes_quiet():  # peft imports bitsandbytes where it is installed
            from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise BadRequest("LoRA adapters are put on with peft: pip install 'nncost[peft]'") from exc
    if nf4 is not None:
        model = with_nf4_base(model, nf4)
    targets: Any = lora.targets if lora.targets == "all-linear" else list(lora.targets)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.rank,
                        target_modules=targets, lora_dropout=lora.dropout)
    try:
        with _on_device_of(model):
            return get_peft_model(model, config)
    except ValueError as exc:  # peft's word for targets that match no module
        raise BadRequest(f"LoRA: {exc}".splitlines()[0]) from exc


def with_lora_copy(model: nn.Module, lora: Lora, *, nf4: Nf4Base | None = None) -> nn.Module:
    """A copy of the user's ``model`` with adapters; the model itself is left as it was."""
    return with_lora(copy.deepcopy(model), lora, nf4=nf4)


@contextmanager
def _on_device_of(model: nn.Module) -> Iterator[None]:
    """peft makes the adapters on the default device and then moves them to the base layer's: for
    a model on meta they are made there (no memory, no initialisation of real values)."""
    import torch

    on_meta = any(p.device.type == "meta" for p in model.parameters())
    with torch.device("meta") if on_meta else nullcontext():
        yield


@contextmanager
def _bitsandbytes_quiet() -> Iterator[None]:
    """Imports inside the block leave out the warning bitsandbytes' CPU backend logs when the
    optional ``kernels`` package is missing (it then takes its own dequantize-and-multiply path)."""
    log = logging.getLogger("bitsandbytes")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def bitsandbytes() -> ModuleType:
    """bitsandbytes, imported quietly."""
    try:
        with _bitsandbytes_quiet():
            import bitsandbytes
    except ImportError as exc:
        raise BadRequest("QLoRA's 4-bit base is bitsandbytes' Linear4bit: pip install 'nncost[quant]'") from exc
    return bitsandbytes


def with_nf4_base(model: nn.Module, base: Nf4Base) -> nn.Module:
    """``model`` with its linear layers replaced by bitsandbytes' ``Linear4bit`` holding NF4
    weights, double-quantized, as ``base`` says; changed in place.

    The layers replaced are those transformers' bitsandbytes loader replaces: every
    ``nn.Linear`` (exactly that class) and transformers' ``Conv1D`` (its weight transposed to
    ``(out, in)``), except the modules it keeps in their dtype (``get_keys_to_not_convert``):
    the output embeddings, the modules of tied weights and the one holding the last parameter.
    Biases stay as they were.  The model is marked ``is_loaded_in_4bit``, as the loader marks
    it, so that peft picks its 4-bit LoRA layer.
    """
    from torch import nn

    if base.block not in NF4_BLOCKS:
        raise BadRequest(f"bitsandbytes quantizes 4-bit weights in blocks of {', '.join(map(str, NF4_BLOCKS))}, "
                         f"not {base.block}")
    bnb = bitsandbytes()
    _keep_code_tables_real(bnb)
    kept = _kept_in_dtype(model)
    replaced = 0
    for name, module in list(model.named_modules()):
        if name in kept or not _converted(module):
            continue
        model.set_submodule(name, _linear4bit(bnb, module, base))
        replaced += 1
    if not replaced:
        raise BadRequest("QLoRA quantizes linear layers to 4 bits, and this model has none outside its output head")
    model.is_loaded_in_4bit = True  # type: ignore[assignment]
    assert isinstance(model, nn.Module)
    return model


def _keep_code_tables_real(bnb: ModuleType) -> None:
    """bitsandbytes caches the 8-bit code table of double quantization on the device of the first
    tensor it quantizes; one made on meta has no values to copy to a real device later."""
    tables = bnb.functional.name2qmap
    if getattr(tables.get("dynamic"), "is_meta", True):
        tables["dynamic"] = bnb.functional.create_dynamic_map()


def _converted(module: nn.Module) -> bool:
    from torch import nn

    return type(module) is nn.Linear or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))


def _kept_in_dtype(model: nn.Module) -> set[str]:
    """The modules transformers' loader leaves unquantized (``get_keys_to_not_convert``)."""
    names = [name for name, _ in model.named_parameters()]
    kept = {key.rpartition(".")[0] for key in names[-1:]}
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    kept |= {key.rpartition(".")[0] for pair in tied.items() for key in pair}
    outputs: Any = getattr(model, "get_output_embeddings", None)
    output = outputs() if callable(outputs) else None
    kept |= {name for name, module in model.named_modules() if output is not None and module is output}
    return kept


def _linear4bit(bnb: ModuleType, layer: Any, base: Nf4Base) -> nn.Module:
    """``layer``'s ``Linear4bit``: its weight quantized by bitsandbytes where it is."""
    from torch import nn

    weight = layer.weight.detach()
    if type(layer) is not nn.Linear:  # transformers' Conv1D keeps its weight as (in, out)
        weight = weight.t()
    if base.dtype is not None:
        weight = weight.to(base.dtype)
    out_features, in_features = weight.shape
    bias = layer.bias
    new: Any = bnb.nn.Linear4bit(in_features, out_features, bias=bias is not None, compute_dtype=base.compute,
                            compress_statistics=True, quant_type="nf4", device="meta")
    codes = bnb.nn.Params4bit(weight.contiguous(), requires_grad=False, blocksize=base.block,
                              compress_statistics=True, quant_type="nf4", module=new)
    new.weight = codes._quantize(weight.device)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach(), requires_grad=False)
    new.requires_grad_(False)
    new.train(layer.training)
    return new
