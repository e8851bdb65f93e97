"""From a MODEL string to a Report: the one place where every kind of model name is dispatched.

``profile_named("resnet18", RunOptions(...))`` resolves the name (:mod:`nncost.models`), builds
the model where it must, profiles it and, when asked, simulates its memory.  The command line
(``nncost MODEL``, ``nncost compare A B``) and :func:`nncost.compare` all go through
:func:`profile_named`; a source that is not an ``nn.Module`` (an ONNX file) is one more branch
there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from nncost.errors import BadRequest, NeedsWeights

if TYPE_CHECKING:
    import torch

    from nncost.models import ModelSpec
    from nncost.records.memory import MemoryReport
    from nncost.records.report import Report

DEFAULT_SEQ = 128
WARMUP = 2  # untimed passes before --measure-time's timed ones
FIT_DEVICE = "device"  # fit without a budget: the memory of the hardware device


class NamedSize(NamedTuple):
    """``--input NAME=1x3x224x224``: the size of one named model input (ONNX files)."""

    name: str
    size: tuple[int, ...]


class Steps(Protocol):
    """Where messages about slow steps go: the CLI shows a spinner, the Python API stays quiet."""

    def __call__(self, message: str) -> None: ...

    def step(self, message: str, slow: bool = True) -> Any: ...


class Quiet:
    """Progress that says nothing."""

    shows_bars = False

    def __call__(self, message: str) -> None:
        pass

    @contextmanager
    def step(self, message: str, slow: bool = True) -> Iterator[None]:
        yield


def _bar(progress: Steps, message: str, total: int | None) -> AbstractContextManager[Callable[[], None] | None]:
    """A progress bar where the progress shows them (the CLI's), else nothing."""
    bar = getattr(progress, "bar", None)
    return bar(message, total) if bar is not None and getattr(progress, "shows_bars", False) else nullcontext(None)


@dataclass
class RunOptions:
    """What to run a named model with; the CLI's flags, as plain data.

    ``input_sizes`` leave out the batch dimension; ``None`` takes the model's own default (the
    torchvision weights' crop size, a ``.pt2`` file's example inputs).  ``memory`` asks for the
    memory simulation (``train`` a training step, otherwise one inference pass).
    """

    input_sizes: list[Any] | None = None  # tuples of ints; NamedSize for an ONNX file's named inputs
    batch_size: int = 1
    seq: int | None = None
    dtype: torch.dtype | None = None
    device: str = "meta"
    memory: bool = False
    train: bool = False
    optimizer: str = "adam"
    hardware: str | None = None
    checkpointing: bool = False
    fit: str | int | None = None  # a budget, or FIT_DEVICE
    gpus: int = 1
    sharding: str = "none"
    plot: str | None = None
    measure: bool = False
    precision: str = "fp32"
    efficiency: float = 1.0  # of the roofline's roofs
    measure_time: bool = False
    repeats: int = 10


def profile_named(name: str, options: RunOptions, progress: Steps | None = None
                  ) -> tuple[Report, MemoryReport | None]:
    """The report of the model called ``name`` (any MODEL the CLI accepts), and its memory report
    when ``options.memory`` is set."""
    from nncost.models import is_onnx, resolve

    if is_onnx(name):
        return _onnx(name, options), None
    if any(isinstance(size, NamedSize) for size in options.input_sizes or ()):
        raise BadRequest("named inputs (--input NAME=SIZE) are for .onnx models; give sizes as --input CxHxW")
    if options.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BadRequest("--device cuda was asked for, but no CUDA device is available")
    spec = resolve(name)
    run = Run(options, spec, progress or Quiet())
    report = run.profile()
    memory_report = run.memory() if options.memory else None
    device_name = roofline_hardware(options.hardware)
    if memory_report is not None and memory_report.budget_bytes is None and device_name not in (None, "cpu"):
        from nncost.hardware import catalogue_device

        memory_report.budget_bytes = catalogue_device(device_name).memory_bytes  # does the step fit on that device?
    if memory_report is not None and report.roofline is not None:
        from nncost.analyses.roofline import add_memory_fit, add_training_step

        add_training_step(report, memory_report)
        add_memory_fit(report, memory_report)
    return report, memory_report


def _onnx(name: str, options: RunOptions) -> Report:
    """An ONNX file: shapes from the file and the input sizes; nothing runs, so no memory step."""
    from nncost.api import profile_onnx, roofline

    unsupported = [flag for flag, given in (
        ("--train and the memory options", options.train or options.fit is not None or options.checkpointing
         or options.plot is not None or options.measure or options.sharding != "none" or options.gpus > 1),
        ("--measure-time", options.measure_time), ("--seq", options.seq is not None),
        ("--dtype", options.dtype is not None), ("--device", options.device != "meta"),
    ) if given]
    if unsupported:
        raise BadRequest(f"{unsupported[0]} cannot be used with an ONNX file; it is read as stored")
    named = [size for size in options.input_sizes or () if isinstance(size, NamedSize)]
    bare = [size for size in options.input_sizes or () if not isinstance(size, NamedSize)]
    if bare and (named or len(bare) > 1):
        raise BadRequest("give several ONNX inputs by name: --input NAME=1x3x224x224 (repeatable)")
    inputs: dict[str, tuple[int, ...]] | tuple[int, ...] | None = bare[0] if bare else (
        {size.name: size.size for size in named} or None)
    report = profile_onnx(name, inputs, batch_size=options.batch_size if options.batch_size != 1 else None)
    device = roofline_hardware(options.hardware)
    if device is not None:
        roofline(report, device, precision=options.precision, efficiency=options.efficiency)
    return report


def memory_semantics(hardware: str | None) -> str:
    """The allocator semantics of the memory simulation: ``cpu``, or ``cuda`` (the default)."""
    if hardware in (None, "cuda"):
        return "cuda"
    if hardware == "cpu":
        return "cpu"
    from nncost.hardware import catalogue_device

    return catalogue_device(hardware).kind


def roofline_hardware(hardware: str | None) -> str | None:
    """The device of the roofline: a catalogue name or cpu; ``cuda`` alone names no device."""
    return None if hardware in (None, "cuda") else hardware


def fit_budget(fit: str | int | None, hardware: str | None) -> str | int | None:
    """The budget of a batch search: as given, or (``FIT_DEVICE``) the memory of the named device."""
    if fit != FIT_DEVICE:
        return str(fit) if fit is not None else None
    name = roofline_hardware(hardware)
    if name is None:
        raise BadRequest("--fit without a budget takes the memory of --hardware NAME; give one, or a budget "
                         "such as --fit 24GiB")
    from nncost.calibration import memory_bytes
    from nncost.hardware import catalogue_device

    size = memory_bytes() if name == "cpu" else catalogue_device(name).memory_bytes
    if size is None:
        raise BadRequest(f"the memory size of {name} is not known; give a budget such as --fit 24GiB")
    return size


class Run:
    """One named model: builds it where it must, and keeps it for the memory steps."""

    def __init__(self, options: RunOptions, spec: ModelSpec, progress: Steps) -> None:
        self.options, self.spec, self.progress = options, spec, progress
        self.model: torch.nn.Module | None = None
        if spec.token_input and options.input_sizes:
            raise BadRequest(f"{spec.label} takes token ids: give --seq N, not --input")
        if options.seq is not None and not spec.token_input:
            raise BadRequest(f"--seq is for token models (hf:NAME); {spec.label} takes --input CxHxW")
        if not spec.token_input and not (options.input_sizes or spec.default_inputs or spec.example_inputs):
            raise BadRequest(f"{spec.label} needs an input size: --input CxHxW")

    def inputs(self, device: str) -> dict[str, Any]:
        """The keyword arguments of ``profile``/``memory`` that describe the example input."""
        options, spec = self.options, self.spec
        if spec.token_input:
            import torch

            ids = torch.zeros((options.batch_size, options.seq or DEFAULT_SEQ), dtype=torch.long, device=device)
            ids_kw = {"input_ids": ids, "decoder_input_ids": ids} if spec.encoder_decoder else {"input_ids": ids}
            return {"kwargs": ids_kw}
        if options.input_sizes or spec.example_inputs is None:
            return {"input_size": options.input_sizes or spec.default_inputs, "batch_size": options.batch_size}
        from nncost.capture.inputs import rebatch

        args, kwargs = spec.example_inputs
        if options.batch_size != 1:  # the examples' own batch unless another is asked for
            args, kwargs = rebatch(args, options.batch_size), rebatch(kwargs, options.batch_size)
        return {"inputs": args, "kwargs": kwargs}

    def profile(self) -> Report:
        device = self.options.device
        if device != "meta":
            return self._profile_on(device, device)
        if self.options.measure_time:  # timing needs real weights: random init on the CPU
            return self._profile_on("cpu", "meta")
        try:
            return self._profile_on("meta", "meta")
        except NeedsWeights as exc:
            self.progress(f"{exc}".split(". ")[0] + "; building the model with weights on CPU")
            return self._profile_on("cpu", "meta")

    def _profile_on(self, build_device: str, run_device: str) -> Report:
        from nncost.api import profile

        label, options = self.spec.label, self.options
        with self.progress.step(f"building {label} on {build_device}", slow=build_device != "meta"):
            model = self.model = self.spec.build(build_device)
        passes = WARMUP + 2 * options.repeats if options.measure_time else None
        # one live display at a time: the bar of the timed passes replaces the spinner
        spinner = nullcontext() if passes else self.progress.step(f"profiling {label}", slow=run_device != "meta")
        bar = _bar(self.progress, f"timing {label} ({passes} passes)", passes) if passes else nullcontext(None)
        with spinner, bar as advance:
            hardware = options.hardware if options.measure_time else roofline_hardware(options.hardware)
            return profile(model, dtype=options.dtype, device=run_device, name=label, progress=self.progress,
                           hardware=hardware, precision=options.precision, efficiency=options.efficiency,
                           measure_time=options.measure_time, repeats=options.repeats, on_pass=advance,
                           **self.inputs(build_device))

    def memory(self) -> MemoryReport:
        from nncost.api import memory
        from nncost.capture.placement import model_device
        from nncost.memory.measure import measure_cpu_peak, measure_cuda_peak

        options, label, model = self.options, self.spec.label, self.model
        assert model is not None, "profile() builds the model first"
        extra: dict[str, Any] = {}
        searching: AbstractContextManager[Callable[[], None] | None] = nullcontext(None)
        spinner: AbstractContextManager[None] = self.progress.step(f"simulating the memory of {label}",
                                                                   slow=bool(options.fit))
        if options.fit and getattr(self.progress, "shows_bars", False):
            searching = _bar(self.progress, f"searching the largest batch of {label} (simulations)", None)
            spinner = nullcontext()  # one live display at a time
        with spinner, searching as advance:
            if advance is not None:
                extra["on_simulate"] = lambda batch: advance()
            report = memory(model, dtype=options.dtype, name=label, mode="train" if options.train else "infer",
                            optimizer=options.optimizer, hardware=memory_semantics(options.hardware),
                            gpus=options.gpus, sharding=options.sharding,
                            fit=fit_budget(options.fit, options.hardware), checkpointing=options.checkpointing,
                            precision=options.precision, **extra, **self.inputs(str(model_device(model))))
        if options.plot:
            report.plot(options.plot)
        if options.measure:
            on_cuda = report.hardware == "cuda"
            measure = measure_cuda_peak if on_cuda else measure_cpu_peak
            if on_cuda and not torch_cuda_available():
                raise BadRequest("--measure with CUDA memory semantics runs a real step on a GPU, and none is "
                                 "available here; --hardware cpu measures on the CPU")
            if model_device(model).type == "meta":
                with self.progress.step(f"building {label} with weights on cpu for --measure"):
                    model = self.spec.build("cpu")
            with self.progress.step(f"running one real step on {'CUDA' if on_cuda else 'the CPU'}"):
                inputs = self.inputs("cpu")
                report.measured_peak_bytes = measure(
                    model, tuple(_positional(inputs)), inputs.get("kwargs", {}), mode=report.mode,
                    optimizer=options.optimizer, precision=options.precision,
                )
        return report


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _positional(inputs: dict[str, Any]) -> list[Any]:
    """The positional inputs ``profile`` would build: meta tensors for ``input_size`` specs."""
    from nncost.capture.inputs import sizes_to_inputs

    if "inputs" in inputs:
        return list(inputs["inputs"])
    if "input_size" not in inputs:
        return []
    return list(sizes_to_inputs(inputs["input_size"], inputs["batch_size"], None))
