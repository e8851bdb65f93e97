"""``nncost MODEL [--input 3x224x224 ...]`` and ``nncost compare A B [C ...]``: the command line.

It only parses: the commands and their options are declared in :mod:`nncost.request`, which
builds the request; :mod:`nncost.render.output` shows its result.

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
from nncost.errors import NncostError, NncostWarning
from nncost.render.output import FORMATS
from nncost.request import COMMANDS

if TYPE_CHECKING:
    from nncost.request import Request
    from nncost.stages.progress import Counts

MODEL_FORMS = ("resnet50 | torchvision:NAME | timm:NAME | hf:gpt2 | hf:ORG/NAME | path/to/config_dir | config.json"
               " | path/to/file.py:callable | pkg.mod:callable | x.pt2 | x.pt (TorchScript) | x.onnx")

class UsageError(NncostError):
    """A flag or value the parser rejects; the message ends with where the help is."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one sentence and a hint, not the usage block: run() prints it
    and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        # "argument --batch/-b: ..." names the flag once
        message = re.sub(r"^argument (--[\w-]+)/-\w+:", r"argument \1:", message)
        raise UsageError(f"{message} ({self.prog} --help)")


def build_parser(name: str = "") -> argparse.ArgumentParser:
    """The parser of ``nncost MODEL`` (``name`` ``""``) or of ``nncost NAME``: the command's
    options as :data:`nncost.request.COMMANDS` declares them, then what is printed and written."""
    command = COMMANDS[name]
    others = " | ".join(f"nncost {other} ... (--help there)" for other in COMMANDS if other)
    parser = Parser(prog=f"nncost {name}".strip(), description=command.description,
                    epilog=f"MODEL: {MODEL_FORMS}." + (f" Other commands: {others}" if not name else ""))
    parser.add_argument(*command.positional.names, **command.positional.settings)
    for group in command.groups:
        into: Any = parser.add_argument_group(group.title, group.description) if group.title else parser
        for option in group.flags:
            into.add_argument(*option.names, **option.settings)
    output = parser.add_argument_group("output", "what is printed, and the files written beside it")
    output.add_argument("--format", "-f", choices=FORMATS, default="table",
                        help="table (default, for the terminal; also 'text'), json (the whole document), csv or "
                             "markdown")
    output.add_argument("--explain", metavar="LAYER", help="show the formulas behind one layer's figures")
    output.add_argument("--html", metavar="PATH",
                        help="also write a self-contained HTML report of every section (tree, charts, memory "
                             "timeline) to PATH")
    output.add_argument("--progress", action="store_true",
                        help="progress bars on stderr even when it is not a terminal")
    output.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"nncost {__version__}",
                        help="print nncost's version and exit")
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    return build_parser("compare")


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
    def bar(self, message: str, total: int | None, *, counts: Counts) -> Iterator[Callable[[], None]]:
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
    name = words[0] if words and words[0] in COMMANDS else ""
    try:
        args = build_parser(name).parse_args(words[1:] if name else words)
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

    output = Output(format=args.format, explain=getattr(args, "explain", None), html=getattr(args, "html", None),
                    plot=getattr(args, "plot", None), command=args.command, depth=getattr(args, "depth", None))
    check(output)
    return render(run_request(request_of(args), Progress(forced=getattr(args, "progress", False))), output)


def request_of(args: argparse.Namespace) -> Request:
    """The request that parsed flags describe (:func:`nncost.request.build_request`)."""
    from nncost.request import OPTIONS, build_request

    return build_request(getattr(args, "model", None),
                         **{key: value for key, value in vars(args).items() if key in OPTIONS})


def main() -> None:
    # torchao (the quant extra), imported by transformers when installed, registers enum constants
    # with torch's pytree, which logs a deprecation warning for each on every run of the command
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    sys.exit(run())


if __name__ == "__main__":
    main()
