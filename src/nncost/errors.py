"""Errors nncost reports to a user: one clear sentence each, no traceback needed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NncostError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""


class ModelNotFound(NncostError):
    """A model name or path that nncost cannot resolve."""


class InputMismatch(NncostError):
    """The model rejected the inputs; the message names the layer and the shapes it got."""

    def __init__(self, message: str, *, layer: str, layer_type: str, input_shapes: list[tuple[int, ...]]) -> None:
        super().__init__(message)
        self.layer = layer
        self.layer_type = layer_type
        self.input_shapes = input_shapes


class NeedsWeights(NncostError):
    """Meta execution cannot go on and the model has no real weights to run with."""


class BadRequest(NncostError):
    """Arguments that cannot describe a valid run (batch 0, an unknown dtype, ...)."""


class ModelFileError(NncostError):
    """A model file nncost cannot read: corrupt, truncated, an unsupported opset, missing external data."""


class NotEnoughMemory(NncostError):
    """A real run that needs more memory than the machine has: refused before it starts, or stopped
    when an allocation failed."""


class CalibrationError(NncostError):
    """The ``cpu`` could not be calibrated plausibly: its figures broke physical bounds on every attempt."""


class NncostWarning(UserWarning):
    """A caveat about the figures of a run that still goes on; the CLI prints it as one line."""


def did_you_mean(name: str, known: Iterable[str], *, prefix: str = "", n: int = 5) -> str:
    """``"; did you mean 'resnet34', 'resnet18'?"`` for the names in ``known`` close to ``name``
    (each shown with ``prefix``), or ``""`` when none is close.  Every "unknown X" message ends
    with it, so a misspelt model, layer or device is answered the same way everywhere."""
    names = [k for k in dict.fromkeys(known) if k]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        lowered = name.lower()
        close = [k for k in names if lowered and lowered in k.lower()][:n]
    return f"; did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for messages
    that quote what the user's code or a kernel said."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
