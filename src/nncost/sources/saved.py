"""Files written by ``torch.save`` and ``torch.jit.save`` (``.pt``, ``.pth``): what they hold,
found without running any code stored in them.

- A **TorchScript archive** (``torch.jit.save``) holds its code as TorchScript, which
  ``torch.jit.load`` compiles without running Python: it is loaded and profiled.  Its compiled
  submodules take no hooks, so the whole program is one layer, with every operator counted.
- A **state dict** or a checkpoint of tensors holds weights and no architecture: nothing to run.
- A **module saved whole** (``torch.save(model)``) is a pickle: unpickling it imports and runs
  whatever the file names, so it is read only when the user says they trust the file.

What a pickle holds is read with :mod:`pickletools`, which lists its opcodes (the classes it
would rebuild among them) and executes nothing; ``torch.load(weights_only=True)`` then tells a
file of tensors from one of objects, with PyTorch's restricted unpickler.
"""

from __future__ import annotations

import io
import pickletools
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncost.errors import ModelFileError, ModelNotFound, first_line

TORCHSCRIPT = "torchscript"
WEIGHTS = "weights"
PICKLED = "pickled"
EXPORTED = "exported"

# Globals a pickle of tensors names: they rebuild tensors and containers, not objects.
_TENSOR_GLOBALS = ("torch._utils.", "collections.", "__builtin__.", "builtins.", "torch.serialization.",
                   "torch._tensor.")


@dataclass(frozen=True)
class SavedFile:
    """What a ``.pt`` file holds: ``kind`` is one of TORCHSCRIPT, WEIGHTS, PICKLED, EXPORTED;
    ``classes`` the classes its pickle would rebuild (the outermost first)."""

    path: Path
    kind: str
    classes: tuple[str, ...] = ()


def inspect_saved(path: str | Path) -> SavedFile:
    """What ``path`` holds, found without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"no such file: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                return SavedFile(path, TORCHSCRIPT)
            if any("serialized_exported_program" in n or n.endswith("/archive_format") for n in names):
                return SavedFile(path, EXPORTED)
            pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pickles:
                raise ModelFileError(f"{path} is a zip archive, but not one torch.save or torch.jit.save writes")
            classes = _classes(archive.read(pickles[0]))
    else:
        classes = _legacy_classes(path.read_bytes())
    return SavedFile(path, WEIGHTS if _only_tensors(path) else PICKLED, classes)


def _globals(data: bytes) -> list[str]:
    """The ``module.name`` of every global one pickle names, in order (read, not executed)."""
    found: list[str] = []
    strings: list[str] = []  # the strings pushed so far, for STACK_GLOBAL (protocol 4 and later)
    memo: dict[int, str] = {}  # memoised strings, by memo index
    memoised = 0
    top_is_string = False
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        pushed = isinstance(arg, str) and ("STRING" in op.name or "UNICODE" in op.name)
        if pushed:
            strings.append(str(arg))
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            index = memoised if op.name == "MEMOIZE" else int(str(arg))
            memoised += 1
            if top_is_string:
                memo[index] = strings[-1]
            pushed = top_is_string
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed = int(str(arg)) in memo
            if pushed:
                strings.append(memo[int(str(arg))])
        elif op.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
        top_is_string = pushed
    return found


def _classes(data: bytes) -> tuple[str, ...]:
    """The globals of a pickle that are not the helpers tensors are rebuilt with."""
    try:
        names = _globals(data)
    except Exception as exc:  # a truncated or corrupt pickle
        raise ModelFileError(f"cannot read the pickle inside the file: {exc}") from exc
    kept = [n for n in names if not n.startswith(_TENSOR_GLOBALS) and not n.endswith("Storage")]
    return tuple(dict.fromkeys(kept))


def _legacy_classes(data: bytes) -> tuple[str, ...]:
    """The classes of a file in torch.save's legacy format: a few pickles one after the other
    (magic number, protocol, system info, the object), then the raw storages."""
    stream = io.BytesIO(data)
    classes: list[str] = []
    for _ in range(4):
        start = stream.tell()
        try:
            for op, _arg, _pos in pickletools.genops(stream):
                if op.name == "STOP":
                    break
        except Exception as exc:
            if start == 0:
                raise ModelFileError("this is neither a zip archive nor a pickle: not a file torch.save "
                                     "writes") from exc
            break
        classes.extend(_classes(data[start:stream.tell()]))
    return tuple(dict.fromkeys(classes))


def _only_tensors(path: Path) -> bool:
    """Whether PyTorch's restricted unpickler (no code runs) reads the file: tensors, containers
    and plain values only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, map_location="meta", weights_only=True)
    except Exception:
        return False
    return True


class TorchScriptModule(nn.Module):
    """A plain module around a loaded TorchScript program, so that the capture has a root to
    attribute its operators to; it is named after the program's original class."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.scripted(*args, **kwargs)


def load_torchscript(path: str | Path) -> nn.Module:
    """The TorchScript program at ``path``, on the default device (``meta``: no weights read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            scripted = torch.jit.load(str(path), map_location=torch.get_default_device())
    except Exception as exc:
        raise ModelFileError(f"{path} looks like a TorchScript archive, but torch.jit.load failed: "
                             f"{first_line(exc)}") from exc
    name = str(getattr(scripted, "original_name", "") or "TorchScript")
    named = type(name if name.isidentifier() else "TorchScript", (TorchScriptModule,), {})
    return named(scripted)


def load_pickled(path: str | Path) -> nn.Module:
    """The module pickled whole at ``path``: this runs code the file names; only on request."""
    try:
        model = torch.load(str(path), map_location=torch.get_default_device(), weights_only=False)
    except Exception as exc:  # the classes it names cannot be imported here, or their code raised
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelFileError(f"unpickling {path} failed ({type(exc).__name__}: {text}); the classes it names "
                             "must be importable from here, as when it was saved") from exc
    if not isinstance(model, nn.Module):
        raise ModelNotFound(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    return model
