"""``nncost MODEL [--input 3x224x224 ...]``: the command line.

Every user error is one sentence on stderr and exit status 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from nncost import __version__
from nncost.errors import BadRequest, NeedsWeights, NncostError

FORMATS = ("table", "json", "csv", "markdown")
DEVICES = ("meta", "cpu", "cuda")
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
        epilog="MODEL: resnet50 | torchvision:NAME | timm:NAME | hf:gpt2 | path/to/file.py:callable | pkg.mod:callable",
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--input", "-i", action="append", type=parse_size, metavar="CxHxW",
                        help="input size without the batch dimension; repeat for several inputs")
    parser.add_argument("--batch", "-b", type=positive, default=1, help="batch size (default 1)")
    parser.add_argument("--seq", type=positive, default=None,
                        help=f"sequence length of token inputs for hf: models (default {DEFAULT_SEQ})")
    parser.add_argument("--dtype", default=None, help="parameter and input dtype, e.g. float16, bfloat16")
    parser.add_argument("--depth", "-d", type=non_negative, default=None, help="fold the layer tree below this depth")
    parser.add_argument("--format", "-f", choices=FORMATS, default="table")
    parser.add_argument("--device", choices=DEVICES, default="meta",
                        help="meta (default: no weights, no memory) or a real run on cpu/cuda")
    parser.add_argument("--explain", metavar="LAYER", help="show the formulas behind one layer's figures")
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
    from nncost.api import profile, resolve_dtype
    from nncost.models import resolve

    progress = Progress()
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
    sizes = args.input or spec.default_inputs
    if not spec.token_input and not sizes:
        raise BadRequest(f"{spec.label} needs an input size: --input CxHxW")

    def profile_on(build_device: str, run_device: str) -> Any:
        with progress.step(f"building {spec.label} on {build_device}", slow=build_device != "meta"):
            model = spec.build(build_device)
        with progress.step(f"profiling {spec.label}", slow=run_device != "meta"):
            if spec.token_input:
                import torch

                ids = torch.zeros((args.batch, args.seq or DEFAULT_SEQ), dtype=torch.long, device=build_device)
                tokens = {"input_ids": ids, "decoder_input_ids": ids} if spec.encoder_decoder else {"input_ids": ids}
                return profile(model, kwargs=tokens, dtype=dtype, device=run_device, name=spec.label,
                               progress=progress)
            return profile(model, sizes, batch_size=args.batch, dtype=dtype, device=run_device,
                           name=spec.label, progress=progress)

    if args.device == "meta":
        try:
            report = profile_on("meta", "meta")
        except NeedsWeights as exc:
            progress(f"{exc}".split(". ")[0] + "; building the model with weights on CPU")
            report = profile_on("cpu", "meta")
    else:
        report = profile_on("cpu" if args.device == "cpu" else args.device, args.device)

    if args.explain:
        return report.explain(args.explain)
    if args.format == "json":
        return report.to_json()
    if args.format == "csv":
        return report.to_csv()
    if args.format == "markdown":
        return report.to_markdown(depth=args.depth)
    return report.table(depth=args.depth)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
