"""Mixed precision in the step simulation: PyTorch's own autocast, run on fake tensors.

Autocast acts only on tensors of its device, never on meta tensors, so a mixed step runs on
*fake* tensors of the allocator's device (``cpu``, or ``cuda`` where a GPU is present) under the
real ``torch.autocast``: which op is lowered, every cast and the weight-cast cache are
PyTorch's own.  :class:`DeviceKernels` corrects the two places where a dispatch mode on fake
tensors differs from a real step.  docs/memory.md ("Mixed precision") explains the method, the
GradScaler's no-overflow branch and the CPU stand-in for CUDA autocast on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from nncost.capture.tracer import Tracer
from nncost.hardware.catalogue import Allocator
from nncost.precision import PrecisionSetting
from nncost.simulation.graph import backward_nodes


class FakeTracer(Tracer):
    """The dispatch tracer on fake tensors: ``prim.device`` and other ``prim`` queries, which
    fake tensors route through dispatch, are answered without being recorded."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func.namespace == "prim":
            return func(*args, **(kwargs or {}))
        return super().__torch_dispatch__(func, types, args, kwargs)


# Normalisations whose saved statistics (outputs 1 and 2) are fp32 when a 16-bit input meets fp32
# parameters: the op and the index of its weight argument.
_MIXED_TYPE_STATISTICS = {"native_batch_norm": 1, "_native_batch_norm_legit": 1,
                          "_native_batch_norm_legit_no_training": 1, "native_layer_norm": 2, "native_group_norm": 1}


class DeviceKernels(TorchDispatchMode):
    """Where running under a dispatch mode on fake tensors differs from the device's kernels.

    - BatchNorm, LayerNorm and GroupNorm on a 16-bit input with fp32 weights (what CPU autocast
      gives: they are on none of its lists; CUDA's puts layer and group norm in fp32, not batch
      norm) return their saved mean and inverse std in fp32 on the CPU and on CUDA (the kernels'
      "mixed type" branch, the op-math type); the meta kernels return them in the input's dtype.
    - Autograd adds up the gradients that reach one input from several uses (a residual
      branch, tied weights) in its input buffer.  Without a dispatch mode that sum is in place,
      into one of the two (``can_accumulate_inplace`` in ``input_buffer.cpp``); under any
      dispatch mode ``isTensorSubclassLike`` is true and it allocates a new tensor.  A real
      training step has no dispatch mode, so those sums are made in place here.  They are told
      apart from a backward formula's own additions by node hooks: after a node's apply returns
      (post-hook) and before the next begins (pre-hook), the engine only accumulates.  The real
      engine sums in place only into a buffer that holds the last reference to its tensor; that
      is assumed here (a gradient also kept by a hook, or sent down two edges, would be summed out
      of place in a real step).

    Both checked against real CPU steps (tests/test_precision.py, bench/memory_precision.py).
    """

    def __init__(self) -> None:
        super().__init__()
        self.accumulating = False

    def watch(self, loss: torch.Tensor) -> None:
        """Hook every node of ``loss``'s backward graph."""

        def applied(grad_inputs: Any, grad_outputs: Any) -> None:
            self.accumulating = True

        def starting(grad_outputs: Any) -> None:
            self.accumulating = False

        for node in backward_nodes(loss):
            node.register_prehook(starting)
            node.register_hook(applied)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.accumulating and func is torch.ops.aten.add.Tensor and not kwargs and len(args) == 2:
            for into, other in (args, args[::-1]):
                if (isinstance(into, torch.Tensor) and isinstance(other, torch.Tensor) and into.shape == other.shape
                        and into.dtype == other.dtype and into.is_contiguous()):
                    return into.add_(other)
        out = func(*args, **kwargs)
        param_index = _MIXED_TYPE_STATISTICS.get(func._opname) if func.namespace == "aten" else None
        if param_index is not None:
            x = args[0]
            param = args[param_index] if len(args) > param_index else None
            if func._opname.startswith(("native_batch_norm", "_native_batch_norm_legit")) and len(args) > 3 \
                    and isinstance(args[3], torch.Tensor):
                param = args[3]  # the running mean
            if (isinstance(x, torch.Tensor) and x.dtype in (torch.bfloat16, torch.float16)
                    and isinstance(param, torch.Tensor) and param.dtype == torch.float32
                    and out[1].dtype != torch.float32):
                return (out[0], *(torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in out[1:3]),
                        *out[3:])
        return out


class MixedRun:
    """The fake-tensor world of one mixed-precision step of ``allocator`` semantics (``cpu`` or ``cuda``).

    ``active()`` wraps the whole capture; ``convert`` and ``place`` give parameters and inputs
    their fake counterparts (same shape, strides, dtype; no data); ``autocast()`` wraps the
    forward and the loss; ``scale`` and ``step`` are the GradScaler's part.
    """

    def __init__(self, precision: PrecisionSetting, allocator: str) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        assert precision.autocast_dtype is not None
        self.precision = precision
        self.dtype: torch.dtype = precision.autocast_dtype
        self.allocator = allocator
        # Autograd's engine cannot run a backward over fake CUDA tensors on a machine without a GPU
        # (it asks the CUDA driver about device 0): CPU fake tensors and CPU autocast stand in.
        self.stand_in = cpu_stands_in(allocator)
        self.device = torch.device("cpu" if self.stand_in else allocator)
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)  # plain tensor attributes of the model
        self.scaler = torch.amp.GradScaler("cpu") if precision.grad_scaler else None
        self.scaler_tensors: list[torch.Tensor] = []
        self.kernels = DeviceKernels()

    @contextmanager
    def active(self) -> Iterator[None]:
        with self.mode, self.kernels:
            yield

    def convert(self, t: torch.Tensor) -> torch.Tensor:
        with self.mode:
            return torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device=self.device)

    def place(self, value: Any) -> Any:
        return tree_map(lambda t: self.convert(t) if isinstance(t, torch.Tensor) else t, value)

    def warm_up(self) -> None:
        """The scaler's state as after earlier steps: its scale and growth tracker exist."""
        if self.scaler is not None:
            with self.mode:
                self.scaler.scale(torch.zeros((), device=self.device))
            self.scaler_tensors = [t for t in (self.scaler._scale, self.scaler._growth_tracker) if t is not None]

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype)

    def state_bytes(self, optimizer: torch.optim.Optimizer | None) -> list[int]:
        """Bytes of each optimizer (and scaler) state tensor in device memory, each storage once.

        As ``optimizers.state_bytes``: on CUDA the scalar ``step`` stays on the host (not capturable,
        not fused); with CPU tensors standing in for CUDA ones, it is told apart by its key.
        """
        seen: dict[int, int] = {}
        for state in (optimizer.state.values() if optimizer is not None else []):
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and self.holds(key, value):
                    seen[id(value.untyped_storage())] = value.untyped_storage().nbytes()
        for t in self.scaler_tensors:
            seen[id(t.untyped_storage())] = t.untyped_storage().nbytes()
        return list(seen.values())

    def holds(self, key: str, value: torch.Tensor) -> bool:
        """Whether an optimizer state tensor is in device memory (:meth:`state_bytes`)."""
        return self.allocator == Allocator.CPU or value.device.type == "cuda" or (self.stand_in and key != "step")

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call backward on (GradScaler.scale for fp16-mixed), its graph hooked."""
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        self.kernels.watch(scaled)
        return scaled

    def step(self, optimizer: torch.optim.Optimizer | None) -> None:
        if optimizer is None:
            return
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.unscale_(optimizer)  # _amp_foreach_non_finite_check_and_unscale_ on the grads
        optimizer.step()  # GradScaler.step's branch when no gradient overflowed
        self.scaler.update()


def needs_values(exc: BaseException) -> bool:
    """Whether an exception from a fake-tensor run means the forward needs real values."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    return isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException))


def cpu_stands_in(allocator: str) -> bool:
    """Whether a mixed step of ``allocator`` semantics runs on CPU fake tensors under CPU autocast
    (``cuda`` on a machine without a GPU), whose op lists keep softmax, layer/group norm, exp,
    pow, sum and cumsum in 16 bits where CUDA autocast runs them in fp32."""
    return allocator == Allocator.CUDA and not torch.cuda.is_available()


def mixed_run(precision: PrecisionSetting, allocator: str) -> MixedRun | None:
    return MixedRun(precision, allocator) if precision.mixed else None


def autocast_or_nothing(run: MixedRun | None) -> Any:
    return run.autocast() if run is not None else nullcontext()
