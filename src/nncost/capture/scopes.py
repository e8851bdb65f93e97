"""Module scopes: which module call is running, with the shapes it was given and returned.

Hooks are used for attribution and shapes only; the costs come from the dispatch tracer.
Every hook is registered on the user's modules for the duration of one capture and removed
afterwards, also when the forward raises.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nncost.capture.placement import four_bit_weights
from nncost.capture.tracer import shape_of
from nncost.records.trace import LayerCall, Shape

# Module attributes worth showing in ``explain``: what the formulas are made of.
CONFIG_ATTRIBUTES = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "in_features", "out_features", "num_features", "normalized_shape", "num_groups",
    "num_embeddings", "embedding_dim", "input_size", "hidden_size", "num_layers", "bidirectional",
    "embed_dim", "num_heads", "nf", "nx", "eps",
)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """All tensors in a nested structure of tuples, lists, dicts and dataclass-like outputs."""
    if isinstance(value, torch.Tensor):
        return [value]
    found: list[torch.Tensor] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
    return found


def _reference(exc: BaseException) -> Callable[[], BaseException | None]:
    """A weak reference to ``exc`` where its type allows one (any exception class defined in
    Python), else a strong one.

    A model's code, or PyTorch's, may catch an exception that left a module call:
    ``torch.utils.checkpoint`` stops each recomputation by raising from inside the recomputed
    forward and catching it.  The exception's traceback holds the frames it passed through, and
    their locals are the recomputed block's tensors, its input among them: held strongly, they
    would stay alive through the next block's backward and past the end of the backward, where a
    real step has freed them.  The built-in exceptions take no weak reference; one of those caught
    inside a model is held until the next failure."""
    try:
        return weakref.ref(exc)
    except TypeError:
        return lambda: exc


def _shapes(tensors: list[torch.Tensor]) -> list[Shape]:
    return [shape_of(t) for t in tensors]


def module_config(module: nn.Module) -> dict[str, Any]:
    """Plain attributes that the formulas are made of, read without ``nn.Module.__getattr__``."""
    attributes = vars(module)
    config = {k: attributes[k] for k in CONFIG_ATTRIBUTES if k in attributes}
    config["bias"] = module._parameters.get("bias") is not None
    return config


class Scopes:
    """The stack of module calls in progress, and the record of every call made.

    The hot path (``enter``/``leave``) records shapes only; parameter counts and module
    configuration are filled in by ``finish``, once per distinct module.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers: list[LayerCall] = []
        self.stack: list[int] = []
        # (layer index, the exception): the innermost call an exception left, for error messages
        self._failure: tuple[int, Callable[[], BaseException | None]] | None = None
        self._modules: list[nn.Module] = []

    def current(self) -> int:
        return self.stack[-1] if self.stack else -1

    def enter(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        parent = self.stack[-1] if self.stack else None
        index = len(self.layers)
        self.layers.append(
            LayerCall(
                index=index,
                name="",
                type=type(module).__name__,
                depth=len(self.stack),
                parent=parent,
                own_params=0,
                params=0,
                input_shapes=_shapes(tensors_in(args) + tensors_in(kwargs)),
            )
        )
        self._modules.append(module)
        self.stack.append(index)

    def leave(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        """Also called when the forward raises (``always_call``), so the stack stays balanced when a
        caller catches the exception (activation checkpointing stops its recomputation that way)."""
        in_flight = sys.exc_info()[1]
        index = self.stack.pop()
        if in_flight is not None:
            if self._failure is None or self._failure[1]() is not in_flight:
                self._failure = (index, _reference(in_flight))
            return
        layer = self.layers[index]
        outputs = tensors_in(output)
        layer.output_shapes = _shapes(outputs)
        layer.output_bytes = sum(t.numel() * t.element_size() for t in outputs)

    def failed_call(self, exc: BaseException) -> int | None:
        """The innermost module call ``exc`` left, if it left one."""
        if self._failure is None or self._failure[1]() is not exc:
            return None
        return self._failure[0]

    def module_at(self, index: int) -> nn.Module | None:
        """The module of call ``index``, until :meth:`finish` (an error message reads its attributes)."""
        return self._modules[index] if 0 <= index < len(self._modules) else None

    def finish(self) -> None:
        """Names, parameter counts and configuration of every module that was called."""
        names = {id(m): name for name, m in self.model.named_modules()}
        param_ids = _param_ids_under(self.model)
        four_bit = four_bit_weights(self.model)  # a packed 4-bit weight counts the elements it stands for
        sizes = {id(p): four_bit[id(p)][0] if id(p) in four_bit else p.numel() for p in self.model.parameters()}
        for layer, module in zip(self.layers, self._modules, strict=True):
            key = id(module)
            layer.name = names.get(key, type(module).__name__)
            own = {id(p) for p in module._parameters.values() if p is not None}
            layer.own_params = sum(sizes.get(i, 0) for i in own)
            layer.params = sum(sizes.get(i, 0) for i in param_ids.get(key, ()))
            if not module._modules:
                layer.module_config = module_config(module)
        self._modules = []

    @contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        handles = []
        try:
            for module in model.modules():
                if isinstance(module, torch.jit.ScriptModule):
                    continue  # compiled: no hooks; its operators still reach the tracer, in its caller's scope
                handles.append(module.register_forward_pre_hook(self.enter, with_kwargs=True))
                handles.append(module.register_forward_hook(self.leave, with_kwargs=True, always_call=True))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _param_ids_under(model: nn.Module) -> dict[int, set[int]]:
    """For each module, the ids of the distinct parameters in its subtree (children first)."""
    under: dict[int, set[int]] = {}

    def visit(module: nn.Module) -> set[int]:
        key = id(module)
        if key not in under:
            ids = {id(p) for p in module._parameters.values() if p is not None}
            for child in module._modules.values():
                if child is not None:
                    ids |= visit(child)
            under[key] = ids
        return under[key]

    visit(model)
    return under
