"""The dispatch tracer: sees every ATen operator a model runs, costs it, and tracks allocations.

It sits below autograd and below every Python-level abstraction (``F.linear``, ``@``,
``einsum``, custom autograd functions, HF's ``Conv1D``), so nothing a model computes escapes
it.  For each operator call it records the rule's cost, the bytes read and written, and the
storages the call created; a weak reference on each new storage records when it dies, which
gives the live-bytes timeline of the pass without keeping any tensor alive.

Each new storage gets an allocation id; ``memory_events`` lists ``(op_index, ±bytes, allocation)``
in the order things happened, and ``allocation_id(tensor)`` names the allocation behind a live
tensor, so that analyses can say what an allocation was (a gradient, a saved activation).
Each call also lists the storages it reads and writes (``OpCall.reads``, ``.writes``: storage
id, bytes): an allocation id, or for a storage made before the capture (a parameter, a cache
filled earlier) a negative id given when it is first seen, so that a capture can name what an
operator read (``Trace.named``: which reads are a weight, which are the KV cache).

On the meta device most of a forward's time goes into PyTorch's Python meta kernels
(BatchNorm's is the slowest).  Meta outputs depend only on input metadata, so the tracer
memoises them, process-wide: the next call of an operator with the same argument metadata
creates its outputs with ``empty_strided`` instead of running the meta kernel again.  A
pointwise in-place operator (``add_``) returns its first argument: once its kernel accepted
some argument metadata, the next call with the same metadata returns that argument at once.

A few meta kernels are stricter than the real ones (``_grouped_mm``'s takes bfloat16 only): on
tensors without data the tracer answers those operators itself (``capture.meta_kernels``), so a
float32 mixture of experts runs on meta.  Given the model's parameters, it also records which
parameter a grouped product reads one slice per routed row of (``OpCall.routed``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _disable_current_modes,
    is_traceable_wrapper_subclass_type,
)
from torch.utils._pytree import tree_flatten, tree_unflatten

from nncost.capture.fast_meta import SHAPE_FUNCTIONS
from nncost.capture.limits import FailedCall
from nncost.capture.meta_kernels import ANSWERED, without_data
from nncost.records.trace import OpCall, Routed
from nncost.rules.kernel_memory import KernelMemory
from nncost.rules.registry import Registry, Rule

FREE, RULE, UNCOUNTED, ALLOC, DECOMPOSE = 0, 1, 2, 3, 4
NO_STORAGE = -(1 << 62)  # Tracer.storage_id of a tensor without a strided storage (sparse)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


@dataclass(slots=True, frozen=True)
class OpInfo:
    """How the tracer treats one operator overload, decided once per overload."""

    name: str
    kind: int
    rule: Rule | None
    fresh_outputs: bool  # the outputs are new storages, not aliases of an input
    # the output function nncost answers the operator with on tensors without data (capture.meta_kernels)
    answer: Callable[..., Any] | None = None
    # a pointwise operator that writes its first argument and returns it (``add_``, ``relu_``):
    # on meta its outcome is that argument, once its kernel accepted the arguments' metadata
    pointwise_in_place: bool = False


def _op_name(func: torch._ops.OpOverload) -> str:
    namespace = func.namespace
    name: str = func._opname
    return name if namespace == "aten" else f"{namespace}::{name}"


def _inplace_view(func: torch._ops.OpOverload) -> bool:
    """``squeeze_``, ``transpose_``, ``t_``: in-place forms of view ops change metadata only.
    PyTorch tags them ``inplace_view``; ``copy_``, whose out-of-place name has view overloads
    (``copy.t`` of a list), moves data and is not one."""
    name: str = func._opname
    if func.namespace != "aten" or not name.endswith("_") or torch.Tag.inplace_view not in func.tags:
        return False
    base = getattr(torch.ops.aten, name[:-1], None)
    return base is not None and any(getattr(base, overload).is_view for overload in base.overloads())


def _pointwise_in_place(func: torch._ops.OpOverload) -> bool:
    schema = func._schema
    if torch.Tag.pointwise not in func.tags or len(schema.returns) != 1 or not schema.arguments:
        return False
    out, first = schema.returns[0].alias_info, schema.arguments[0].alias_info
    return (out is not None and first is not None and out.is_write and first.is_write
            and out.before_set == first.before_set)


def classify(func: torch._ops.OpOverload, registry: Registry) -> OpInfo:
    name = _op_name(func)
    fresh = all(ret.alias_info is None for ret in func._schema.returns)
    if registry.is_allocating(name):
        return OpInfo(name, ALLOC, None, fresh)
    if func.is_view or registry.is_free(name) or _inplace_view(func):
        return OpInfo(name, FREE, None, fresh)
    rule = registry.get(name)
    if rule is None and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"):
        return OpInfo(name, DECOMPOSE, None, fresh)
    return OpInfo(name, RULE if rule else UNCOUNTED, rule, fresh, ANSWERED.get(name), _pointwise_in_place(func))


def shape_of(t: torch.Tensor) -> tuple[Any, ...]:
    """A tensor's shape; a nested tensor's ragged dimensions by name (``3×j1×16``).

    A jagged nested tensor names its ragged dimension itself (a nested int, ``j1``); a strided
    nested tensor has no sizes, only its components', and a dimension that differs between them
    is shown as ``j``.
    """
    if not t.is_nested:
        return tuple(t.shape)
    if type(t) is not torch.Tensor:  # the jagged layout: its ragged dimension is a nested int
        return tuple(d if isinstance(d, int) else str(d) for d in t.shape)
    sizes = _component_sizes(t)
    dims = [set(column) for column in zip(*sizes, strict=True)] if sizes else []
    return (len(sizes), *(column.pop() if len(column) == 1 else "j" for column in dims))


def _component_sizes(t: torch.Tensor) -> list[list[int]]:
    """The sizes of each component of a strided nested tensor (read outside every mode: reading
    them is an operator call, not part of the model)."""
    with _disable_current_modes():
        sizes: list[list[int]] = t._nested_tensor_size().tolist()
    return sizes


def _strided_nested(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_nested and type(value) is torch.Tensor


def _shapes(value: Any) -> Any:
    """The rule's view of an argument: tensors become shapes, containers are walked."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape) if not value.is_nested else shape_of(value)
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value] if isinstance(value, list) else tuple(_shapes(v) for v in value)
    return value


def _positional(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """All arguments in schema order, keyword-only ones included, defaults filled in.

    Rules then see one calling convention whether the caller passed ``scale=`` or not.
    """
    values = list(args)
    for argument in func._schema.arguments[len(args):]:
        if argument.name in kwargs:
            values.append(kwargs[argument.name])
        elif argument.has_default_value():
            values.append(argument.default_value)
        else:
            values.append(None)
    return tuple(values)


def _tensors(value: Any, found: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors(v, found)


def _components(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any]] | None:
    """The arguments of one call per component of its strided nested tensors, as meta tensors;
    None when the nested tensors do not have the same number of components."""
    leaves, spec = tree_flatten((args, kwargs))
    sizes = {i: _component_sizes(leaf) for i, leaf in enumerate(leaves) if _strided_nested(leaf)}
    counts = {len(s) for s in sizes.values()}
    if len(counts) != 1:
        return None
    parts = []
    for component in range(counts.pop()):
        values = []
        for i, leaf in enumerate(leaves):
            if i in sizes:
                leaf = torch.empty((1, *sizes[i][component]), dtype=leaf.dtype, device="meta")
            elif isinstance(leaf, torch.Tensor):
                leaf = torch.empty_strided(leaf.shape, leaf.stride(), dtype=leaf.dtype, device="meta")
            values.append(leaf)
        parts.append(tree_unflatten(values, spec))
    return parts


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _bias_added(product: torch.Tensor) -> torch.Tensor:
    """F.linear's product with its bias added: at::linear adds the bias in place after the matmul
    (``output.add_(bias)``), but meta tensors count as tensor subclasses there and take an
    out-of-place add, so the tracer answers that add with an alias of the product."""
    return product.as_strided(product.shape, product.stride(), product.storage_offset())


def _resized(kernels: KernelMemory, name: str, kernel_args: tuple[Any, ...], out: Any) -> Any:
    """``out`` at the size the simulated hardware's kernel gives it, where the meta kernel's
    differs (``KernelMemory.resizers``)."""
    resize = kernels.resizers.get(name)
    return resize(kernel_args, out) if resize is not None else out


def _kernel_bytes(kernels: KernelMemory, name: str, kernel_args: tuple[Any, ...],
                  outputs: list[torch.Tensor]) -> int:
    """The bytes the simulated hardware's kernel holds inside the call (``KernelMemory.rules``)."""
    kernel_rule = kernels.rules.get(name)
    return kernel_rule(kernel_args, outputs) if kernel_rule is not None else 0


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _signature(value: Any) -> Any:
    """A hashable key for an argument's metadata, or raise TypeError when it has none."""
    if isinstance(value, torch.Tensor):
        return (value.shape, value.stride(), value.dtype, value.device, value.requires_grad)
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return tuple((k, _signature(v)) for k, v in value.items())
    hash(value)
    return value


class Tracer(TorchDispatchMode):
    """Records one OpCall per non-view operator into ``ops``.

    ``current_layer`` is read at each call to attribute it; the module scopes update it.
    ``memoise`` must only be set for meta execution, where outputs carry no data.
    ``kernels``, the kernel memory rules of the hardware simulated, adds to each call the bytes its
    kernel would hold inside the call (``OpCall.kernel_bytes``) and fixes outputs whose size the
    meta kernel gets wrong.
    ``params`` maps the storage of each parameter (``untyped_storage()._cdata``) to its name and
    size; with it, a call whose rule routes rows through
    slices of a parameter records which (``OpCall.routed``).
    ``record_calls=False`` keeps only the storages the calls create (``memory_events``, every
    event at index 0), not the calls: what ``capture.run._allocations`` needs, at a third of
    the cost.
    """

    def __init__(self, registry: Registry, current_layer: Callable[[], int], *, memoise: bool,
                 kernels: KernelMemory | None = None, params: dict[int, tuple[str, int]] | None = None,
                 record_calls: bool = True) -> None:
        super().__init__()
        self.registry = registry
        self.current_layer = current_layer
        self.memoise = memoise
        self.record_calls = record_calls
        self.kernels = kernels
        self.params = params or {}
        self.inside_linear = False  # set by capture.paths.KernelPaths around each F.linear call
        self.ops: list[OpCall] = []
        self.memory_events: list[tuple[int, int, int]] = []
        self.allocation_bytes: list[int] = []  # by allocation id
        self.failed_op: tuple[str, list[Any]] | None = None
        # the operator call that raised, with its exception: what capture.limits checks for real
        self.failed_call: FailedCall | None = None
        self._info: dict[Any, OpInfo] = {}
        self._live: dict[int, tuple[weakref.ref[Any], int]] = {}
        self._outside: dict[int, tuple[weakref.ref[Any], int]] = {}  # storages made before the capture
        self._outside_count = 0
        self.closed = False

    def close(self) -> None:
        """Stop recording: storages that die after the capture are not part of its timeline."""
        self.closed = True

    # -- the hot path -------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if types and any(t not in _PLAIN_TYPES and is_traceable_wrapper_subclass_type(t) for t in types):
            # A wrapper subclass (a jagged nested tensor, DTensor) runs the operator as operators on the
            # dense tensors it holds; those come back through this mode and are counted there.
            return NotImplemented
        info = self._info.get(func)
        if info is None:
            info = self._info[func] = classify(func, self.registry)
        if info.kind == FREE:
            return self._run(func, info, args, kwargs)
        if info.kind == ALLOC:
            return self._allocation(func, info, args, kwargs)
        inputs: list[torch.Tensor] = []
        _tensors(args, inputs)
        _tensors(kwargs, inputs)
        if any(t.is_nested for t in inputs):
            return self._nested_call(func, info, args, kwargs, inputs)
        if info.kind == DECOMPOSE:
            decomposed = self._decomposed(func, args, kwargs)
            if decomposed is not NotImplemented:
                return decomposed
            info = self._info[func] = OpInfo(info.name, UNCOUNTED, None, info.fresh_outputs)

        fresh = info.fresh_outputs
        if self.inside_linear and self._linear_bias(func, args, kwargs):
            out, fresh = _bias_added(args[0]), False
        else:
            out = self._run(func, info, args, kwargs)
        kernels = self.kernels
        kernel_args: tuple[Any, ...] = ()
        if kernels is not None and (info.name in kernels.rules or info.name in kernels.resizers):
            kernel_args = _positional(func, args, kwargs)
            out = _resized(kernels, info.name, kernel_args, out)
        outputs: list[torch.Tensor] = []
        _tensors(out, outputs)
        index = len(self.ops)
        if fresh:
            self._track(outputs, index)
        if not self.record_calls:
            return out
        out_shapes = tuple(shape_of(t) for t in outputs)
        kernel_bytes = 0
        if kernel_args and kernels is not None:
            kernel_bytes = _kernel_bytes(kernels, info.name, kernel_args, outputs)

        rule_args: tuple[Any, ...] = ()
        unit = "uncounted"
        routed = None
        if info.rule is not None:
            rule_args = _shapes(_positional(func, args, kwargs) if kwargs else args)
            macs, flops = info.rule.fn(*rule_args, out=out_shapes)
            unit = info.rule.unit_of(*rule_args, out=out_shapes)
            if info.rule.routed is not None and self.params:
                routed = self._routed(info.rule.routed(*rule_args), _positional(func, args, kwargs))
        else:
            macs = flops = 0
        reads = self._storages(inputs)
        writes = self._storages(outputs)
        self.ops.append(
            OpCall(op=info.name, layer=self.current_layer(), macs=macs, flops=flops,
                   read_bytes=sum(n for _, n in reads), write_bytes=sum(n for _, n in writes),
                   counted=info.kind == RULE, unit=unit, args=rule_args, out_shapes=out_shapes,
                   kernel_bytes=kernel_bytes, dtype=_dtype_name(inputs[0].dtype) if inputs else "",
                   reads=reads, writes=writes, routed=routed)
        )
        return out

    def _allocation(self, func: Any, info: OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An allocating operator (``empty``, ``zeros``): no cost and no record, but its storage is
        live memory."""
        out = self._run(func, info, args, kwargs)
        self._track([out], len(self.ops))
        return out

    def _decomposed(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A composite operator without a rule, counted as the operators it is made of, as it is
        everywhere else; NotImplemented when it does not decompose.  One reaches a dispatch mode
        whole only where autograd's keys are off (inside a wrapper subclass's dispatch, in
        inference mode)."""
        with self:
            return func.decompose(*args, **kwargs)

    def _routed(self, routing: tuple[int, int, int] | None, args: tuple[Any, ...]) -> Routed | None:
        """The parameter a routing call reads one slice per row of, if its sliced operand is one."""
        if routing is None:
            return None
        position, rows, slices = routing
        operand = args[position] if position < len(args) else None
        if not isinstance(operand, torch.Tensor):
            return None
        param = self.params.get(operand.untyped_storage()._cdata)
        if param is None:
            return None
        return Routed(param=param[0], numel=param[1], rows=rows, slices=slices)

    def _nested_call(self, func: Any, info: OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any],
                     inputs: list[torch.Tensor]) -> Any:
        """An operator on strided nested tensors costs what it costs on each component: the call is
        repeated on meta tensors shaped like each component (with a leading dimension of one, so
        that dimension arguments mean the same), under a tracer of its own whose calls are kept.
        An operator that has no meaning on one component (a conversion to a padded tensor) is
        recorded once, by its rule if that takes the nested shapes, else as uncounted."""
        out = self._run(func, info, args, kwargs)
        index = len(self.ops)
        outputs: list[torch.Tensor] = []
        _tensors(out, outputs)
        if info.fresh_outputs:
            self._track(outputs, index)
        parts = _components(args, kwargs)
        per_component: list[OpCall] | None = None
        if parts is not None:
            sub = Tracer(self.registry, self.current_layer, memoise=True)
            try:
                with sub:
                    for part_args, part_kwargs in parts:
                        func(*part_args, **part_kwargs)
                per_component = sub.ops
            except Exception:  # an operator that means something else on one component (to_padded_tensor)
                per_component = None
            finally:
                sub.close()
        if per_component is not None:
            self.ops.extend(per_component)
            return out
        out_shapes = tuple(shape_of(t) for t in outputs)
        macs = flops = 0
        counted = False
        if info.rule is not None:
            try:
                macs, flops = info.rule.fn(*_shapes(args), out=out_shapes)
                counted = True
            except Exception:  # a rule that needs every size, given a ragged one
                macs = flops = 0
        self.ops.append(OpCall(op=info.name, layer=self.current_layer(), macs=macs, flops=flops,
                               read_bytes=sum(_nbytes(t) for t in inputs),
                               write_bytes=sum(_nbytes(t) for t in outputs), counted=counted,
                               out_shapes=out_shapes))
        return out

    @staticmethod
    def _linear_bias(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Is this F.linear's bias add, after the matmul of a batched input?"""
        if func is not torch.ops.aten.add.Tensor or kwargs or len(args) != 2:
            return False
        x, bias = args
        return (isinstance(x, torch.Tensor) and isinstance(bias, torch.Tensor) and bias.dim() == 1
                and x.dim() >= 2 and bias.shape[0] == x.shape[-1] and x.dtype == bias.dtype)

    def _run(self, func: Any, info: OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # nncost's own output function, on tensors without data, for a meta kernel stricter than the real ones
        answer = info.answer if info.answer is not None and args and without_data(args[0]) else None
        key = None
        if answer is None and self.memoise and info.pointwise_in_place and args and without_data(args[0]):
            try:
                key = (func, _signature(args), _signature(kwargs))
            except TypeError:  # an unhashable argument: run the kernel
                key = None
            if key is not None and _META_OUTPUTS.get(key) is _IN_PLACE:
                return args[0]
        # free ops may alias without saying so
        elif answer is None and self.memoise and info.fresh_outputs and info.kind != FREE:
            shape_fn = SHAPE_FUNCTIONS.get(info.name)
            if shape_fn is not None and not kwargs:
                fast = shape_fn(*args)
                if fast is not None:
                    return fast
            try:
                key = (func, _signature(args), _signature(kwargs))
            except TypeError:  # an unhashable argument: run the kernel
                key = None
            if key is not None:
                cached = _META_OUTPUTS.get(key)
                if cached is not None:
                    return _materialise(cached)
        try:
            out = answer(*_positional(func, args, kwargs)) if answer is not None else func(*args, **kwargs)
        except Exception as exc:
            self.failed_op = (_op_name(func), [_shapes(a) for a in args])
            self.failed_call = (func, args, kwargs, exc)
            raise
        if key is not None:
            template = _IN_PLACE if info.pointwise_in_place and out is args[0] else _template(out)
            if template is not None:
                if len(_META_OUTPUTS) >= META_CACHE_LIMIT:
                    _META_OUTPUTS.clear()
                _META_OUTPUTS[key] = template
        return out

    # -- the live-bytes timeline ----------------------------------------------------------
    def _track(self, outputs: list[torch.Tensor], index: int) -> None:
        for t in outputs:
            storage = t.untyped_storage()
            key = id(storage)
            if self.allocation_id(t) is not None:
                continue
            nbytes = storage.nbytes()
            allocation = len(self.allocation_bytes)
            self.allocation_bytes.append(nbytes)
            self.memory_events.append((index, nbytes, allocation))
            self._live[key] = (weakref.ref(storage, self._freed(key, nbytes, allocation)), allocation)

    def _storages(self, tensors: list[torch.Tensor]) -> tuple[tuple[int, int], ...]:
        return tuple((self.storage_id(t), _nbytes(t)) for t in tensors)

    def storage_id(self, t: torch.Tensor) -> int:
        """The storage behind ``t``: its allocation id when an operator under this tracer made it;
        else a negative id given when it is first seen (a parameter, a cache filled before the
        capture), the same for every tensor on that storage while it lives."""
        if t.layout != torch.strided:
            return NO_STORAGE
        storage = t.untyped_storage()
        key = id(storage)
        for known in (self._live, self._outside):
            entry = known.get(key)
            if entry is not None and entry[0]() is storage:
                return entry[1]
        self._outside_count += 1
        self._outside[key] = (weakref.ref(storage), -self._outside_count)
        return -self._outside_count

    def watch(self, t: torch.Tensor) -> int:
        """``storage_id(t)``; and when ``t``'s storage was made before the capture (a cache filled
        earlier) and dies during it, the free is a memory event, so that the timeline's live
        bytes are relative to what was alive when the capture began."""
        sid = self.storage_id(t)
        if sid < 0 and sid != NO_STORAGE:
            storage = t.untyped_storage()
            key = id(storage)
            self._outside[key] = (weakref.ref(storage, self._freed(key, storage.nbytes(), sid)), sid)
        return sid

    def allocation_id(self, t: torch.Tensor) -> int | None:
        """The allocation that holds ``t``'s storage, if an operator under this tracer made it."""
        storage = t.untyped_storage()
        entry = self._live.get(id(storage))
        if entry is None or entry[0]() is not storage:
            return None
        return entry[1]

    def _freed(self, key: int, nbytes: int, allocation: int) -> Callable[[Any], None]:
        def on_free(_: Any) -> None:
            if self.closed:
                return
            self.memory_events.append((len(self.ops), -nbytes, allocation))
            (self._live if allocation >= 0 else self._outside).pop(key, None)

        return on_free


# -- memoised meta outputs ------------------------------------------------------------------
# Shared by every capture in the process: a meta kernel's outputs are a pure function of its
# arguments' metadata, so what one capture learnt serves the next (a --fit search, a notebook
# profiling variants of one model).  Bounded: cleared when it reaches the limit.
META_CACHE_LIMIT = 1 << 16
_META_OUTPUTS: dict[Any, Any] = {}
_IN_PLACE = object()  # the outcome of a pointwise in-place operator: its first argument
_Meta = tuple[torch.Size, tuple[int, ...], torch.dtype]


def _template(out: Any) -> Any:
    """Metadata from which equal meta outputs can be recreated, or None if out is unusual."""
    if isinstance(out, torch.Tensor):
        if out.device.type != "meta" or type(out) is not torch.Tensor or out.requires_grad:
            return None
        return (out.shape, out.stride(), out.dtype)
    if isinstance(out, (tuple, list)):
        parts = [_template(o) for o in out]
        if any(p is None for p in parts):
            return None
        return (type(out), tuple(parts))
    return None


def _materialise(template: Any) -> Any:
    if isinstance(template[0], torch.Size):
        shape, stride, dtype = template
        return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    kind, parts = template
    return kind(_materialise(p) for p in parts)
