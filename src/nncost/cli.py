"""``nncost MODEL [--input 3x224x224 ...]``: the command line.

Every user error is one sentence on stderr and exit status 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from nncost import __version__
from nncost.analyses.sharding import STRATEGIES
from nncost.errors import BadRequest, NeedsWeights, NncostError
from nncost.memory.optimizers import OPTIMIZERS

if TYPE_CHECKING:
    import torch

    from nncost.models import ModelSpec
    from nncost.records.memory import MemoryReport
    from nncost.records.report import Report

FORMATS = ("table", "json", "csv", "markdown")
DEVICES = ("meta", "cpu", "cuda")
HARDWARE = ("cpu", "cuda")
DEFAULT_SEQ = 128


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


class NamedSize(NamedTuple):
    """``--input NAME=1x3x224x224``: the size of one named model input (ONNX files)."""

    name: str
    size: tuple[int, ...]


def parse_input(text: str) -> tuple[int, ...] | NamedSize:
    """``3x224x224``, or ``NAME=1x3x224x224`` for a named input of an ONNX model."""
    name, equals, size = text.rpartition("=")
    if not equals:
        return parse_size(text)
    if not name:
        raise argparse.ArgumentTypeError(f"input {text!r} has no name before '='")
    return NamedSize(name, parse_size(size))


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nncost",
        description="What a neural network costs, layer by layer: shapes, parameters, MACs, FLOPs, memory.",
        epilog="MODEL: resnet50 | torchvision:NAME | timm:NAME | hf:gpt2 | path/to/file.py:callable | pkg.mod:callable"
               " | model.onnx",
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--input", "-i", action="append", type=parse_input, metavar="CxHxW",
                        help="input size without the batch dimension; repeat for several inputs; "
                             "for a .onnx model also NAME=1x3x224x224")
    parser.add_argument("--batch", "-b", type=positive, default=1, help="batch size (default 1)")
    parser.add_argument("--seq", type=positive, default=None,
                        help=f"sequence length of token inputs for hf: models (default {DEFAULT_SEQ})")
    parser.add_argument("--dtype", default=None, help="parameter and input dtype, e.g. float16, bfloat16")
    parser.add_argument("--depth", "-d", type=non_negative, default=None, help="fold the layer tree below this depth")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table")
    parser.add_argument("--device", choices=DEVICES, default="meta",
                        help="meta (default: no weights, no memory) or a real run on cpu/cuda")
    parser.add_argument("--explain", metavar="LAYER", help="show the formulas behind one layer's figures")
    memory = parser.add_argument_group("memory", "simulate the memory of one training step or inference pass")
    memory.add_argument("--train", action="store_true", help="a training step: forward, loss, backward, optimizer")
    memory.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam", help="with --train (default adam)")
    memory.add_argument("--hardware", choices=HARDWARE, default=None,
                        help="allocator semantics of the memory figures (default cuda)")
    memory.add_argument("--checkpointing", action="store_true",
                        help="with --train: activation checkpointing of the model's repeated blocks")
    memory.add_argument("--fit", metavar="BUDGET", help="the largest batch whose peak fits, e.g. 24GiB")
    memory.add_argument("--gpus", type=positive, default=1, help="data-parallel GPUs, with --sharding")
    memory.add_argument("--sharding", choices=STRATEGIES, default="none",
                        help="per-GPU memory under DDP, ZeRO-1/2/3 or FSDP full shard")
    memory.add_argument("--plot", metavar="PNG", help="draw the memory timeline of the step into a PNG file")
    memory.add_argument("--measure", action="store_true",
                        help="also run one real step on the CPU and print the measured peak beside the estimate")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"nncost {__version__}")
    return parser


class Progress:
    """Messages about slow steps on stderr: a spinner on a terminal, plain lines otherwise."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._status: Any = None

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
    parser = build_parser()
    args = parser.parse_args(argv)
    write = out or (lambda text: sys.stdout.write(text if text.endswith("\n") else text + "\n"))
    try:
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


def _main(args: argparse.Namespace) -> str:
    from nncost.api import resolve_dtype
    from nncost.models import is_onnx, resolve

    if is_onnx(args.model):
        return _render(args, _profile_onnx(args), None)
    if any(isinstance(size, NamedSize) for size in args.input or ()):
        raise BadRequest("named inputs (--input NAME=SIZE) are for .onnx models; give sizes as --input CxHxW")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BadRequest("--device cuda was asked for, but no CUDA device is available")
    spec = resolve(args.model)
    dtype = resolve_dtype(args.dtype)
    if spec.token_input and args.input:
        raise BadRequest(f"{spec.label} takes token ids: give --seq N, not --input")
    if args.seq is not None and not spec.token_input:
        raise BadRequest(f"--seq is for token models (hf:NAME); {spec.label} takes --input CxHxW")
    if not spec.token_input and not (args.input or spec.default_inputs):
        raise BadRequest(f"{spec.label} needs an input size: --input CxHxW")
    run = Run(args, spec, dtype, Progress())
    report = run.profile()
    memory_report = run.memory() if _wants_memory(args) else None
    return _render(args, report, memory_report)


def _profile_onnx(args: argparse.Namespace) -> Report:
    """An ONNX file: shapes from the file and ``--input``; no PyTorch run, so no memory step."""
    from nncost.api import profile_onnx

    unsupported = [flag for flag, given in (
        ("--train and the memory options", _wants_memory(args)), ("--seq", args.seq is not None),
        ("--dtype", args.dtype is not None), ("--device", args.device != "meta"),
    ) if given]
    if unsupported:
        raise BadRequest(f"{unsupported[0]} cannot be used with an ONNX file; it is read as stored")
    named = [size for size in args.input or () if isinstance(size, NamedSize)]
    bare = [size for size in args.input or () if not isinstance(size, NamedSize)]
    if bare and (named or len(bare) > 1):
        raise BadRequest("give several ONNX inputs by name: --input NAME=1x3x224x224 (repeatable)")
    inputs: dict[str, tuple[int, ...]] | tuple[int, ...] | None = bare[0] if bare else (
        {size.name: size.size for size in named} or None)
    return profile_onnx(args.model, inputs, batch_size=args.batch if args.batch != 1 else None)


def _wants_memory(args: argparse.Namespace) -> bool:
    return bool(args.train or args.hardware or args.measure or args.fit or args.checkpointing or args.plot
                or args.sharding != "none" or args.gpus > 1)


class Run:
    """One CLI invocation: builds the model where it must, and keeps it for the memory steps."""

    def __init__(self, args: argparse.Namespace, spec: ModelSpec, dtype: torch.dtype | None,
                 progress: Progress) -> None:
        self.args, self.spec, self.dtype, self.progress = args, spec, dtype, progress
        self.model: torch.nn.Module | None = None

    def inputs(self, device: str) -> dict[str, Any]:
        """The keyword arguments of ``profile``/``memory`` that describe the example input."""
        args, spec = self.args, self.spec
        if not spec.token_input:
            return {"input_size": args.input or spec.default_inputs, "batch_size": args.batch}
        import torch

        ids = torch.zeros((args.batch, args.seq or DEFAULT_SEQ), dtype=torch.long, device=device)
        return {"kwargs": {"input_ids": ids, "decoder_input_ids": ids} if spec.encoder_decoder else {"input_ids": ids}}

    def profile(self) -> Report:
        device = self.args.device
        if device != "meta":
            return self._profile_on(device, device)
        try:
            return self._profile_on("meta", "meta")
        except NeedsWeights as exc:
            self.progress(f"{exc}".split(". ")[0] + "; building the model with weights on CPU")
            return self._profile_on("cpu", "meta")

    def _profile_on(self, build_device: str, run_device: str) -> Report:
        from nncost.api import profile

        label = self.spec.label
        with self.progress.step(f"building {label} on {build_device}", slow=build_device != "meta"):
            model = self.model = self.spec.build(build_device)
        with self.progress.step(f"profiling {label}", slow=run_device != "meta"):
            return profile(model, dtype=self.dtype, device=run_device, name=label, progress=self.progress,
                           **self.inputs(build_device))

    def memory(self) -> MemoryReport:
        from nncost.api import memory
        from nncost.capture.placement import model_device
        from nncost.memory.measure import measure_cpu_peak

        args, label, model = self.args, self.spec.label, self.model
        assert model is not None, "profile() builds the model first"
        with self.progress.step(f"simulating the memory of {label}", slow=bool(args.fit)):
            report = memory(model, dtype=self.dtype, name=label, mode="train" if args.train else "infer",
                            optimizer=args.optimizer, hardware=args.hardware or "cuda", gpus=args.gpus,
                            sharding=args.sharding, fit=args.fit, checkpointing=args.checkpointing,
                            **self.inputs(str(model_device(model))))
        if args.plot:
            report.plot(args.plot)
        if args.measure:
            if model_device(model).type == "meta":
                with self.progress.step(f"building {label} with weights on cpu for --measure"):
                    model = self.spec.build("cpu")
            with self.progress.step("running one real step on the CPU"):
                inputs = self.inputs("cpu")
                report.measured_peak_bytes = measure_cpu_peak(
                    model, tuple(_size_inputs(inputs)), inputs.get("kwargs", {}), mode=report.mode,
                    optimizer=args.optimizer,
                )
        return report


def _render(args: argparse.Namespace, report: Report, memory_report: MemoryReport | None) -> str:
    if args.explain:
        return report.explain(args.explain)
    if args.format == "json":
        data = report.to_dict()
        if memory_report is not None:
            data["memory"] = memory_report.to_dict()
            if memory_report.mode == "train":
                data["totals"]["backward_macs"] = memory_report.backward_macs
                data["totals"]["backward_flops"] = memory_report.backward_flops
        return json.dumps(data, indent=2)
    if args.format == "csv":
        return report.to_csv()
    if args.format == "markdown":
        return report.to_markdown(depth=args.depth)
    text = report.table(depth=args.depth)
    return text + ("\n" + str(memory_report) if memory_report is not None else "")


def _size_inputs(inputs: dict[str, Any]) -> list[Any]:
    """Meta tensors for ``input_size`` specs, as ``profile`` builds them."""
    from nncost.capture.inputs import sizes_to_inputs

    if "input_size" not in inputs:
        return []
    return list(sizes_to_inputs(inputs["input_size"], inputs["batch_size"], None))


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
