"""The values a meta run can know: small tensors computed from known values, kept beside the meta ones.

A meta tensor has a shape and no values, so a model that asks for one (``.item()``, ``bool(t)``,
``.tolist()``, ``.cpu()``) stops a meta run.  Many such questions are about values the run does
know: positions made by ``arange``, masks compared against them, a scalar parameter, the token ids
of the input.  transformers' decoders ask one whenever no cache and no mask is given (a training
step, ``use_cache=False``): whether the position ids are one sequence per row or several packed
ones (``masking_utils.find_packed_sequence_indices``).

:class:`Shadows` is a dispatch mode that keeps, for each meta tensor whose values follow from known
ones, a CPU tensor holding them (its *shadow*):

- **seeds**: the real values of the inputs and of the model's parameters and buffers, where the
  caller had them (:meth:`Shadows.seed`, :meth:`Shadows.seeding`), copied to the CPU the first
  time an operator or a question needs them;
- **factories**: ``arange``, ``zeros``, ``full``... run on the CPU beside the meta call (not
  ``empty``, whose values are undefined, nor a random one);
- **every other operator** whose tensor arguments all have shadows (or are real CPU tensors) runs
  on the shadows too; its outputs' shadows are what it returned.  A view's shadow is a view of its
  base's shadow, so an in-place write through either reaches both.  An operator that writes into
  a shadowed tensor from values not known spoils that shadow's storage, which is then unknown
  everywhere it is seen.

Indexing by a Python list is followed above the dispatcher, where the list is still a list
(:class:`_Indexing`).  Then ``.item()`` of a meta tensor with a shadow answers the shadow's
value, and a copy to the CPU is the shadow's copy (the tracer records the copy, made to meta, as
the operator it is).  Anything else is what it was: a value not known still stops the run, which
goes on for real (capture.run).  Shadows are kept only for tensors of at most :data:`LIMIT`
elements, so the CPU work beside a meta run stays small; a failure of the CPU computation only
leaves its outputs without a shadow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

from nncost.capture.meta_kernels import without_data
from nncost.capture.scopes import tensors_in

LIMIT = 1 << 20  # elements: the largest tensor given a shadow
SEED_LIMIT = 1 << 16  # elements: the largest input, parameter or buffer seeded with its values

aten = torch.ops.aten
_UNDEFINED = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default, aten.new_empty.default,
              aten.new_empty_strided.default, aten.empty_permuted.default}
# operators that write every element of their first argument from the others alone
_OVERWRITE = {aten.fill_.Scalar, aten.fill_.Tensor, aten.zero_.default, aten.copy_.default}
_TO_HOST = {aten._to_copy.default}


def _meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and without_data(t)


def _small(t: torch.Tensor) -> bool:
    return t.numel() <= LIMIT and not t.is_nested and t.layout == torch.strided


class Shadows(TorchDispatchMode):
    """Keeps the shadows of one meta run (see the module's docstring); enter it inside the tracer."""

    def __init__(self) -> None:
        super().__init__()
        self.values: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.seeds: WeakIdKeyDictionary = WeakIdKeyDictionary()  # meta tensor -> the real one it stands for
        self.copies = 0  # seeds copied because their values were asked for
        self.spoiled: set[int] = set()  # shadow storages written from unknown values
        self._kinds: dict[Any, tuple[tuple[int, ...], bool]] = {}

    # -- seeds -------------------------------------------------------------------------------
    def seed(self, meta: Any, real: Any) -> None:
        """Give ``meta`` the values of ``real`` (same shape; ``real`` cast to ``meta``'s dtype).

        Only a reference is kept: the values are copied the first time they are asked for
        (:meth:`known`), so a run that asks nothing copies nothing.  ``real`` is not written while
        the run lasts: the model holds its meta stand-in instead."""
        if (_meta(meta) and isinstance(real, torch.Tensor) and not without_data(real)
                and real.numel() <= SEED_LIMIT and _small(real) and real.shape == meta.shape):
            self.seeds[meta] = real

    def seed_tree(self, metas: Any, reals: Any) -> None:
        """:meth:`seed` for each pair of leaves of two trees of the same structure."""
        meta_leaves, _ = tree_flatten(metas)
        real_leaves, _ = tree_flatten(reals)
        if len(meta_leaves) == len(real_leaves):
            for meta, real in zip(meta_leaves, real_leaves, strict=True):
                self.seed(meta, real)

    def seeding(self, convert: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``convert`` (a parameter or buffer to its meta stand-in), seeding each result with the values it had."""

        def converted(t: torch.Tensor) -> torch.Tensor:
            new = convert(t)
            self.seed(new, t)
            return new

        return converted

    def known(self, t: Any) -> torch.Tensor | None:
        """The values of ``t``: its shadow for a meta tensor (None when not known), itself for a real one."""
        if not isinstance(t, torch.Tensor):
            return None
        if not without_data(t):
            return t if t.device.type == "cpu" else None
        shadow = self.values.get(t)
        if shadow is None:
            real = self.seeds.pop(t, None)
            if real is None:
                return None
            with _disable_current_modes(), torch.no_grad():
                shadow = self.values[t] = real.detach().to(device="cpu", dtype=t.dtype, copy=True)
            self.copies += 1
        if shadow.untyped_storage()._cdata in self.spoiled:
            return None
        return shadow

    # -- the mode ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and _meta(args[0]):
            shadow = self.known(args[0])
            if shadow is not None:
                return shadow.item()
        elif func in _TO_HOST and _meta(args[0]) and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cpu":
            shadow = self.known(args[0])
            if shadow is not None:
                func(*args, **{**kwargs, "device": args[0].device})  # the copy, as the tracer records it
                with _disable_current_modes():
                    return func(shadow, **kwargs)
        out = func(*args, **kwargs)
        try:
            self._follow(func, args, kwargs, out)
        except Exception:  # a CPU kernel that refuses what the meta one took: the outputs stay unknown
            for meta in tree_flatten(out)[0]:
                if _meta(meta):
                    self.values.pop(meta, None)
            self._spoil(self._kind(func)[0], args)
        return out

    def _follow(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        writes, computable = self._kind(func)
        tensors = tensors_in((args, kwargs))
        shadows: list[torch.Tensor] = []
        for i, t in enumerate(tensors):  # most operators stop at their first argument: an activation, a weight
            shadow = self.known(t)
            if shadow is None and i == 0 and func in _OVERWRITE and _small(t):
                with _disable_current_modes():
                    shadow = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
                self.values[t] = shadow
            if shadow is None:
                self._spoil(writes, args)
                return
            shadows.append(shadow)
        outputs = tensors_in(out)
        if not any(_meta(t) for t in outputs):
            return
        if not computable or not all(_small(t) for t in outputs):
            self._spoil(writes, args)
            return
        by_id = {id(t): shadow for t, shadow in zip(tensors, shadows, strict=True)}
        cpu = torch.device("cpu")

        def on_cpu(leaf: Any) -> Any:
            if isinstance(leaf, torch.Tensor):
                return by_id[id(leaf)]
            if isinstance(leaf, torch.device) and leaf.type == "meta":
                return cpu
            return leaf

        shadow_args, shadow_kwargs = tree_map(on_cpu, (args, kwargs))
        if shadow_kwargs.get("device") == "meta":
            shadow_kwargs["device"] = cpu
        with _disable_current_modes():
            result = func(*shadow_args, **shadow_kwargs)
        for meta, shadow in zip(outputs, tensors_in(result), strict=False):
            if _meta(meta) and shadow.shape == meta.shape:
                self.values[meta] = shadow

    def _kind(self, func: Any) -> tuple[tuple[int, ...], bool]:
        """The positions of the arguments ``func`` writes into, and whether its outputs follow from its
        arguments (not a random operator, not one that leaves values undefined); decided once per operator."""
        kind = self._kinds.get(func)
        if kind is None:
            schema = getattr(func, "_schema", None)
            writes = tuple(i for i, argument in enumerate(schema.arguments)
                           if argument.alias_info is not None and argument.alias_info.is_write) if schema else ()
            computable = (schema is not None and func not in _UNDEFINED
                          and torch.Tag.nondeterministic_seeded not in getattr(func, "tags", ()))
            kind = self._kinds[func] = (writes, computable)
        return kind

    def _spoil(self, writes: tuple[int, ...], args: tuple[Any, ...]) -> None:
        """The shadows of the arguments an operator wrote from unknown values are no longer known."""
        for position in writes:
            if position < len(args):
                for t in tree_flatten(args[position])[0]:
                    if not _meta(t):
                        continue
                    self.seeds.pop(t, None)
                    shadow = self.values.get(t)
                    if shadow is not None:
                        self.spoiled.add(shadow.untyped_storage()._cdata)


class _Indexing(TorchFunctionMode):
    """Indexing by a Python list (``ids[:, [-1, 0]]``): PyTorch turns the list into a meta tensor
    below the dispatcher, where :class:`Shadows` cannot see its values; here, above it, the same
    index is applied to the shadow of the indexed tensor."""

    def __init__(self, shadows: Shadows) -> None:
        super().__init__()
        self.shadows = shadows

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.__getitem__ and _meta(out) and self.shadows.known(out) is None:
            base = self.shadows.known(args[0])
            index = self._index(args[1]) if base is not None and out.numel() <= LIMIT else None
            if base is not None and index is not None:
                with torch._C.DisableTorchFunction(), _disable_current_modes():
                    shadow = base[index]
                if shadow.shape == out.shape:
                    self.shadows.values[out] = shadow
        return out

    def _index(self, index: Any) -> Any:
        """``index`` with each tensor in it replaced by its values; None when one is not known."""
        if isinstance(index, torch.Tensor):
            return self.shadows.known(index)
        if isinstance(index, (tuple, list)):
            parts = [self._index(part) for part in index]
            if any(part is None and original is not None for part, original in zip(parts, index, strict=True)):
                return None
            return type(index)(parts)
        return index


@contextmanager
def entered(shadows: Shadows | None) -> Iterator[None]:
    """``shadows`` active for the block (entered inside the tracer), or nothing when there are none."""
    if shadows is None:
        yield
        return
    with shadows, _Indexing(shadows):
        yield
