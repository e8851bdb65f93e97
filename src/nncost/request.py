"""A request: everything one run of nncost needs, typed and frozen, and the options that ask for it.

Every option is declared once here (:data:`COMMANDS`: each command's flags, names, defaults and
help), and :func:`build_request` is the one place options become a :class:`Request`, for the
command line (which only parses) and the Python API alike; :func:`nncost.pipeline.run` runs it.
Three words that look alike mean three things here:

- ``device``: where the capture runs (``meta``: no weights; ``cpu``/``cuda``: a real run);
- ``hardware``: the device of the roofline's time estimates (a catalogue name, or ``cpu``:
  calibrated on this machine);
- ``Step.allocator``: the allocator semantics of the memory simulation (``cpu``: exact bytes;
  ``cuda``: 512-byte blocks and the caching allocator's replay).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

from nncost.analyses.sharding import STRATEGIES
from nncost.errors import BadRequest
from nncost.hardware.catalogue import ALLOCATORS, Allocator
from nncost.hardware.catalogue import names as hardware_names
from nncost.hardware.engines import CUDA_GRAPHS, MAX_CAPTURE_BATCH
from nncost.precision import PRECISIONS
from nncost.quantization import KV_CACHE_DTYPES, NF4, NF4_BLOCKS, WEIGHT_FORMATS, check_kv_cache_dtype, weight_format
from nncost.records.trace import TorchFlags
from nncost.simulation.optimizers import OPTIMIZERS

if TYPE_CHECKING:  # the names here are read by the command line's parser, which starts without torch
    import torch
    from torch import nn

DEVICES = ("meta", "cpu", "cuda")  # where a capture can run
MODES = ("train", "infer")
ENGINES = ("hf-generate", "vllm")  # whose generation --prompt costs (Generation.engine)
CUDA_GRAPHS_NEED_VLLM = "--cuda-graphs sets how vLLM launches a step's kernels: add --engine vllm"
FIT_DEVICE = "device"  # Step.fit: the memory of the request's hardware
DEFAULT_SEQ = 128  # token models' sequence length when none is given
DEFAULT_REPEATS = 10  # timed passes of measure_time
WARMUP = 2  # untimed passes before measure_time's timed ones
MAX_ELEMENTS = (2**63 - 1) // 8  # a storage's size in bytes is a signed 64-bit integer; 8 bytes an element


class NamedSize(NamedTuple):
    """``--input NAME=1x3x224x224``: the full size of one named input of an ONNX model."""

    name: str
    size: tuple[int, ...]


@dataclass(frozen=True)
class Inputs:
    """What the model is called with.

    ``sizes`` leave out the batch dimension (``(3, 224, 224)``; several for several positional
    inputs; :class:`NamedSize` for an ONNX file's named inputs); ``None`` takes the model's own
    default (a torchvision model's crop size, a ``.pt2`` file's example inputs, token ids of
    ``seq`` for ``hf:`` models).  ``args`` and ``kwargs`` give example inputs instead (a tensor,
    a tuple of positional inputs, any pytree): their shapes are used, not their values, unless
    the model must run for real.
    """

    sizes: tuple[Any, ...] | None = None
    batch_size: int = 1
    seq: int | None = None
    args: Any = field(default=None, compare=False)
    kwargs: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise BadRequest(f"batch size must be at least 1, got {self.batch_size}")
        if self.seq is not None and self.seq < 1:
            raise BadRequest(f"sequence length must be at least 1, got {self.seq}")
        if self.sizes is not None and self.args is not None:
            raise BadRequest("give input sizes or example inputs, not both")
        for size in self.sizes or ():
            dims = size.size if isinstance(size, NamedSize) else size
            elements = math.prod((self.batch_size, *(dims if isinstance(dims, tuple) else ())))
            if elements > MAX_ELEMENTS:
                raise BadRequest(f"an input of batch {self.batch_size} and size {'x'.join(map(str, dims))} has "
                                 f"{elements:.3g} elements, more than a tensor can hold ({MAX_ELEMENTS:.3g})")
        if self.seq is not None and self.batch_size * self.seq > MAX_ELEMENTS:
            raise BadRequest(f"batch {self.batch_size} of {self.seq} tokens is more than a tensor can hold")


def _a_gpu(hardware: str | None) -> bool:
    """Whether ``hardware`` names a GPU (a plan sets layouts against its memory and links)."""
    if hardware is None:
        return False
    from nncost.hardware.calibration import resolve_device

    return resolve_device(hardware, calibrate=False).kind is Allocator.CUDA


def _check_budget(fit: int | str | None) -> None:
    """A ``fit`` budget given as text is read now, so a mistyped one is refused before any run."""
    if isinstance(fit, str) and fit != FIT_DEVICE:
        from nncost.analyses.fit import parse_bytes

        parse_bytes(fit)


@dataclass(frozen=True)
class Step:
    """The memory simulation of one training step (``mode="train"``) or inference pass.

    ``checkpointing`` runs the model's repeated blocks (``True``) or the named modules under
    activation checkpointing; ``gpus`` and ``sharding`` give per-GPU figures of data-parallel
    training; ``fit`` (bytes, ``"24GiB"``, or :data:`FIT_DEVICE` for the memory of the request's
    hardware) asks for the largest batch whose peak fits; ``measure`` also runs one real step.

    A layout spreads the step over ``gpus``: ``tensor_parallel`` × ``pipeline_parallel`` GPUs
    hold one copy of the model (Megatron's split; 1F1B stages), ``gpus ÷ (T·P)`` copies train on
    data in parallel, each on ``micro_batches`` micro-batches of the request's batch a step, with
    ``sequence_parallel`` or not.  ``plan`` searches those degrees, the micro-batches,
    checkpointing and the ZeRO stage instead, for a ``global_batch`` of samples when given
    (:mod:`nncost.analyses.parallel`; docs/training.md).
    """

    mode: str = "train"
    optimizer: str = "adam"
    allocator: str = "cuda"
    checkpointing: bool | tuple[str, ...] = False
    gpus: int = 1
    sharding: str = "none"
    fit: int | str | None = None
    measure: bool = False
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    micro_batches: int = 1
    sequence_parallel: bool = False
    plan: bool = False
    global_batch: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadRequest(f"mode must be 'train' or 'infer', got {self.mode!r}")
        if self.allocator not in ALLOCATORS:
            raise BadRequest(f"allocator semantics must be one of {', '.join(ALLOCATORS)}, got {self.allocator!r}")
        if self.gpus < 1:
            raise BadRequest(f"gpus must be at least 1, got {self.gpus}")
        _check_budget(self.fit)
        self._check_layout()
        self._check_sharding()

    @property
    def parallel(self) -> bool:
        """Whether the step is spread by a layout (or a plan searches one), not simulated on one GPU."""
        return (self.tensor_parallel * self.pipeline_parallel > 1 or self.micro_batches > 1 or self.sequence_parallel
                or self.plan)

    def _check_layout(self) -> None:
        for name in ("tensor_parallel", "pipeline_parallel", "micro_batches"):
            if getattr(self, name) < 1:
                raise BadRequest(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.global_batch is not None and (self.global_batch < 1 or not self.plan):
            raise BadRequest("a global batch of at least 1 sample is what a plan searches for: add --plan")
        if not self.parallel:
            return
        if self.mode != "train":
            raise BadRequest("tensor, pipeline and sequence parallelism and micro-batches spread a training step: "
                             "add --train")
        if self.fit is not None or self.measure:
            raise BadRequest("--fit and --measure run one GPU's step; a layout's figures are derived from a "
                             "traced one: drop them (--plan searches the layouts that fit)")
        if not isinstance(self.checkpointing, bool):
            raise BadRequest("a layout checkpoints the transformer blocks whole: checkpointing=True, not module names")
        if self.plan:
            given = [flag for flag, value in (("--tensor-parallel", self.tensor_parallel > 1),
                                              ("--pipeline-parallel", self.pipeline_parallel > 1),
                                              ("--micro-batches", self.micro_batches > 1),
                                              ("--checkpointing", self.checkpointing),
                                              ("--sharding", self.sharding != "none")) if value]
            if given:
                raise BadRequest(f"--plan searches tensor and pipeline parallelism, micro-batches, checkpointing and "
                                 f"the ZeRO stage: drop {', '.join(given)}")
            if self.gpus < 2:
                raise BadRequest("--plan searches layouts over --gpus N: give the GPUs to plan for (2 or more)")
            return
        model_gpus = self.tensor_parallel * self.pipeline_parallel
        if self.gpus % model_gpus:
            raise BadRequest(f"{self.gpus} GPUs cannot hold whole copies of a model spread over {model_gpus} "
                             f"(tensor {self.tensor_parallel} × pipeline {self.pipeline_parallel}): --gpus must be a "
                             "multiple of their product")
        if self.sequence_parallel and self.tensor_parallel == 1:
            raise BadRequest("sequence parallelism splits what tensor parallelism repeats: give --tensor-parallel "
                             "of 2 or more")

    def _check_sharding(self) -> None:
        """A sharding divides the training state over data-parallel copies of the model: two or more."""
        if self.sharding == "none" or self.plan:
            return
        model_gpus = self.tensor_parallel * self.pipeline_parallel
        if model_gpus == 1 and self.gpus < 2:
            raise BadRequest(f"--sharding {self.sharding} spreads the training state over data-parallel GPUs: "
                             "give their number, --gpus N (2 or more)")
        if self.gpus // model_gpus < 2:
            raise BadRequest(f"--sharding {self.sharding} spreads the training state over copies of the model, and "
                             f"{self.gpus} GPUs hold one copy spread over {model_gpus}: give --gpus "
                             f"{2 * model_gpus} or more, or drop --sharding")


@dataclass(frozen=True)
class Run:
    """A whole training run of ``tokens`` tokens, each step the request's simulated training step
    on every one of its data-parallel GPUs; ``price_per_gpu_hour`` prices it, and ``mfu`` (the
    fraction of the device's dense matrix peak a step achieves) replaces the published median
    (:data:`nncost.analyses.training_run.ACHIEVABLE_MFU`, docs/training.md)."""

    tokens: int
    price_per_gpu_hour: float | None = None
    mfu: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise BadRequest(f"a training run needs at least 1 token, got {self.tokens}")
        if self.price_per_gpu_hour is not None and self.price_per_gpu_hour < 0:
            raise BadRequest(f"a price per GPU-hour is 0 or more, got {self.price_per_gpu_hour}")
        if self.mfu is not None and not 0 < self.mfu <= 1:
            raise BadRequest(f"the model FLOPs utilisation is in (0, 1], got {self.mfu}")


@dataclass(frozen=True)
class Generation:
    """Generation as ``model.generate`` runs it: a prefill of ``prompt_tokens`` per sequence,
    then ``new_tokens − 1`` decode steps of one token (the request's batch is the number of
    sequences).  ``fit`` (bytes, ``"80GB"``, or :data:`FIT_DEVICE`) asks for the most sequences
    whose peak fits; ``tensor_parallel`` splits the model over that many GPUs in the Megatron
    layout (the figures are then one GPU's).  ``engine`` is whose generation is costed:
    ``"hf-generate"`` (``model.generate`` and the model's own cache) or ``"vllm"`` (the same model
    code with a paged KV cache, docs/engines.md).  ``cuda_graphs`` says whether the engine's decode
    steps replay CUDA graphs: ``"auto"`` (vLLM's default rule), ``"on"`` or ``"off"``."""

    prompt_tokens: int
    new_tokens: int
    fit: int | str | None = None
    tensor_parallel: int = 1
    engine: str = "hf-generate"
    cuda_graphs: str = "auto"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BadRequest(f"the engine is one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.cuda_graphs not in CUDA_GRAPHS:
            raise BadRequest(f"--cuda-graphs is one of {', '.join(CUDA_GRAPHS)}, got {self.cuda_graphs!r}")
        if self.cuda_graphs != "auto" and self.engine != "vllm":
            raise BadRequest(CUDA_GRAPHS_NEED_VLLM)
        if self.prompt_tokens < 1:
            raise BadRequest(f"the prompt must have at least 1 token, got {self.prompt_tokens}")
        if self.new_tokens < 1:
            raise BadRequest(f"new tokens must be at least 1, got {self.new_tokens}")
        if self.tensor_parallel < 1:
            raise BadRequest(f"tensor parallelism needs at least 1 GPU, got {self.tensor_parallel}")
        _check_budget(self.fit)


@dataclass(frozen=True)
class Lora:
    """LoRA adapters of rank ``rank`` on the ``targets`` (``"all-linear"``, or module names such
    as ``("q_proj", "v_proj")``), scaled by ``alpha`` (default 2 × rank), with ``dropout``; put on
    by peft as a user's script would (:mod:`nncost.sources.adapters`)."""

    rank: int
    alpha: int | None = None
    targets: str | tuple[str, ...] = "all-linear"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise BadRequest(f"a LoRA rank is at least 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise BadRequest(f"LoRA dropout is in [0, 1), got {self.dropout}")
        if isinstance(self.targets, tuple) and not self.targets:
            raise BadRequest("LoRA needs target modules: all-linear, or names such as q_proj,v_proj")


@dataclass(frozen=True)
class Compare:
    r"""Several models side by side: ``models`` are MODEL strings, ``nn.Module``\ s or built
    :class:`~nncost.records.report.Report`\ s (used as they are), ``labels`` name them (None: the
    model's own name), and ``stage_depth`` is the depth of the layers matched by name across them
    (1: the models' direct children).  Each model runs as the request without its comparison."""

    models: tuple[Any, ...] = field(compare=False)
    labels: tuple[str | None, ...] = ()
    stage_depth: int = 1

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise BadRequest(f"compare needs at least two models, got {len(self.models)}")
        if not self.labels:
            object.__setattr__(self, "labels", (None,) * len(self.models))
        if len(self.labels) != len(self.models):
            raise BadRequest(f"{len(self.labels)} labels for {len(self.models)} models")
        if self.stage_depth < 1:
            raise BadRequest(f"the stage depth is at least 1, got {self.stage_depth}")


@dataclass(frozen=True)
class Request:
    """One run: the model, its inputs, and every figure asked for.

    ``model`` is an ``nn.Module``, a MODEL string as the command line takes it
    (``"resnet18"``, ``"timm:..."``, ``"hf:gpt2"``, ``"hf:ORG/NAME"``, ``"path/to/config_dir"``,
    ``"net.py:Net"``, ``"model.pt2"``, ``"model.onnx"``), or an ``onnx.ModelProto``.  ``report``
    asks for the forward's layer report, ``step`` for the memory simulation; ``hardware`` adds
    roofline estimates to the report (and, with a step, to the training step), ``measure_time``
    the measured latency of ``repeats`` real passes; ``generation`` asks for a prefill and decode
    steps instead of one forward.  ``depth`` is the depth of the layers the
    renderers show (a view: the report keeps every layer).

    A transformers config (``"hf:NAME"``, ``"hf:ORG/NAME"``, a directory holding
    ``config.json``, or the file) takes ``config_overrides`` (``{"num_hidden_layers": 2}``; dots
    reach nested configs), and a custom architecture is built from its repository's code only
    with ``trust_remote_code``.  Such a model runs in ``dtype`` when given, else in the dtype its
    config names (as ``from_pretrained(dtype="auto")`` loads it), else float32.  A sequence (the
    ``seq`` of a forward or a training step, a generation's prompt and new tokens together) longer
    than the context its config allows (:func:`nncost.sources.configs.context_limit`) is refused unless
    ``ignore_context_limit`` (a what-if of a longer rope scaling, say).
    ``trust_pickle`` lets a ``.pt``/``.pth`` file that holds a module saved whole
    (``torch.save(model)``) be unpickled: unpickling runs code stored in the file, so nncost
    never does it unasked (a TorchScript archive or a state dict needs no trust).
    ``weights`` costs the model with its matrix products' weights stored in a quantized format
    (:data:`nncost.quantization.WEIGHT_FORMATS`, groups of ``group_size``), ``kv_cache_dtype``
    its generation cache stored in fp8 or int8: what-ifs on the traced model
    (:mod:`nncost.analyses.quantize`).  ``weights="nf4"`` with ``lora`` is QLoRA instead: the
    model is built with bitsandbytes' 4-bit linear layers under peft's adapters
    (:mod:`nncost.sources.adapters`), for its forward and its training step alike.
    """

    model: str | nn.Module | Any = field(default=None, compare=False)
    inputs: Inputs = Inputs()
    name: str | None = None
    dtype: torch.dtype | None = None
    precision: str = "fp32"
    device: str = "meta"
    report: bool = True
    hardware: str | None = None
    efficiency: float = 1.0
    measure_time: bool = False
    repeats: int = DEFAULT_REPEATS
    step: Step | None = None
    run: Run | None = None
    generation: Generation | None = None
    lora: Lora | None = None
    depth: int | None = None
    trust_pickle: bool = False
    weights: str | None = None
    group_size: int | None = None
    kv_cache_dtype: str | None = None
    flags: TorchFlags = field(default_factory=TorchFlags.current)
    config_overrides: Mapping[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False
    ignore_context_limit: bool = False
    compare: Compare | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.compare is None):
            raise BadRequest("a request names one model, or a comparison of several (Compare): give one of them")
        if self.device.split(":")[0] not in DEVICES:
            raise BadRequest(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise BadRequest(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not 0 < self.efficiency <= 1:
            raise BadRequest(f"efficiency must be in (0, 1] (1.0: the datasheet figures), got {self.efficiency}")
        if self.repeats < 1:
            raise BadRequest(f"repeats must be at least 1, got {self.repeats}")
        if self.depth is not None and self.depth < 0:
            raise BadRequest(f"depth must be 0 or more, got {self.depth}")
        if self.hardware is not None and self.hardware.strip().lower() == Allocator.CUDA:
            raise BadRequest("'cuda' names allocator semantics, not a device: give a device such as h100-sxm "
                             "for time estimates, and allocator='cuda' for the memory simulation")
        if self.step is not None and self.step.plan and not _a_gpu(self.hardware):
            raise BadRequest("a plan sets layouts against a device's memory and links: give --hardware (e.g. "
                             "h100-sxm)")
        if any(not isinstance(key, str) or not key for key in self.config_overrides):
            raise BadRequest("config overrides are keyed by config attribute names, e.g. {'num_hidden_layers': 2}")
        if not self.report and self.step is None:
            raise BadRequest("the request asks for nothing: neither the report nor a memory step")
        weight_format(self.weights, self.group_size)
        check_kv_cache_dtype(self.kv_cache_dtype)
        if self.kv_cache_dtype is not None and self.generation is None:
            raise BadRequest("the KV cache dtype sizes generation's cache: give a generation (--prompt, --new-tokens)")
        if self.qlora and self.group_size is not None and self.group_size not in NF4_BLOCKS:
            blocks = ", ".join(map(str, NF4_BLOCKS))
            raise BadRequest(f"QLoRA's base is quantized by bitsandbytes in blocks of {blocks}; "
                             f"--group-size {self.group_size} is not one")
        if self.weights is not None and self.step is not None and not self.qlora:
            raise BadRequest("quantized weights are an inference what-if: drop the training step and memory options "
                             "(a step over a 4-bit base with adapters is QLoRA: --weights nf4 --lora R)")
        if self.run is not None:
            self._check_run()
        if self.generation is not None and (self.step is not None or self.measure_time):
            raise BadRequest("generation is costed on its own: drop the training step and measured time from the "
                             "request")
        if self.compare is not None:
            self._check_compare()

    @property
    def qlora(self) -> bool:
        """QLoRA: LoRA adapters over a base whose linear layers are bitsandbytes' NF4 ``Linear4bit``
        (``weights="nf4"`` with ``lora``), built as such rather than costed as a what-if."""
        return self.weights == NF4 and self.lora is not None

    def _check_compare(self) -> None:
        """A comparison sets forward reports and training peaks side by side: nothing else."""
        given = [what for what, asked in (
            ("generation", self.generation is not None), ("a training run", self.run is not None),
            ("a layout over GPUs", self.step is not None and self.step.parallel),
            ("an inference memory step", self.step is not None and self.step.mode != "train"),
            ("LoRA", self.lora is not None), ("quantized weights", self.weights is not None),
            ("measured time", self.measure_time)) if asked]
        if given:
            raise BadRequest(f"a comparison sets forward reports and training peaks side by side: drop {given[0]}")

    def _check_run(self) -> None:
        if not self.report:
            raise BadRequest("a training run's time is on the report's roofline: keep the report")
        if self.step is None or self.step.mode != "train":
            raise BadRequest("a training run repeats the simulated training step: add --train (Step(mode='train'))")
        if self.hardware is None:
            raise BadRequest("a training run's time is on a device: give --hardware (e.g. a100-80gb)")
        if self.inputs.seq is None:
            raise BadRequest("a training run counts tokens: give the sequence length (--seq, Inputs(seq=...))")


# -- options: what a request can ask for, as the command line's flags and the API's keywords --
PLOT_NEEDS_A_STEP = ("--plot draws the step one GPU simulates: add --train (or another memory option), without "
                     "generation or a layout over GPUs")
TRUST_PICKLE_HELP = ("unpickle a module saved whole with torch.save(model); unpickling runs code stored in the "
                     "file, so only for files you trust (a state dict or a TorchScript archive needs no trust)")


def parse_size(text: str) -> tuple[int, ...]:
    """``3x224x224`` (also ``3,224,224`` or ``3×224×224``) → ``(3, 224, 224)``."""
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not like 3x224x224") from None
    if not size or any(d < 1 for d in size):
        raise argparse.ArgumentTypeError(f"input size {text!r} must be positive integers")
    return size


def parse_input(text: str) -> tuple[int, ...] | NamedSize:
    """``3x224x224``, or ``NAME=1x3x224x224`` for a named input of an ONNX model."""
    name, equals, size = text.rpartition("=")
    if not equals:
        return parse_size(text)
    if not name:
        raise argparse.ArgumentTypeError(f"input {text!r} has no name before '='")
    return NamedSize(name, parse_size(size))


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def efficiency(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


_TOKEN_SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def token_count(text: str) -> int:
    """A number of tokens: ``2T``, ``300B``, ``1.5e12``, ``4096``."""
    body = text.strip().replace("_", "").replace(",", "")
    scale = _TOKEN_SUFFIXES.get(body[-1:].upper(), 1.0) if body else 1.0
    if scale != 1.0:
        body = body[:-1]
    try:
        value = round(float(body) * scale)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count (e.g. 2T, 300B, 1.5e12)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a training run needs at least 1 token, got {text!r}")
    return value


def price(text: str) -> float:
    value = _number(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


@dataclass(frozen=True)
class Flag:
    """One option as the command line takes it: its ``names`` (``--batch``, ``-b``) and the
    ``settings`` argparse reads (type, default, choices, help); its keyword is the first name's,
    dashes as underscores."""

    names: tuple[str, ...]
    settings: Mapping[str, Any]

    @property
    def option(self) -> str:
        return self.names[0].lstrip("-").replace("-", "_")

    @property
    def default(self) -> Any:
        if "default" in self.settings:
            return self.settings["default"]
        return False if self.settings.get("action") == "store_true" else None


def flag(*names: str, **settings: Any) -> Flag:
    return Flag(names, settings)


@dataclass(frozen=True)
class FlagGroup:
    """Options shown together in the help (``title`` None: the command's own options)."""

    title: str | None
    description: str | None
    flags: tuple[Flag, ...]


INPUT_FLAGS = FlagGroup(None, None, (
    flag("--input", "-i", action="append", type=parse_input, metavar="CxHxW",
         help="input size without the batch dimension (default: the model's own); repeat for "
              "several inputs; for a .onnx model also NAME=1x3x224x224"),
    flag("--batch", "-b", type=positive, default=1,
         help="batch size (default 1)"),
    flag("--seq", type=positive, default=None,
         help=f"sequence length of token inputs for hf: models (default {DEFAULT_SEQ})"),
    flag("--dtype", default=None,
         help="parameter and input dtype, e.g. float16, bfloat16 (default: a transformers config's "
              "own, else float32)"),
    flag("--device", choices=DEVICES, default=None,
         help="meta (default: no weights, no memory) or a real run on cpu/cuda"),
    flag("--trust-pickle", action="store_true",
         help=TRUST_PICKLE_HELP),
    flag("--ignore-context-limit", action="store_true",
         help="cost a sequence (--seq, or --prompt plus --new-tokens) longer than the context a "
              "transformers config allows (max_position_embeddings, n_positions, or its rope "
              "scaling's), e.g. a rope-scaling what-if; refused by default"),
))
MODEL_FLAGS = FlagGroup(None, None, (
    flag("--depth", "-d", type=non_negative, default=None,
         help="fold the layer tree below this depth"),
    flag("--config", action="append", metavar="KEY=VALUE",
         help="override a value of a transformers config (a JSON literal, else a string), e.g. "
              "num_hidden_layers=2; dots reach nested configs: text_config.num_hidden_layers=2; "
              "repeatable"),
    flag("--trust-remote-code", action="store_true",
         help="build a custom architecture (auto_map) from its repository's Python code, which runs "
              "that code on this machine"),
    flag("--precision", choices=PRECISIONS, default=None,
         help="fp32 (default: a transformers config's own dtype, else float32; given, float32 "
              "whatever the config says); bf16/fp16 run the model in that dtype; *-mixed: autocast "
              "with fp32 master weights (matrix work at the 16-bit peak)"),
))
QUANTIZATION_FLAGS = FlagGroup("quantization", "what-ifs: the model's weights and cache stored narrower", (
    flag("--weights", choices=WEIGHT_FORMATS, default=None,
         help="store the weights of the matrix products (every Linear, lm_head included) in this "
              "format, scales and zero points counted: int4/int8/nf4 compute in the activations' "
              "dtype, int8-dynamic in int8, fp8 in fp8 where the device has it (docs/llm.md). nf4 "
              "with --lora is QLoRA: bitsandbytes' Linear4bit base (lm_head kept), computing in "
              "bf16, and a training step over it (docs/training.md)"),
    flag("--group-size", type=positive, default=None, metavar="G",
         help="elements per scale along the input dimension (int4: default 128; int8: default one "
              "per output channel; nf4: the block, default 64; QLoRA: 32 to 4096, a power of 2)"),
    flag("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default=None,
         help="with --prompt: store the KV cache in fp8, or int8 with a scale and zero point per "
              "token and head"),
))
TIME_FLAGS = FlagGroup("time", "roofline estimates on a device, and measured latency", (
    flag("--hardware", metavar="NAME", default=None,
         help=f"a device: {', '.join(hardware_names())} (calibrated here); adds per-layer time "
              "estimates, and its memory is the budget a simulated step is set against"),
    flag("--efficiency", type=efficiency, default=1.0,
         help="fraction of the device's roofs reached (default 1.0: the datasheet figures)"),
    flag("--measure-time", action="store_true",
         help="run the model for real (random weights) and measure each layer's median latency"),
    flag("--repeats", type=positive, default=DEFAULT_REPEATS,
         help=f"timed passes for --measure-time (default {DEFAULT_REPEATS}, after {WARMUP} warm-up)"),
))
GENERATION_FLAGS = FlagGroup("generation", "prefill and decode as model.generate or a serving engine runs them "
                             "(hf: models)", (
    flag("--prompt", type=positive, metavar="P", default=None,
         help="prompt tokens per sequence; with --new-tokens, cost generation instead of one "
              "forward (--batch sequences at once)"),
    flag("--new-tokens", type=positive, metavar="M", default=None,
         help="tokens generated per sequence: the prefill yields the first, M-1 decode steps the "
              "rest"),
    flag("--engine", choices=list(ENGINES), default="hf-generate",
         help="with --prompt: whose generation is costed: hf-generate (default: transformers' "
              "generate and the model's own cache) or vllm (a paged KV cache of 16-token blocks, "
              "written once per token and read once per step; docs/engines.md)"),
    flag("--cuda-graphs", choices=list(CUDA_GRAPHS), default="auto",
         help="with --engine vllm: whether each decode step replays one CUDA graph (on) or launches its "
              f"kernels one by one (off); auto (default) as vLLM does, graphs up to {MAX_CAPTURE_BATCH.value:g} "
              "sequences. The "
              "prefill launches them one by one; each step also pays the engine's scheduling"),
))
ADAPTER_FLAGS = FlagGroup("fine-tuning", "LoRA adapters put on by peft (pip install 'nncost[peft]')", (
    flag("--lora", type=positive, metavar="R", default=None,
         help="LoRA adapters of rank R on a frozen base, as peft's get_peft_model puts them; with "
              "--weights nf4, over a 4-bit base (QLoRA)"),
    flag("--lora-alpha", type=positive, metavar="A", default=None,
         help="LoRA scale numerator, lora_alpha (default 2R)"),
    flag("--lora-targets", metavar="NAMES", default="all-linear",
         help="all-linear (default: every linear layer but the output one) or module names, "
              "e.g. q_proj,v_proj"),
    flag("--lora-dropout", type=float, metavar="P", default=0.0,
         help="dropout on the adapters' input (default 0)"),
))
MEMORY_FLAGS = FlagGroup("memory", "simulate the memory of one training step or inference pass", (
    flag("--train", action="store_true",
         help="a training step: forward, loss, backward, optimizer"),
    flag("--optimizer", choices=list(OPTIMIZERS), default="adam",
         help="with --train (default adam)"),
    flag("--checkpointing", action="store_true",
         help="with --train: activation checkpointing of the model's repeated blocks"),
    flag("--fit", metavar="BUDGET", nargs="?", const=FIT_DEVICE,
         help="the largest batch whose peak fits, e.g. 24GiB or 80GB (a plain number is bytes); "
              "alone: the --hardware device's memory. With --prompt: the most sequences generated at "
              "once that fit"),
    flag("--allocator", choices=ALLOCATORS, default=None,
         help="allocator semantics of the simulation: cpu (exact bytes) or cuda (512-byte blocks, "
              "the caching allocator replayed); default: that of --hardware's device, else cuda"),
    flag("--gpus", type=positive, default=1,
         help="GPUs in all, with --sharding: data-parallel, or GPUS ÷ (T·P) copies under "
              "--tensor-parallel T and --pipeline-parallel P"),
    flag("--sharding", choices=STRATEGIES, default="none",
         help="per-GPU memory under DDP, ZeRO-1/2/3 or FSDP full shard, over --gpus N (2 or more)"),
    flag("--plot", metavar="PNG",
         help="draw the memory timeline of the step into a PNG file"),
    flag("--measure", action="store_true",
         help="also run one real step (on the CPU with cpu allocator semantics, else on the GPU) and "
              "print the measured peak beside the estimate"),
))
PARALLEL_FLAGS = FlagGroup("parallelism", "split the model over GPUs in the Megatron layout (hf: language models); "
                           "every figure one GPU's", (
    flag("--tensor-parallel", type=positive, metavar="T", default=1,
         help="split each transformer block over T GPUs of a node (heads and MLP columns split, "
              "two all-reduces per block on the --hardware device's NVLink): with --prompt, "
              "generation; with --train, a training step (--gpus GPUS in all)"),
    flag("--pipeline-parallel", type=positive, metavar="P", default=1,
         help="with --train: P pipeline stages of consecutive blocks under the 1F1B schedule "
              "(GPUS ÷ (T·P) data-parallel copies)"),
    flag("--micro-batches", type=positive, metavar="M", default=1,
         help="with --train: M micro-batches of --batch samples a step on each data-parallel copy "
              "(the pipeline's bubble is (P−1)/M; global batch = batch × M × GPUS ÷ (T·P))"),
    flag("--sequence-parallel", action="store_true",
         help="with --tensor-parallel T --train: also split the norms' and residuals' activations "
              "along the sequence (reduce-scatter and all-gather instead of all-reduce)"),
    flag("--plan", action="store_true",
         help="with --train, --hardware and --gpus: search tensor × pipeline × data parallelism, "
              "micro-batches, checkpointing and the ZeRO stage; print the five fastest layouts "
              "that fit, and why the others do not"),
    flag("--global-batch", type=positive, metavar="B", default=None,
         help="with --plan: only layouts whose batch × micro-batches × data-parallel GPUs is B "
              "samples"),
))
RUN_FLAGS = FlagGroup("training run", "a whole run: the training step repeated over a run's tokens", (
    flag("--tokens", type=token_count, metavar="N", default=None,
         help="with --train, --seq and --hardware: train on N tokens (2T, 300B, 1.5e12): steps, "
              "FLOPs, time, GPU-hours (global batch = --batch × --gpus; under --tensor-parallel or "
              "--pipeline-parallel, --batch × --micro-batches × the data-parallel GPUs)"),
    flag("--price-per-gpu-hour", type=price, metavar="X", default=None,
         help="with --tokens: the price of one GPU-hour, for the run's cost"),
    flag("--mfu", type=efficiency, metavar="F", default=None,
         help="with --tokens: the fraction of the dense matrix peak a step achieves "
              "(default: the median of published runs, docs/training.md)"),
))
COMPARE_FLAGS = FlagGroup(None, None, (
    flag("--train", action="store_true",
         help="also compare the peak memory of one training step"),
    flag("--optimizer", choices=list(OPTIMIZERS), default="adam",
         help="with --train (default adam)"),
    flag("--allocator", choices=ALLOCATORS, default=None,
         help="with --train: allocator semantics of the training peak (default cuda)"),
    flag("--stage-depth", type=positive, default=1,
         help="depth of the layers matched by name across models (default 1)"),

))

@dataclass(frozen=True)
class Command:
    """A command of the command line: ``nncost MODEL`` (named ``""``) or ``nncost NAME ...``; what
    it is for, its positional argument, and its options in the order its help shows them."""

    description: str
    positional: Flag
    groups: tuple[FlagGroup, ...]


COMMANDS: dict[str, Command] = {
    "": Command("What a neural network costs, layer by layer: shapes, parameters, MACs, FLOPs, memory.",
                flag("model", metavar="MODEL", help="the model to profile (forms below)"),
                (INPUT_FLAGS, MODEL_FLAGS, QUANTIZATION_FLAGS, TIME_FLAGS, GENERATION_FLAGS, ADAPTER_FLAGS,
                 MEMORY_FLAGS, PARALLEL_FLAGS, RUN_FLAGS)),
    "compare": Command("Several models side by side: totals, ratios to the first model, and the layers they share.",
                       flag("models", metavar="MODEL", nargs="*",
                            help="two or more models; the first is the reference"),
                       (INPUT_FLAGS, COMPARE_FLAGS)),
}
# Options the API takes beyond the flags: example inputs, labels, a comparison's models, and
# whether to simulate a memory step (None: as the other options say) or build the report.
API_OPTIONS: dict[str, Any] = {"inputs": None, "kwargs": None, "name": None, "models": None, "labels": None,
                               "memory": None, "report": True}
# Every option :func:`build_request` takes, with its default.
OPTIONS: dict[str, Any] = {
    **{f.option: f.default for command in COMMANDS.values() for group in command.groups for f in group.flags},
    **API_OPTIONS,
}


def build_request(model: Any = None, **options: Any) -> Request:
    """The request that ``options`` describe, the one place flags and keywords become a request.

    ``nncost MODEL --flag ...`` and ``nncost.cost(MODEL, flag=...)`` pass the same options
    (:data:`OPTIONS`), so the same words give the same request, and the same document.  The rules
    that combine options live here: generation when a prompt is given; a memory step when a
    training or memory option is, or a device (``hardware``) whose memory the step is set against,
    except for a model read as stored (an ONNX file, a built report), which nothing runs; a layout
    when a step is spread over GPUs; a comparison of ``models``.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BadRequest(f"unknown option {unknown[0]!r}; the options are those of the command line: "
                         f"{', '.join(sorted(OPTIONS))}")
    from nncost.records.report import Report
    from nncost.sources.models import is_onnx_model

    o = SimpleNamespace(**{**OPTIONS, **options})
    as_stored = isinstance(model, Report) or is_onnx_model(model)
    _check_combinations(o)
    generation = _generation(o)
    step = None if generation is not None or o.memory is False else _step(o, device_memory=not as_stored)
    compare = None
    if o.models is not None:
        compare = Compare(tuple(o.models), tuple(o.labels or ()), o.stage_depth)
    return Request(model, _inputs(o), name=o.name, dtype=_dtype(o, as_stored), precision=o.precision or "fp32",
                   device=o.device or "meta", hardware=o.hardware.strip().lower() if o.hardware else None,
                   efficiency=o.efficiency, measure_time=o.measure_time, repeats=o.repeats, step=step, run=_run(o),
                   generation=generation, depth=o.depth, config_overrides=_overrides(o.config),
                   trust_remote_code=o.trust_remote_code, trust_pickle=o.trust_pickle, weights=o.weights,
                   group_size=o.group_size, kv_cache_dtype=o.kv_cache_dtype, lora=_lora(o),
                   ignore_context_limit=o.ignore_context_limit, compare=compare, report=o.report)


def _check_combinations(o: Any) -> None:
    """The options that rule each other out, each refused in one sentence."""
    real = [flag for flag, given in (("--measure-time", o.measure_time), ("--measure", o.measure)) if given]
    if o.device == "meta" and real:
        raise BadRequest(f"{real[0]} runs the model for real, which --device meta rules out: drop one of them")
    if (o.prompt is None) != (o.new_tokens is None):
        raise BadRequest("generation needs both --prompt P and --new-tokens M")
    if o.prompt is None and o.engine != "hf-generate":
        raise BadRequest(f"--engine {o.engine} sets whose generation is costed: add --prompt P --new-tokens M")
    if o.cuda_graphs != "auto" and o.engine != "vllm":
        raise BadRequest(CUDA_GRAPHS_NEED_VLLM)
    if o.prompt is not None:
        if o.train or o.measure_time or o.seq is not None:
            raise BadRequest("--prompt costs generation; it cannot be combined with --train, --measure-time or --seq")
        if _training_layout(o):
            raise BadRequest("--pipeline-parallel, --micro-batches, --sequence-parallel and --plan spread a training "
                             "step: drop them with --prompt")
    elif (o.tensor_parallel > 1 or _training_layout(o)) and not o.train:
        raise BadRequest("--tensor-parallel splits generation (--prompt P --new-tokens M) or a training step; "
                         "--pipeline-parallel, --micro-batches, --sequence-parallel and --plan a training step: "
                         "add --train")
    if o.plot and (o.prompt is not None or o.tensor_parallel > 1 or _training_layout(o)):
        raise BadRequest(PLOT_NEEDS_A_STEP)
    if o.tokens is None and (o.price_per_gpu_hour is not None or o.mfu is not None):
        raise BadRequest("--price-per-gpu-hour and --mfu go with a training run: add --tokens N")
    if o.input is not None and o.inputs is not None:
        raise BadRequest("give input_size or inputs, not both")
    if o.models is not None and o.allocator is not None and not o.train:
        raise BadRequest("--allocator sets the semantics of the training peak a comparison shows: add --train")


def _generation(o: Any) -> Generation | None:
    if o.prompt is None:
        return None
    return Generation(o.prompt, o.new_tokens, fit=o.fit, tensor_parallel=o.tensor_parallel, engine=o.engine,
                      cuda_graphs=o.cuda_graphs)


def _step(o: Any, *, device_memory: bool) -> Step | None:
    """The memory step the options ask for: ``memory=True``, a training or memory option, or a
    device whose memory an inference pass is set against (not with quantized weights, a what-if on
    the forward, nor for a model read as stored)."""
    device = bool(o.hardware) and o.weights is None and device_memory
    wanted = (o.memory or o.train or device or o.allocator or o.measure or o.fit or o.checkpointing or o.plot
              or o.sharding != "none" or o.gpus > 1)
    if not wanted:
        return None
    return Step(mode="train" if o.train else "infer", optimizer=o.optimizer,
                allocator=o.allocator or _allocator_of(o.hardware), checkpointing=o.checkpointing, gpus=o.gpus,
                sharding=o.sharding, fit=o.fit, measure=o.measure, tensor_parallel=o.tensor_parallel,
                pipeline_parallel=o.pipeline_parallel, micro_batches=o.micro_batches,
                sequence_parallel=o.sequence_parallel, plan=o.plan, global_batch=o.global_batch)


def _run(o: Any) -> Run | None:
    return Run(o.tokens, o.price_per_gpu_hour, o.mfu) if o.tokens is not None else None


def _inputs(o: Any) -> Inputs:
    """Sizes without the batch dimension (one size, or a list of them), or example inputs."""
    sizes = o.input
    if sizes is not None:
        items = list(sizes)
        sizes = (tuple(items),) if items and isinstance(items[0], int) else tuple(
            size if isinstance(size, NamedSize) else tuple(size) for size in items)
    return Inputs(sizes or None, o.batch, o.seq, args=o.inputs, kwargs=o.kwargs)


def _dtype(o: Any, as_stored: bool) -> torch.dtype | None:
    """The dtype asked for; ``precision="fp32"`` asks for float32 over a config's own dtype, as
    bf16 and fp16 do for theirs (an ONNX file or a built report is read in the dtypes it holds)."""
    from nncost.precision import resolve_dtype

    dtype = resolve_dtype(o.dtype)
    if o.precision == "fp32" and dtype is None and not as_stored:
        dtype = resolve_dtype("float32")
    return dtype


def _overrides(config: Any) -> Mapping[str, Any]:
    """``--config KEY=VALUE`` texts, or a mapping given as it is."""
    if not config:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    from nncost.sources.configs import parse_overrides

    return parse_overrides(list(config))


def _lora(o: Any) -> Lora | None:
    """The adapters of the ``lora*`` options, or None without ``lora``."""
    if o.lora is None:
        if o.lora_alpha is not None or o.lora_targets != "all-linear" or o.lora_dropout:
            raise BadRequest("--lora-alpha, --lora-targets and --lora-dropout go with --lora R")
        return None
    targets = o.lora_targets
    if isinstance(targets, str) and targets != "all-linear":
        targets = tuple(name.strip() for name in targets.split(",") if name.strip())
    return Lora(o.lora, o.lora_alpha, tuple(targets) if not isinstance(targets, str) else targets, o.lora_dropout)


def _allocator_of(hardware: str | None) -> str:
    """The allocator semantics of a device: its kind (cpu or cuda); cuda without a device."""
    if hardware is None:
        return Allocator.CUDA
    from nncost.hardware.calibration import resolve_device

    return resolve_device(hardware.strip().lower(), calibrate=False).kind


def _training_layout(o: Any) -> bool:
    """Whether an option that only a training step's layout takes was given."""
    return bool(o.pipeline_parallel > 1 or o.micro_batches > 1 or o.sequence_parallel or o.plan
                or o.global_batch is not None)
