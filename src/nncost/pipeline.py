"""The one place that runs things: a :class:`~nncost.request.Request` in, a :class:`Result` out.

:func:`run` takes the request through its stages, each a function below:

1. **source**: the model (an ``nn.Module``, or a MODEL string resolved by :mod:`nncost.sources.models`;
   an ONNX file is read, not built) and its example inputs;
2. **forward**: the capture of one forward pass (:mod:`nncost.capture`) and its report
   (:mod:`nncost.analyses.build`);
3. **time**: roofline estimates on the request's hardware (the ``cpu`` calibrated by
   :mod:`nncost.hardware.calibration`), and the measured latency of real passes;
4. **generation** (instead of 2–4 when asked): the prefill and decode steps of ``generate``
   (:mod:`nncost.capture.generation`, :mod:`nncost.analyses.generation`), and the most
   sequences that fit;
5. **step**: the memory simulation of a training step or inference pass
   (:mod:`nncost.simulation.step`, :mod:`nncost.analyses.memory`), the largest batch that fits,
   and one real step when asked; or, for a step spread over GPUs (tensor, pipeline, data
   parallelism, micro-batches), one traced step at the micro-batch and each stage's memory and
   the step's time derived from it, or a plan's search of layouts (:mod:`nncost.analyses.parallel`);
6. the training step's time on the roofline, a whole run of such steps, and the result.

The Python API (:mod:`nncost.api`) and the command line (:mod:`nncost.cli`) only build
requests and call :func:`run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import nn

from nncost.analyses.build import build_report, peak_live_bytes
from nncost.analyses.fit import largest_batch, parse_bytes
from nncost.analyses.generation import Segment, decode_report, linear_segments, no_decode, step_samples
from nncost.analyses.memory import analyse_step
from nncost.analyses.parallel import Cluster, Layouts, profile_step
from nncost.analyses.parallel import plan as search_layouts
from nncost.analyses.quantize import quantized
from nncost.analyses.reads import bytes_read
from nncost.analyses.roofline import estimate, make_roofline, run_dtype, with_training_step
from nncost.analyses.split import check_tensor_parallel, link_seconds, split_layers
from nncost.analyses.tensor_parallel import communication_bytes, shard_segments, shard_trace
from nncost.analyses.timing import with_times
from nncost.analyses.training_run import ACHIEVABLE_MFU, layout_run, training_run
from nncost.capture.generation import session
from nncost.capture.inputs import batch_of, rebatch, sizes_to_inputs
from nncost.capture.placement import model_device, quantized_weights
from nncost.capture.run import capture
from nncost.errors import BadRequest, CalibrationError, NeedsWeights, NncostWarning, NotEnoughMemory
from nncost.hardware import calibration
from nncost.hardware.catalogue import Device, catalogue_device, match_cuda_name
from nncost.hardware.machine import available_memory_bytes
from nncost.precision import resolve_precision
from nncost.quantization import WeightFormat, weight_format
from nncost.records.generation import GenerationReport
from nncost.records.memory import MemoryReport
from nncost.records.parallel import Layout, ParallelStep, Plan
from nncost.records.report import Report
from nncost.records.result import Result
from nncost.records.roofline import Roofline
from nncost.records.trace import TorchFlags, Trace
from nncost.records.training_run import TrainingRun
from nncost.render.units import nbytes
from nncost.request import DEFAULT_SEQ, FIT_DEVICE, WARMUP, NamedSize, Request
from nncost.simulation.autocast import cpu_stands_in
from nncost.simulation.step import capture_step
from nncost.sources.adapters import NF4_BLOCK, Nf4Base, with_lora, with_lora_copy
from nncost.sources.configs import ContextLimit, context_limit
from nncost.sources.models import ModelSpec, is_onnx, resolve


class Progress(Protocol):
    """Where messages about slow stages go: the CLI shows spinners and bars, the API stays quiet."""

    def __call__(self, message: str) -> None: ...

    def step(self, message: str, slow: bool = True) -> AbstractContextManager[Any]: ...

    def bar(self, message: str, total: int | None, *, counts: str) -> AbstractContextManager[Callable[[], None]]:
        """A bar of ``total`` steps (None: no known end) counting ``passes`` (timed forwards) or
        ``simulations`` (a batch search); the yielded callable advances it by one."""


class Quiet:
    """Progress that says nothing."""

    def __call__(self, message: str) -> None:
        pass

    @contextmanager
    def step(self, message: str, slow: bool = True) -> Iterator[None]:
        yield

    @contextmanager
    def bar(self, message: str, total: int | None, *, counts: str) -> Iterator[Callable[[], None]]:
        yield lambda: None


def run(request: Request, progress: Progress | None = None) -> Result:
    """Run ``request``: its report and its memory step, where asked."""
    say = progress or Quiet()
    if _is_onnx(request.model):
        return Result(_onnx(request, say), None)
    source = _source(request, say)
    request = source.request  # a config model's own dtype resolved
    if request.generation is not None:
        generation = _generation(request, source, say)
        prefill = replace(generation.prefill, depth=request.depth, dtype=source.dtype_name,
                          dtype_source=source.dtype_source)
        generation = replace(generation, prefill=prefill)
        return Result(prefill, None, generation)
    report = _forward(request, source, say) if request.report else None
    if report is not None and source.dtype_source is not None:
        report = replace(report, dtype=source.dtype_name, dtype_source=source.dtype_source)
    memory = parallel = plan = None
    if request.step is not None and request.step.parallel:
        parallel, plan = _layout(request, source, say)
    elif request.step is not None:
        memory = _step(request, source, say)
    if report is not None and memory is not None:
        report = with_training_step(report, memory)
    run = _training_run(request, report, memory, parallel)
    if report is not None and request.depth is not None:
        report = replace(report, depth=request.depth)
    return Result(report, memory, training_run=run, parallel=parallel, plan=plan)


def _training_run(request: Request, report: Report | None, memory: MemoryReport | None,
                  parallel: ParallelStep | None = None) -> TrainingRun | None:
    """The request's whole run: its simulated step, or its layout's, repeated over the run's tokens."""
    if request.run is None:
        return None
    wanted = request.run
    if parallel is not None:
        return layout_run(parallel, tokens=wanted.tokens, price_per_gpu_hour=wanted.price_per_gpu_hour,
                          given_mfu=wanted.mfu is not None)
    if report is None or report.roofline is None or memory is None:
        return None
    assert request.inputs.seq is not None  # the request checks it
    return training_run(memory, report.roofline, tokens=wanted.tokens, seq=request.inputs.seq,
                        price_per_gpu_hour=wanted.price_per_gpu_hour, mfu=wanted.mfu)


# -- 1. source ---------------------------------------------------------------------------
class Source:
    """The model of a request, built where it must be, with its example inputs.

    A module is used as it is.  A named model is built on meta; :meth:`on` builds it again with
    random weights on a real device when a stage needs values (a data-dependent forward,
    measured time, a real step).
    """

    def __init__(self, request: Request, spec: ModelSpec | None, module: nn.Module | None, say: Progress,
                 dtype_source: str | None = None, built_in: torch.dtype | None = None) -> None:
        self.request, self.spec, self.say = request, spec, say
        self.dtype_source = dtype_source
        self.built_in = built_in  # a model with adapters is built in its config's dtype before peft
        self.label = request.name or (spec.label if spec is not None else type(module).__name__)
        if module is not None and request.lora is not None:
            module = with_lora_copy(module, request.lora, nf4=self.nf4_base)  # peft changes the module it wraps
        self._built: dict[str, nn.Module] = {} if module is None else {"given": module}

    @property
    def dtype_name(self) -> str:
        """The dtype the floating parameters run in (float32 where nothing says otherwise)."""
        dtype = resolve_precision(self.request.precision, self.request.dtype).param_dtype or self.built_in
        return str(dtype or torch.float32).removeprefix("torch.")

    @property
    def nf4_base(self) -> Nf4Base | None:
        """QLoRA's base (:attr:`Request.qlora`): the linear weights quantized from the dtype the model
        is loaded in, the products computed in the run's 16-bit dtype (bf16 where it has none, as
        QLoRA computes)."""
        request = self.request
        if not request.qlora:
            return None
        setting = resolve_precision(request.precision, request.dtype)
        loaded = setting.param_dtype or self.built_in
        sixteen = [d for d in (loaded, setting.autocast_dtype) if d in (torch.bfloat16, torch.float16)]
        return Nf4Base(sixteen[0] if sixteen else torch.bfloat16, loaded, request.group_size or NF4_BLOCK)

    @property
    def given(self) -> nn.Module | None:
        return self._built.get("given")

    def on(self, device: str) -> nn.Module:
        """The model with its weights on ``device`` (the user's own module wherever it is)."""
        if self.given is not None:
            return self.given
        assert self.spec is not None
        if device not in self._built:
            if device != "meta":
                meta = self._built["meta"] if "meta" in self._built else self.spec.build("meta")
                _check_memory(f"running {self.label} on {device}", device, *_run_need(meta, _run_dtype(self.request)))
            with self.say.step(f"building {self.label} on {device}", slow=device != "meta"), \
                    _real_run(f"building {self.label} on {device}", device != "meta"):
                model = self.spec.build(device)
                if self.request.lora is not None:
                    model = with_lora(model.to(self.built_in) if self.built_in else model, self.request.lora,
                                      nf4=self.nf4_base)
                self._built = {device: model}  # one copy of the weights at a time
        return self._built[device]

    def built_on(self) -> str:
        """Where the named model was last built (meta when not yet)."""
        return next(iter(self._built), "meta")

    def inputs(self, device: str, batch_size: int | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword example inputs, at the request's batch or ``batch_size``.

        Sizes become meta tensors and token ids are made on ``device``; example inputs are taken
        as they are, or rebatched when another batch is asked for (a named model's examples at
        the request's batch, anything at ``batch_size``).
        """
        request, spec = self.request, self.spec
        given = request.inputs
        batch = batch_size or given.batch_size
        if spec is not None and spec.token_input:
            ids = torch.zeros((batch, given.seq or DEFAULT_SEQ), dtype=torch.long, device=device)
            return (), ({"input_ids": ids, "decoder_input_ids": ids} if spec.encoder_decoder else {"input_ids": ids})
        sizes = given.sizes or (spec.default_inputs if spec is not None and spec.example_inputs is None else None)
        if sizes:
            dtype = resolve_precision(request.precision, request.dtype).param_dtype
            return sizes_to_inputs(list(sizes), batch, dtype), dict(given.kwargs or {})
        if given.args is not None or given.kwargs:
            args, kwargs = _as_args(given.args), dict(given.kwargs or {})
            wanted = batch_size
        elif spec is not None and spec.example_inputs is not None:
            args, kwargs = spec.example_inputs
            wanted = batch_size or (given.batch_size if given.batch_size != 1 else None)
        else:
            raise BadRequest(f"{self.label} needs inputs: give input_size=(C, H, W) (--input CxHxW), inputs=... "
                             "or kwargs=...")
        if wanted is not None:
            args, kwargs = rebatch(args, wanted), rebatch(kwargs, wanted)
        return args, kwargs


RUN_MARGIN = 0.2  # a real run's activations and runtime, over its weights


def _run_need(model: nn.Module, dtype: torch.dtype | None) -> tuple[int, str]:
    """The least memory a real run of ``model`` holds, and what it is made of: its parameters and
    buffers at their dtypes, a copy of the floating ones in ``dtype`` where that differs (the run
    converts a copy), and ``RUN_MARGIN`` more for activations and the runtime."""
    tensors = [*model.parameters(), *model.buffers()]
    weights = _weights_bytes(model)
    copies = sum(t.numel() * dtype.itemsize for t in tensors
                 if dtype is not None and t.is_floating_point() and t.dtype != dtype)
    dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))
    copy = f", a {str(dtype).removeprefix('torch.')} copy of {nbytes(copies)}" if copies and dtype is not None else ""
    return (int((weights + copies) * (1 + RUN_MARGIN)),
            f"its weights: {nbytes(weights)} in {dtypes}{copy}; and {RUN_MARGIN:.0%} more for activations and the "
            "runtime")


def _weights_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _check_memory(what: str, device: str, needed: int, made_of: str) -> None:
    """Refuse ``what`` up front when it needs more memory than ``device`` has available now (the
    machine's for the CPU, :func:`~nncost.hardware.machine.available_memory_bytes`; the GPU's free
    memory for CUDA): a run past it is killed, or takes the machine down."""
    if device.startswith("cuda"):
        available: int | None = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        available = available_memory_bytes()
    if available is not None and needed > available:
        where = "this GPU has" if device.startswith("cuda") else "this machine has"
        raise NotEnoughMemory(f"{what} needs about {nbytes(needed)} of memory ({made_of}) and {where} "
                              f"{nbytes(available)} available; cost it on meta instead (without --device, "
                              "--measure-time and --measure)")


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is an allocation that failed: Python's,
    CUDA's, or torch's CPU allocator's (a RuntimeError that says it could not allocate)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
                isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def _real_run(what: str, real: bool = True) -> Iterator[None]:
    """An allocation that fails inside (a ``real`` run) becomes one sentence naming ``what``."""
    try:
        yield
    except Exception as exc:
        if not real or not _out_of_memory(exc):
            raise
        available = available_memory_bytes()
        left = f" ({nbytes(available)} available now)" if available is not None else ""
        raise NotEnoughMemory(f"{what} ran out of memory{left}: cost it on meta instead (without --device, "
                              "--measure-time and --measure), or with a smaller batch") from exc


def _as_args(inputs: Any) -> tuple[Any, ...]:
    if inputs is None:
        return ()
    if isinstance(inputs, tuple):
        return inputs
    if isinstance(inputs, list) and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    return (inputs,)


def _source(request: Request, say: Progress) -> Source:
    if any(isinstance(size, NamedSize) for size in request.inputs.sizes or ()):
        raise BadRequest("named inputs (--input NAME=SIZE) are for .onnx models; give sizes as --input CxHxW")
    if request.device.startswith("cuda") and not torch.cuda.is_available():
        raise BadRequest("device 'cuda' was asked for, but no CUDA device is available")
    if isinstance(request.model, nn.Module):
        if request.config_overrides or request.trust_remote_code:
            raise BadRequest("config overrides and trust_remote_code are for transformers configs named by a string "
                             "(hf:NAME, hf:ORG/NAME, a config directory); a module is profiled as it is")
        if request.inputs.seq is not None:
            raise BadRequest("seq is for token models named hf:NAME; give a module its inputs")
        if request.generation is None and not (request.inputs.sizes or request.inputs.args is not None
                                                  or request.inputs.kwargs):
            raise BadRequest("no inputs: give input_size=(C, H, W), inputs=... or kwargs=...")
        _check_context(request, type(request.model).__name__, context_limit(getattr(request.model, "config", None)),
                       token_input=False)
        return Source(request, None, request.model, say)
    if not isinstance(request.model, str):
        raise BadRequest(f"a model is a torch.nn.Module or a model name, got {type(request.model).__name__}")
    spec = resolve(request.model, config_overrides=request.config_overrides,
                   trust_remote_code=request.trust_remote_code, trust_pickle=request.trust_pickle)
    inputs = request.inputs
    if spec.token_input and inputs.sizes:
        raise BadRequest(f"{spec.label} takes token ids: give --seq N, not --input")
    if inputs.seq is not None and not spec.token_input:
        raise BadRequest(f"--seq is for token models (hf:NAME); {spec.label} takes --input CxHxW")
    if not spec.token_input and not (inputs.sizes or spec.default_inputs or spec.example_inputs
                                     or inputs.args is not None):
        raise BadRequest(f"{spec.label} needs an input size: --input CxHxW")
    _check_context(request, spec.label, spec.context, token_input=spec.token_input)
    request, dtype_source = _model_dtype(request, spec)
    built_in = None
    if request.lora is not None and dtype_source == "config":
        # Loaded in its config's dtype, then given peft's float32 adapters (autocast_adapter_dtype):
        # the captures keep each parameter's dtype rather than casting all of them to the config's.
        built_in, request = request.dtype, replace(request, dtype=None)
    return Source(request, spec, None, say, dtype_source, built_in)


def _check_context(request: Request, label: str, limit: ContextLimit | None, *, token_input: bool) -> None:
    """Refuse a sequence longer than the model's context: a generation's prompt and new tokens
    together, or the ``seq`` of a token model's forward or step (its default included), unless
    the request ignores the limit."""
    if limit is None or request.ignore_context_limit:
        return
    generation = request.generation
    if generation is not None:
        tokens = generation.prompt_tokens + generation.new_tokens
        asked = (f"a prompt of {generation.prompt_tokens:,} tokens and {generation.new_tokens:,} new ones "
                 f"({tokens:,} in all)")
        fix = "a shorter --prompt or fewer --new-tokens"
    elif token_input:
        tokens = request.inputs.seq or DEFAULT_SEQ
        asked = f"--seq {tokens:,}" if request.inputs.seq is not None else f"the default --seq of {tokens:,}"
        fix = f"--seq {limit.tokens:,} or less"
    else:
        return
    if tokens > limit.tokens:
        raise BadRequest(f"{label} reads at most {limit.tokens:,} tokens ({limit.source}), and {asked} is past "
                         f"that: give {fix}, or --ignore-context-limit (ignore_context_limit=True) to cost it "
                         "anyway, as a rope-scaling what-if")


def _model_dtype(request: Request, spec: ModelSpec) -> tuple[Request, str | None]:
    """The request with the dtype a transformers model runs in, and where that dtype came from.

    ``request``: a dtype or a 16-bit precision was asked for (mixed precisions keep the fp32
    master weights the model is built with, whatever the config says); ``config``: the config's own dtype, as
    ``from_pretrained(dtype="auto")`` loads the weights; ``default``: the config names none, so
    float32.  Other models run as built (None).
    """
    if spec.family != "hf":
        return request, None
    own = spec.config_dtype
    if request.dtype is not None or request.precision != "fp32":
        return request, "request"
    if own is None:
        return request, "default"
    return replace(request, dtype=own), "config"


# -- 2. forward --------------------------------------------------------------------------
def _forward(request: Request, source: Source, say: Progress) -> Report:
    """The report of one forward pass, with its time estimates and measurements."""
    report = _capture_forward(request, source, say)
    measure_on = _measure_device(request) if request.measure_time else None
    hardware = request.hardware
    if measure_on is not None and hardware is None:
        hardware = _local_hardware(measure_on)
    if hardware is not None:
        dtype = _run_dtype(request)
        model = source.given if source.given is not None else source.on(source.built_on())
        if dtype is None and quantized_weights(model):  # the dtype a quantized weight computes in, not its codes'
            dtype = getattr(torch, _weights_dtype(model, None))
        report = _estimated(report, request, hardware, dtype, say)
    if measure_on is not None:
        report = _measured(request, source, report, measure_on, say)
    return report


def _estimated(report: Report, request: Request, hardware: str, dtype: torch.dtype | None, say: Progress) -> Report:
    """``report`` with its roofline on ``hardware``, or, where that device's time cannot be had,
    with why (``time_unavailable``)."""
    device, unavailable = _time_device(hardware, say)
    if device is None:
        return replace(report, time_unavailable=unavailable)
    return with_roofline(report, device, request.flags, dtype=dtype, precision=request.precision,
                         efficiency=request.efficiency)


def _time_device(hardware: str, say: Progress) -> tuple[Device | None, str | None]:
    """The device of the time estimates, or None and why: a ``cpu`` that cannot be calibrated
    plausibly costs the estimates, said here, never the rest of the run."""
    try:
        return calibration.device(hardware, say=say), None
    except CalibrationError as exc:
        say(f"no time estimates: {exc}")
        return None, str(exc)


def _capture_forward(request: Request, source: Source, say: Progress) -> Report:
    dtype = _run_dtype(request)
    if source.given is not None:
        return _captured(request, source, source.given, str(model_device(source.given)), dtype, say)
    build_on = request.device if request.device != "meta" else ("cpu" if request.measure_time else "meta")
    try:
        return _captured(request, source, source.on(build_on), build_on, dtype, say)
    except NeedsWeights as exc:
        if build_on != "meta":
            raise
        say(f"{exc}".split(". ")[0] + "; building the model with weights on CPU")
        return _captured(request, source, source.on("cpu"), "cpu", dtype, say)


def _captured(request: Request, source: Source, model: nn.Module, inputs_on: str, dtype: torch.dtype | None,
              say: Progress) -> Report:
    """The report of the forward at the request's batch, with the request's weight format, and the
    storages it creates at the next batch, which give the bytes a sample adds
    (``feature_map_bytes``, docs/conventions.md), unless a layout search is asked for."""
    weights = _weights(request, model)
    run_on = request.device
    # a forward a layout search shows beside its plan is not run at other batches (its feature maps
    # are then the sum over the batch); other batches' inputs carry no values: where they are
    # needed, the sum over the batch is shown too
    planning = request.step is not None and request.step.plan
    with say.step(f"profiling {source.label}", slow=run_on != "meta"), \
            _real_run(f"profiling {source.label} on {run_on}", run_on != "meta"):
        args, kwargs = source.inputs(inputs_on)
        trace = capture(model, args, kwargs, device=run_on, dtype=dtype, model_name=source.label, progress=say,
                        other_batches=None if planning else lambda batch: source.inputs(inputs_on, batch))
    return build_report(bytes_read(quantized(trace, weights)))


def _weights(request: Request, model: nn.Module) -> WeightFormat | None:
    """The weight format asked for: a what-if on a model whose weights are not quantized already
    (QLoRA's base is built quantized: no what-if on top)."""
    if request.qlora:
        return None
    weights = weight_format(request.weights, request.group_size)
    held = quantized_weights(model) if weights is not None else []
    if held:
        raise BadRequest(f"the model's weights are quantized already ({', '.join(held)}): it is profiled as stored; "
                         "drop --weights")
    return weights


def _run_dtype(request: Request) -> torch.dtype | None:
    return resolve_precision(request.precision, request.dtype).param_dtype


def with_roofline(report: Report, device: Device, flags: TorchFlags, *, dtype: torch.dtype | None,
                  precision: str, efficiency: float) -> Report:
    """``report`` with every layer's roofline time on ``device``."""
    roofline = make_roofline(device, flags, dtype=run_dtype(report, dtype), precision=precision,
                             efficiency=efficiency)
    return estimate(report, roofline)


def _measure_device(request: Request) -> str:
    """Where measured time runs: CUDA for a CUDA device or run, else the CPU."""
    if request.device.startswith("cuda"):
        return "cuda"
    if request.hardware is not None and request.hardware != "cpu":
        if catalogue_device(request.hardware).kind == "cuda":
            if not torch.cuda.is_available():
                raise BadRequest(f"measuring time on {request.hardware} needs that CUDA device, and none is "
                                 "available")
            return "cuda"
    return "cpu"


def _local_hardware(measure_on: str) -> str:
    """The catalogue name of the device time is measured on."""
    if measure_on == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise BadRequest("measuring time on CUDA was asked for, but no CUDA device is available")
    gpu = torch.cuda.get_device_name()
    found = match_cuda_name(gpu)
    if found is None:
        raise BadRequest(f"{gpu} is not in the hardware catalogue; give --hardware NAME for its roofs")
    return found


def _measured(request: Request, source: Source, report: Report, device: str, say: Progress) -> Report:
    from nncost.capture.timing import measure_times

    model = source.on("cpu") if source.given is None else source.given
    args, kwargs = source.inputs(str(model_device(model)))
    precision = resolve_precision(request.precision, request.dtype)
    passes = WARMUP + request.repeats
    with say.bar(f"timing {source.label} ({passes} passes)", passes, counts="passes") as advance, \
            _real_run(f"timing {source.label}"):
        times = measure_times(model, args, kwargs, device=device, dtype=precision.param_dtype,
                              repeats=request.repeats, warmup=WARMUP, autocast=precision.autocast_dtype,
                              on_pass=advance)
    return with_times(report, times)


# -- 4. step -----------------------------------------------------------------------------
def _step(request: Request, source: Source, say: Progress) -> MemoryReport:
    """The memory of one step: simulated, the largest batch that fits, one real step."""
    step = request.step
    assert step is not None
    model = source.given if source.given is not None else source.on(source.built_on())
    label = source.label

    def simulate(batch: int | None) -> MemoryReport:
        args, kwargs = source.inputs(str(model_device(model)), batch)
        trace = capture_step(model, args, kwargs, mode=step.mode, optimizer=step.optimizer, device=step.allocator,
                             dtype=request.dtype, checkpointing=step.checkpointing, precision=request.precision)
        return analyse_step(trace, model=label, allocator=step.allocator, optimizer=step.optimizer,
                            batch_size=batch_of((args, kwargs)) or batch or request.inputs.batch_size,
                            precision=request.precision, gpus=step.gpus, sharding=step.sharding)

    _warn_cpu_autocast(request)
    with say.step(f"simulating the memory of {label}", slow=False):
        report = simulate(None)
    budget = _budget(step.fit, request.hardware)
    if budget is not None:
        max_batch = None
        if step.fit is not None:
            with say.bar(f"searching the largest batch of {label}", None, counts="simulations") as advance:
                def peak_at(batch: int) -> int:
                    advance()
                    return simulate(batch).peak_per_gpu_bytes

                max_batch = largest_batch(peak_at, budget)
        report = replace(report, budget_bytes=budget, max_batch=max_batch)
    if step.measure:
        report = replace(report, measured_peak_bytes=_measure_step(request, source, report, say))
    return report


def _warn_cpu_autocast(request: Request) -> None:
    """A mixed-precision step of a GPU traced on a machine without one runs CPU autocast's op
    lists: say so once, naming the device the user asked about."""
    step = request.step
    assert step is not None
    if not resolve_precision(request.precision, request.dtype).mixed or not cpu_stands_in(step.allocator):
        return
    device = request.hardware if request.hardware not in (None, "cpu") else "a CUDA GPU"
    warnings.warn(f"no GPU here: the {request.precision} step of {device} is traced with CPU autocast's op lists, "
                  "which keep softmax, layer/group norm, exp, pow, sum and cumsum in 16 bits where CUDA autocast "
                  "runs them in fp32 (docs/memory.md, 'Mixed precision')", NncostWarning, stacklevel=3)


# -- 5b. a layout over many GPUs -------------------------------------------------------------
def _layout(request: Request, source: Source, say: Progress) -> tuple[ParallelStep | None, Plan | None]:
    """The step spread over GPUs: one traced step at the micro-batch, cut into pieces, then the
    layout asked for, or a plan's search and its best layout (:mod:`nncost.analyses.parallel`)."""
    step = request.step
    assert step is not None
    model = source.given if source.given is not None else source.on(source.built_on())
    args, kwargs = source.inputs(str(model_device(model)))
    batch = batch_of((args, kwargs)) or request.inputs.batch_size
    _warn_cpu_autocast(request)
    with say.step(f"tracing one training step of {source.label} at the micro-batch ({batch})", slow=False):
        trace = capture_step(model, args, kwargs, mode="train", optimizer=step.optimizer, device=step.allocator,
                             dtype=request.dtype, checkpointing=False, precision=request.precision)
    heads, kv_heads = _attention_heads(model)
    seq = (request.inputs.seq or DEFAULT_SEQ) if source.spec is not None and source.spec.token_input else None
    profile = profile_step(trace, model=source.label, allocator=step.allocator, optimizer=step.optimizer,
                           batch_size=batch, seq=seq, precision=request.precision, heads=heads, kv_heads=kv_heads)
    cluster = _cluster(request, model)
    budget = _budget(None, request.hardware)
    if step.plan:
        assert cluster is not None and budget is not None  # the request asks for a catalogue device
        with say.bar(f"searching layouts of {step.gpus} × {cluster.hardware}", None, counts="layouts") as advance:
            found = search_layouts(profile, cluster, gpus=step.gpus, budget=budget, global_batch=step.global_batch,
                                   sequence_parallel=step.sequence_parallel, advance=advance)
        return (found.best[0] if found.best else None), found
    layout = Layout(gpus=step.gpus, tensor_parallel=step.tensor_parallel, pipeline_parallel=step.pipeline_parallel,
                    data_parallel=step.gpus // (step.tensor_parallel * step.pipeline_parallel),
                    micro_batches=step.micro_batches, micro_batch_size=batch,
                    sequence_parallel=step.sequence_parallel, checkpointing=bool(step.checkpointing),
                    sharding=step.sharding)
    return Layouts(profile).step(layout, cluster, budget), None


def _cluster(request: Request, model: nn.Module) -> Cluster | None:
    """The request's device as a layout's time sees it: its dense matrix peak at the run's
    precision, the training run's MFU, memory bandwidth, and its links; None without one."""
    if request.hardware is None or request.hardware == "cpu":
        return None
    device = catalogue_device(request.hardware)
    roofline = make_roofline(device, request.flags, dtype=_weights_dtype(model, _run_dtype(request)),
                             precision=request.precision)
    mfu = request.run.mfu if request.run is not None and request.run.mfu is not None else ACHIEVABLE_MFU
    return Cluster(hardware=device.name, peak_flops=roofline.family_peak_flops.get("matmul", roofline.peak_flops),
                   efficiency=mfu, bandwidth=device.bandwidth, interconnect=device.interconnect,
                   interconnect_bandwidth=device.interconnect_bandwidth, gpus_per_node=device.gpus_per_node,
                   network=device.network, network_bandwidth=device.network_bandwidth)


def _attention_heads(model: nn.Module) -> tuple[int | None, int | None]:
    """The attention heads and key/value heads a transformers config names (None where it names none)."""
    config: Any = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return (int(heads) if heads is not None else None), (int(kv_heads) if kv_heads is not None else None)


def _budget(fit: int | str | None, hardware: str | None) -> int | None:
    """The memory budget of a step or of generation: ``fit`` as given (bytes, ``"24GiB"``), else
    the memory of ``hardware`` (:data:`FIT_DEVICE`, or no ``fit``: is the peak inside it?)."""
    if fit is not None and fit != FIT_DEVICE:
        return parse_bytes(fit) if isinstance(fit, str) else int(fit)
    if hardware is None:
        if fit == FIT_DEVICE:
            raise BadRequest("--fit without a budget takes the memory of --hardware NAME; give one, or a budget "
                             "such as --fit 24GiB")
        return None
    size = calibration.memory_bytes() if hardware == "cpu" else catalogue_device(hardware).memory_bytes
    if size is None and fit == FIT_DEVICE:
        raise BadRequest(f"the memory size of {hardware} is not known; give a budget such as --fit 24GiB")
    return size


def _measure_step(request: Request, source: Source, report: MemoryReport, say: Progress) -> int:
    from nncost.simulation.measure import measure_cpu_peak, measure_cuda_peak

    step = request.step
    assert step is not None
    on_cuda = step.allocator == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise BadRequest("measuring a step with CUDA allocator semantics runs a real step on a GPU, and none is "
                         "available here; the cpu allocator measures on the CPU")
    if not on_cuda:  # weights already on the CPU hold memory that is no longer available
        built = source.given if source.given is not None else source.on(source.built_on())
        held = _weights_bytes(built) if model_device(built).type == "cpu" else 0
        _check_memory(f"one real step of {source.label}", "cpu", report.peak_bytes - held,
                      "the simulated step's peak, less the weights built already")
    model = source.given if source.given is not None else source.on("cpu")
    if model_device(model).type == "meta":
        raise BadRequest(f"{source.label} has meta weights: a real step needs a model with weights")
    args, kwargs = source.inputs("cpu")
    measure = measure_cuda_peak if on_cuda else measure_cpu_peak
    with say.step(f"running one real step on {'CUDA' if on_cuda else 'the CPU'}"), \
            _real_run(f"one real step of {source.label}"):
        return measure(model, args, kwargs, mode=report.mode, optimizer=step.optimizer, precision=request.precision,
                       checkpointing=step.checkpointing)


# -- generation ----------------------------------------------------------------------------
def _generation(request: Request, source: Source, say: Progress) -> GenerationReport:
    """Prefill and decode as ``model.generate`` runs them, on meta; the most sequences that fit."""
    wanted = request.generation
    assert wanted is not None
    if source.spec is not None and not source.spec.token_input:
        raise BadRequest(f"{source.label} takes no token ids: generation is for language models (hf:NAME)")
    model = source.given if source.given is not None else source.on("meta")
    dtype = _run_dtype(request)
    roofline = None
    kernels = "cuda"  # whose attention kernels run: the roofline device's, else a GPU's, where LLMs are served
    unavailable = None
    if request.hardware is not None:
        device, unavailable = _time_device(request.hardware, say)
        if device is not None:
            roofline = make_roofline(device, request.flags, dtype=_weights_dtype(model, dtype),
                                     precision=request.precision, efficiency=request.efficiency)
        kernels = device.kind if device is not None else "cpu"  # only the calibrated cpu can be missing
    batch = request.inputs.batch_size
    parallel = _parallel(model, wanted.tensor_parallel, request.hardware)
    quantize = _Quantize(_weights(request, model), request.kv_cache_dtype)
    with say.step(f"tracing the generation of {source.label}", slow=False):
        report = _generate(model, wanted.prompt_tokens, wanted.new_tokens, batch, dtype=dtype, roofline=roofline,
                           name=source.label, parallel=parallel, quantize=quantize, kernels=kernels)
    if unavailable is not None:
        report = replace(report, prefill=replace(report.prefill, time_unavailable=unavailable))
    budget = _budget(wanted.fit, request.hardware)
    if budget is None:
        return report
    max_batch = None
    if wanted.fit is not None:
        with say.bar(f"searching the most sequences {source.label} serves", None, counts="simulations") as advance:
            def peak_at(sequences: int) -> int:
                advance()
                if sequences == batch:
                    return report.peak_bytes
                return _generate(model, wanted.prompt_tokens, wanted.new_tokens, sequences, dtype=dtype,
                                 roofline=None, name=source.label, peak_only=True, parallel=parallel,
                                 quantize=quantize, kernels=kernels).peak_bytes

            max_batch = largest_batch(peak_at, budget)
    return replace(report, budget_bytes=budget, max_batch=max_batch)


@dataclass(frozen=True)
class _Quantize:
    """The what-ifs applied to every traced call of a generation."""

    weights: WeightFormat | None = None
    kv_cache_dtype: str | None = None

    def __call__(self, trace: Trace) -> Trace:
        return quantized(trace, self.weights, self.kv_cache_dtype)


@dataclass(frozen=True)
class _Traced:
    """What a generation's traces hold: the prefill, the decode steps as linear segments, the
    last step (and, for the peak, the cache the step before it left), the cache's sizes."""

    prefill: Trace
    segments: list[Segment]
    last_step: Trace | None
    cache_after_prefill: int
    cache_before_last: int
    cache_after_last: int
    per_token: int
    cache: str
    caches: dict[int, int]  # the bytes the cache holds after the step at each traced context


def _generate(model: nn.Module, prompt: int, new: int, batch: int, *, dtype: torch.dtype | None,
              roofline: Roofline | None, name: str, peak_only: bool = False, parallel: _Parallel | None = None,
              quantize: _Quantize | None = None, kernels: str = "meta") -> GenerationReport:
    """The generation's report: traced (see :mod:`nncost.analyses.generation`) with ``kernels``'
    attention kernels and ``quantize``'s weight format and cache dtype applied to each call, then,
    with ``parallel``, one GPU's share of it; with ``peak_only``, only what the peak needs."""
    quantize = quantize or _Quantize()
    traced = _trace_generation(model, prompt, new, batch, dtype=dtype, name=name, peak_only=peak_only,
                               quantize=quantize, kernels=kernels)
    weights = sum(traced.prefill.params.param_bytes_by_dtype.values()) + traced.prefill.params.buffer_bytes
    kv_share = 1
    communication = (0, 0)
    if parallel is not None:
        report = build_report(traced.prefill)
        split = split_layers(report)
        n = parallel.size
        step_bytes = communication_bytes(build_report(traced.last_step), split, n) if traced.last_step else 0
        communication = (communication_bytes(report, split, n), step_bytes * (new - 1))
        weights = parallel.weights_bytes(model, report, split, traced.prefill.params.buffer_bytes,
                                         sum(traced.prefill.params.param_bytes_by_dtype.values()))
        kv_share = min(n, parallel.kv_heads)
        traced = replace(traced, prefill=shard_trace(traced.prefill, split, n),
                         segments=shard_segments(traced.segments, split, n),
                         last_step=shard_trace(traced.last_step, split, n) if traced.last_step else None)
    return replace(_generation_report(traced, prompt, new, batch, weights, roofline, kv_share, communication, parallel),
                   weight_format=traced.prefill.weight_format, kv_cache_dtype=quantize.kv_cache_dtype)


def _trace_generation(model: nn.Module, prompt: int, new: int, batch: int, *, dtype: torch.dtype | None, name: str,
                      peak_only: bool, quantize: _Quantize, kernels: str) -> _Traced:
    """Trace the prefill, and enough decode steps to sum all of them."""
    last = prompt + new - 2  # the context of the last decode step
    with session(model, batch, dtype=dtype, model_name=name, max_cache_length=prompt + new - 1,
                 kv_cache_dtype=quantize.kv_cache_dtype, kernels=kernels) as run:
        prefill_trace, cache_after_prefill = run.prefill(prompt)
        prefill_trace = bytes_read(quantize(prefill_trace))
        caches: dict[int, int] = {prompt - 1: cache_after_prefill}
        traced: dict[int, Trace] = {}

        def step_at(context: int) -> Trace:
            if context not in traced:
                step, _, caches[context] = run.decode_at(context)
                traced[context] = bytes_read(quantize(step))
            return traced[context]

        segments = [] if new == 1 or peak_only else linear_segments(step_at, prompt, last)
        if new > 1:
            step_at(last)
            if last - 1 not in caches:
                step_at(last - 1)
        per_token = (run.cache_bytes_at(2) - run.cache_bytes_at(1)) // batch
        cache = run.cache_description()
    return _Traced(prefill_trace, segments, traced.get(last) if new > 1 else None, cache_after_prefill,
                   caches.get(last - 1, cache_after_prefill), caches.get(last, cache_after_prefill), per_token, cache,
                   caches)


def _generation_report(traced: _Traced, prompt: int, new: int, batch: int, weights: int, roofline: Roofline | None,
                       kv_share: int, communication: tuple[int, int], parallel: _Parallel | None
                       ) -> GenerationReport:
    """The figures of one GPU: the cache divided among ``kv_share`` GPUs, and the time to send
    ``communication`` bytes (prefill, all decode steps) added to each phase's."""
    def share(nbytes: int) -> int:
        return -(-nbytes // kv_share)

    peaks = [("prefill", 0, peak_live_bytes(traced.prefill.memory_events)[0])]
    if traced.last_step is not None:
        peaks.append(("decode", share(traced.cache_before_last), peak_live_bytes(traced.last_step.memory_events)[0]))
    phase, peak_cache, working = max(peaks, key=lambda p: p[1] + p[2])
    prefill = build_report(traced.prefill)
    decode = decode_report(traced.segments, roofline) if traced.segments else no_decode(traced.prefill, roofline)
    send = (0.0, 0.0)
    if roofline is not None:
        prefill = estimate(prefill, roofline)
        if parallel is not None and parallel.link is not None:
            send = (link_seconds(communication[0], parallel.link), link_seconds(communication[1], parallel.link))
    ttft = prefill.totals.estimated_seconds + send[0] if prefill.totals.estimated_seconds is not None else None
    decode_seconds = decode.totals.estimated_seconds + send[1] if decode.totals.estimated_seconds is not None \
        else None
    samples = tuple((context, macs, seconds, share(traced.caches.get(context, 0))) for context, macs, seconds in
                    step_samples(traced.segments, roofline)) if traced.segments else ()
    return GenerationReport(
        prompt_tokens=prompt, new_tokens=new, batch_size=batch, cache=traced.cache, prefill=prefill, decode=decode,
        decode_steps=new - 1, kv_cache_bytes=share(traced.cache_after_last),
        kv_cache_bytes_per_token=share(traced.per_token), weights_bytes=weights,
        peak_bytes=weights + peak_cache + working, peak_phase=phase, peak_cache_bytes=peak_cache,
        peak_working_bytes=working, time_to_first_token_seconds=ttft,
        tokens_per_second=(new - 1) / decode_seconds if decode_seconds else None, steps=samples,
        tensor_parallel=parallel.size if parallel is not None else 1,
        communication_bytes=communication,
        communication_seconds=send if parallel is not None and parallel.link is not None else None)


def _parallel(model: nn.Module, size: int, hardware: str | None) -> _Parallel | None:
    """Tensor parallelism over ``size`` GPUs of ``hardware``, checked against the model's heads."""
    if size == 1:
        return None
    heads, kv_heads = _attention_heads(model)
    device = catalogue_device(hardware) if hardware is not None and hardware != "cpu" else None
    check_tensor_parallel(heads, size, gpus_per_node=device.gpus_per_node if device is not None else None,
                          hardware=device.name if device is not None else "", kv_heads=kv_heads)
    assert kv_heads is not None  # named whenever the heads are (_attention_heads)
    return _Parallel(size, kv_heads, device.interconnect_bandwidth if device is not None else None)


@dataclass(frozen=True)
class _Parallel:
    """Tensor parallelism over ``size`` GPUs joined by a link of ``link`` bytes/s (both ways)."""

    size: int
    kv_heads: int
    link: float | None  # None: no device named, no time for the link

    def weights_bytes(self, model: nn.Module, report: Report, split: set[int], buffers: int, params: int) -> int:
        """One GPU's weights: the ``params`` bytes of split layers divided by ``size``, the rest
        and the ``buffers`` whole."""
        split_names = {layer.name for layer in report.layers if layer.index in split}
        owner: dict[int, str] = {}
        for module_name, module in model.named_modules():
            for parameter in module.parameters(recurse=False):
                owner.setdefault(id(parameter), module_name)
        sizes = {id(p): p.numel() for p in model.parameters()}
        total = sum(sizes.values())
        if not total:
            return buffers
        split_elements = sum(n for key, n in sizes.items() if owner.get(key) in split_names)
        return buffers + round(params / total * (total - split_elements + -(-split_elements // self.size)))


def _weights_dtype(model: nn.Module, dtype: torch.dtype | None) -> str:
    """The dtype of most of the model's parameter bytes, as the run will hold them."""
    if dtype is not None:
        return str(dtype).removeprefix("torch.")
    by_dtype: dict[str, int] = {}
    for p in model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + p.numel() * p.element_size()
    return max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else "float32"


# -- ONNX files ---------------------------------------------------------------------------
def _is_onnx(model: object) -> bool:
    """An ONNX file's path, or an ``onnx.ModelProto`` (it has a graph and an opset)."""
    if isinstance(model, str):
        return is_onnx(model)
    return hasattr(model, "graph") and hasattr(model, "opset_import")


@dataclass(frozen=True)
class _OnnxInputs:
    sizes: dict[str, tuple[int, ...]] | tuple[int, ...] | None
    batch_size: int | None


def _onnx_inputs(request: Request) -> _OnnxInputs:
    sizes = request.inputs.sizes or ()
    named = [size for size in sizes if isinstance(size, NamedSize)]
    bare = [size for size in sizes if not isinstance(size, NamedSize)]
    if bare and (named or len(bare) > 1):
        raise BadRequest("give several ONNX inputs by name: --input NAME=1x3x224x224 (repeatable)")
    given = bare[0] if bare else ({size.name: size.size for size in named} or None)
    batch = request.inputs.batch_size
    return _OnnxInputs(given, batch if batch != 1 else None)


def _onnx(request: Request, say: Progress) -> Report:
    """An ONNX file: shapes from the file and the input sizes; nothing runs, so no memory step."""
    from nncost.capture.onnx import read_onnx

    unsupported = [flag for flag, given in (
        ("--train and the memory options", request.step is not None),
        ("--measure-time", request.measure_time), ("--seq", request.inputs.seq is not None),
        ("--dtype", request.dtype is not None), ("--device", request.device != "meta"),
        ("--config", bool(request.config_overrides)),
        ("--weights", request.weights is not None),
    ) if given]
    if unsupported:
        raise BadRequest(f"{unsupported[0]} cannot be used with an ONNX file; it is read as stored")
    inputs = _onnx_inputs(request)
    with say.step("reading the ONNX model", slow=False):
        trace, file_params = read_onnx(request.model, inputs.sizes, inputs.batch_size, name=request.name)
    report = build_report(trace, file_params=file_params)
    if request.hardware is not None:
        report = _estimated(report, request, request.hardware, None, say)
    return replace(report, depth=request.depth) if request.depth is not None else report
