"""``nncost MODEL [--input 3x224x224 ...]`` and ``nncost compare A B [C ...]``: the command line.

Every user error is one sentence on stderr and exit status 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from nncost import __version__
from nncost.analyses.sharding import STRATEGIES
from nncost.errors import NncostError, NncostWarning
from nncost.hardware.catalogue import names as hardware_names
from nncost.precision import PRECISIONS
from nncost.quantization import KV_CACHE_DTYPES, WEIGHT_FORMATS
from nncost.request import (
    ALLOCATORS,
    DEFAULT_REPEATS,
    DEFAULT_SEQ,
    DEVICES,
    FIT_DEVICE,
    WARMUP,
    NamedSize,
)
from nncost.simulation.optimizers import OPTIMIZERS

if TYPE_CHECKING:
    pass

FORMATS = ("table", "json", "csv", "markdown")
COMPARE_FORMATS = ("text", "table", "json", "csv", "markdown")  # text and table are the same view
MODEL_FORMS = ("resnet50 | torchvision:NAME | timm:NAME | hf:gpt2 | hf:ORG/NAME | path/to/config_dir | config.json"
               " | path/to/file.py:callable | pkg.mod:callable | x.pt2 | x.pt (TorchScript) | x.onnx")
TRUST_PICKLE_HELP = ("unpickle a module saved whole with torch.save(model); unpickling runs code stored in the "
                     "file, so only for files you trust (a state dict or a TorchScript archive needs no trust)")


class UsageError(NncostError):
    """A flag or value the parser rejects; the message ends with where the help is."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one sentence and a hint, not the usage block: run() prints it
    and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        # "argument --batch/-b: ..." names the flag once
        message = re.sub(r"^argument (--[\w-]+)/-\w+:", r"argument \1:", message)
        raise UsageError(f"{message} ({self.prog} --help)")


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


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments ``nncost MODEL`` and ``nncost compare`` share: inputs, dtype, device, memory."""
    parser.add_argument("--input", "-i", action="append", type=parse_input, metavar="CxHxW",
                        help="input size without the batch dimension (default: the model's own); repeat for "
                             "several inputs; for a .onnx model also NAME=1x3x224x224")
    parser.add_argument("--batch", "-b", type=positive, default=1, help="batch size (default 1)")
    parser.add_argument("--seq", type=positive, default=None,
                        help=f"sequence length of token inputs for hf: models (default {DEFAULT_SEQ})")
    parser.add_argument("--dtype", default=None,
                        help="parameter and input dtype, e.g. float16, bfloat16 (default: a transformers config's "
                             "own, else float32)")
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="meta (default: no weights, no memory) or a real run on cpu/cuda")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    parser.add_argument("--ignore-context-limit", action="store_true",
                        help="cost a sequence (--seq, or --prompt plus --new-tokens) longer than the context a "
                             "transformers config allows (max_position_embeddings, n_positions, or its rope "
                             "scaling's), e.g. a rope-scaling what-if; refused by default")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nncost",
        description="What a neural network costs, layer by layer: shapes, parameters, MACs, FLOPs, memory.",
        epilog=f"MODEL: {MODEL_FORMS}. Several models side by side: nncost compare A B [C ...] (--help there)",
    )
    parser.add_argument("model", metavar="MODEL", help="the model to profile (forms below)")
    add_shared_arguments(parser)
    parser.add_argument("--depth", "-d", type=non_negative, default=None, help="fold the layer tree below this depth")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table",
                        help="table (default, for the terminal), json (the whole document), csv or markdown")
    parser.add_argument("--explain", metavar="LAYER", help="show the formulas behind one layer's figures")
    parser.add_argument("--html", metavar="PATH",
                        help="also write a self-contained HTML report (tree, charts, memory timeline) to PATH")
    parser.add_argument("--config", action="append", metavar="KEY=VALUE",
                        help="override a value of a transformers config (a JSON literal, else a string), e.g. "
                             "num_hidden_layers=2; dots reach nested configs: text_config.num_hidden_layers=2; "
                             "repeatable")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="build a custom architecture (auto_map) from its repository's Python code, which runs "
                             "that code on this machine")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="fp32 (default: a transformers config's own dtype, else float32; given, float32 "
                             "whatever the config says); bf16/fp16 run the model in that dtype; *-mixed: autocast "
                             "with fp32 master weights (matrix work at the 16-bit peak)")
    for add in (_quantization_flags, _time_flags, _generation_flags, _adapter_flags, _memory_flags,
                _parallel_flags, _training_run_flags):
        add(parser)
    parser.add_argument("--version", action="version", version=f"nncost {__version__}",
                        help="print nncost's version and exit")
    return parser


def _quantization_flags(parser: argparse.ArgumentParser) -> None:
    """What-ifs of narrower weights and cache."""
    quantized = parser.add_argument_group("quantization", "what-ifs: the model's weights and cache stored narrower")
    quantized.add_argument("--weights", choices=WEIGHT_FORMATS, default=None,
                           help="store the weights of the matrix products (every Linear, lm_head included) in this "
                                "format, scales and zero points counted: int4/int8/nf4 compute in the activations' "
                                "dtype, int8-dynamic in int8, fp8 in fp8 where the device has it (docs/llm.md). nf4 "
                                "with --lora is QLoRA: bitsandbytes' Linear4bit base (lm_head kept), computing in "
                                "bf16, and a training step over it (docs/training.md)")
    quantized.add_argument("--group-size", type=positive, default=None, metavar="G",
                           help="elements per scale along the input dimension (int4: default 128; int8: default one "
                                "per output channel; nf4: the block, default 64; QLoRA: 32 to 4096, a power of 2)")
    quantized.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default=None,
                           help="with --prompt: store the KV cache in fp8, or int8 with a scale and zero point per "
                                "token and head")


def _time_flags(parser: argparse.ArgumentParser) -> None:
    """Roofline estimates and measured latency."""
    time = parser.add_argument_group("time", "roofline estimates on a device, and measured latency")
    time.add_argument("--hardware", metavar="NAME", default=None,
                      help=f"a device: {', '.join(hardware_names())} (calibrated here); adds per-layer time "
                           "estimates, and its memory is the budget a simulated step is set against")
    time.add_argument("--efficiency", type=efficiency, default=1.0,
                      help="fraction of the device's roofs reached (default 1.0: the datasheet figures)")
    time.add_argument("--measure-time", action="store_true",
                      help="run the model for real (random weights) and measure each layer's median latency")
    time.add_argument("--repeats", type=positive, default=DEFAULT_REPEATS,
                      help=f"timed passes for --measure-time (default {DEFAULT_REPEATS}, after {WARMUP} warm-up)")
    time.add_argument("--progress", action="store_true", help="progress bars on stderr even when it is not a terminal")


def _generation_flags(parser: argparse.ArgumentParser) -> None:
    """Generation as model.generate runs it."""
    generation = parser.add_argument_group("generation", "prefill and decode as model.generate runs them (hf: models)")
    generation.add_argument("--prompt", type=positive, metavar="P", default=None,
                            help="prompt tokens per sequence; with --new-tokens, cost generation instead of one "
                                 "forward (--batch sequences at once)")
    generation.add_argument("--new-tokens", type=positive, metavar="M", default=None,
                            help="tokens generated per sequence: the prefill yields the first, M-1 decode steps the "
                                 "rest")


def _adapter_flags(parser: argparse.ArgumentParser) -> None:
    """LoRA adapters."""
    adapters = parser.add_argument_group("fine-tuning", "LoRA adapters put on by peft (pip install 'nncost[peft]')")
    adapters.add_argument("--lora", type=positive, metavar="R", default=None,
                          help="LoRA adapters of rank R on a frozen base, as peft's get_peft_model puts them; with "
                               "--weights nf4, over a 4-bit base (QLoRA)")
    adapters.add_argument("--lora-alpha", type=positive, metavar="A", default=None,
                          help="LoRA scale numerator, lora_alpha (default 2R)")
    adapters.add_argument("--lora-targets", metavar="NAMES", default="all-linear",
                          help="all-linear (default: every linear layer but the output one) or module names, "
                               "e.g. q_proj,v_proj")
    adapters.add_argument("--lora-dropout", type=float, metavar="P", default=0.0,
                          help="dropout on the adapters' input (default 0)")


def _memory_flags(parser: argparse.ArgumentParser) -> None:
    """The memory of one step."""
    memory = parser.add_argument_group("memory", "simulate the memory of one training step or inference pass")
    memory.add_argument("--train", action="store_true", help="a training step: forward, loss, backward, optimizer")
    memory.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam", help="with --train (default adam)")
    memory.add_argument("--checkpointing", action="store_true",
                        help="with --train: activation checkpointing of the model's repeated blocks")
    memory.add_argument("--fit", metavar="BUDGET", nargs="?", const=FIT_DEVICE,
                        help="the largest batch whose peak fits, e.g. 24GiB or 80GB (a plain number is bytes); "
                             "alone: the --hardware device's memory. With --prompt: the most sequences generated at "
                             "once that fit")
    memory.add_argument("--allocator", choices=ALLOCATORS, default=None,
                        help="allocator semantics of the simulation: cpu (exact bytes) or cuda (512-byte blocks, "
                             "the caching allocator replayed); default: that of --hardware's device, else cuda")
    memory.add_argument("--gpus", type=positive, default=1,
                        help="GPUs in all, with --sharding: data-parallel, or GPUS ÷ (T·P) copies under "
                             "--tensor-parallel T and --pipeline-parallel P")
    memory.add_argument("--sharding", choices=STRATEGIES, default="none",
                        help="per-GPU memory under DDP, ZeRO-1/2/3 or FSDP full shard, over --gpus N (2 or more)")
    memory.add_argument("--plot", metavar="PNG", help="draw the memory timeline of the step into a PNG file")
    memory.add_argument("--measure", action="store_true",
                        help="also run one real step (on the CPU with cpu allocator semantics, else on the GPU) and "
                             "print the measured peak beside the estimate")


def _parallel_flags(parser: argparse.ArgumentParser) -> None:
    """A step or a generation split over GPUs."""
    parallel = parser.add_argument_group(
        "parallelism", "split the model over GPUs in the Megatron layout (hf: language models); every figure one GPU's")
    parallel.add_argument("--tensor-parallel", type=positive, metavar="T", default=1,
                          help="split each transformer block over T GPUs of a node (heads and MLP columns split, "
                               "two all-reduces per block on the --hardware device's NVLink): with --prompt, "
                               "generation; with --train, a training step (--gpus GPUS in all)")
    parallel.add_argument("--pipeline-parallel", type=positive, metavar="P", default=1,
                          help="with --train: P pipeline stages of consecutive blocks under the 1F1B schedule "
                               "(GPUS ÷ (T·P) data-parallel copies)")
    parallel.add_argument("--micro-batches", type=positive, metavar="M", default=1,
                          help="with --train: M micro-batches of --batch samples a step on each data-parallel copy "
                               "(the pipeline's bubble is (P−1)/M; global batch = batch × M × GPUS ÷ (T·P))")
    parallel.add_argument("--sequence-parallel", action="store_true",
                          help="with --tensor-parallel T --train: also split the norms' and residuals' activations "
                               "along the sequence (reduce-scatter and all-gather instead of all-reduce)")
    parallel.add_argument("--plan", action="store_true",
                          help="with --train, --hardware and --gpus: search tensor × pipeline × data parallelism, "
                               "micro-batches, checkpointing and the ZeRO stage; print the five fastest layouts "
                               "that fit, and why the others do not")
    parallel.add_argument("--global-batch", type=positive, metavar="B", default=None,
                          help="with --plan: only layouts whose batch × micro-batches × data-parallel GPUs is B "
                               "samples")


def _training_run_flags(parser: argparse.ArgumentParser) -> None:
    """A whole training run."""
    run = parser.add_argument_group("training run", "a whole run: the training step repeated over a run's tokens")
    run.add_argument("--tokens", type=token_count, metavar="N", default=None,
                     help="with --train, --seq and --hardware: train on N tokens (2T, 300B, 1.5e12): steps, "
                          "FLOPs, time, GPU-hours (global batch = --batch × --gpus; under --tensor-parallel or "
                          "--pipeline-parallel, --batch × --micro-batches × the data-parallel GPUs)")
    run.add_argument("--price-per-gpu-hour", type=price, metavar="X", default=None,
                     help="with --tokens: the price of one GPU-hour, for the run's cost")
    run.add_argument("--mfu", type=efficiency, metavar="F", default=None,
                     help="with --tokens: the fraction of the dense matrix peak a step achieves "
                          "(default: the median of published runs, docs/training.md)")


def build_compare_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nncost compare",
        description="Several models side by side: totals, ratios to the first model, and the layers they share.",
        epilog=f"MODEL: {MODEL_FORMS}",
    )
    parser.add_argument("models", metavar="MODEL", nargs="*", help="two or more models; the first is the reference")
    add_shared_arguments(parser)
    parser.add_argument("--train", action="store_true", help="also compare the peak memory of one training step")
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam", help="with --train (default adam)")
    parser.add_argument("--allocator", choices=ALLOCATORS, default=None,
                        help="with --train: allocator semantics of the training peak (default cuda)")
    parser.add_argument("--stage-depth", type=positive, default=1,
                        help="depth of the layers matched by name across models (default 1)")
    parser.add_argument("--format", "-f", choices=COMPARE_FORMATS, default="text",
                        help="text (default; also 'table'), json, csv or markdown")
    return parser


class Progress:
    """Messages about slow steps on stderr: a spinner on a terminal, plain lines otherwise.

    Long counted work (timed passes, batch searches) gets a progress bar, on stderr, when stderr
    is a terminal or when ``forced`` (``--progress``).
    """

    def __init__(self, forced: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.forced = forced
        self._status: Any = None

    @property
    def shows_bars(self) -> bool:
        return bool(self.console.is_terminal or self.forced)

    @contextmanager
    def bar(self, message: str, total: int | None, *, counts: str) -> Iterator[Callable[[], None]]:
        """A bar that the yielded callable advances by one (``total`` None: a count with no end);
        where bars are not wanted, one line for the slow work instead."""
        if not self.shows_bars:
            print(f"nncost: {message}", file=sys.stderr, flush=True)
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        with Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=self.console, transient=not self.forced) as bars:
            task = bars.add_task(f"{message} ({counts})", total=total)
            yield lambda: bars.advance(task)

    def __call__(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)
            self.console.log(message)
        else:
            print(f"nncost: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def step(self, message: str, slow: bool = True) -> Iterator[None]:
        """A spinner on a terminal; elsewhere one line, and only for steps that may be slow."""
        if not self.console.is_terminal:
            if slow:
                print(f"nncost: {message}", file=sys.stderr, flush=True)
            yield
            return
        with self.console.status(message) as status:
            self._status = status
            try:
                yield
            finally:
                self._status = None


def run(argv: Sequence[str] | None = None, out: Callable[[str], None] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    compare = words[:1] == ["compare"]
    try:
        args = (build_compare_parser() if compare else build_parser()).parse_args(words[1:] if compare else words)
    except UsageError as exc:
        print(f"nncost: error: {exc}", file=sys.stderr)
        return 2
    args.command = "nncost " + shlex.join(words)
    write = out or (lambda text: sys.stdout.write(text if text.endswith("\n") else text + "\n"))
    try:
        with _caveats_in_one_line():
            write(_main(args))
        return 0
    except NncostError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"nncost: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nncost: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"nncost: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


@contextmanager
def _caveats_in_one_line() -> Iterator[None]:
    """nncost's own warnings (:class:`NncostWarning`) as one line on stderr, without Python's
    file, line and source; other warnings as Python shows them."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, NncostWarning):
            print(f"nncost: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _main(args: argparse.Namespace) -> str:
    """``nncost MODEL`` and ``nncost compare A B ...``: the request the flags describe, run, and
    its result rendered as the output flags ask."""
    from nncost.pipeline import run as run_request
    from nncost.render.output import Output, check, render
    from nncost.request import OPTIONS, build_request

    output = Output(format=args.format, explain=getattr(args, "explain", None), html=getattr(args, "html", None),
                    plot=getattr(args, "plot", None), command=args.command, depth=getattr(args, "depth", None))
    options = {key: value for key, value in vars(args).items() if key in OPTIONS}
    check(output)
    request = build_request(getattr(args, "model", None), **options)
    return render(run_request(request, Progress(forced=getattr(args, "progress", False))), output)


def main() -> None:
    # torchao (the quant extra), imported by transformers when installed, registers enum constants
    # with torch's pytree, which logs a deprecation warning for each on every run of the command
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    sys.exit(run())


if __name__ == "__main__":
    main()
