"""Saved ``torch.export`` programs (``.pt2``), turned back into a module tree that nncost can run.

``torch.export.unflatten`` rebuilds the original module hierarchy (``layer1.0.conv1`` ...) from
the program's module call graph, so a ``.pt2`` file is profiled exactly like the module it was
exported from: the same capture, the same ATen rules, the same layer names.  The unflattened
submodules are ``InterpreterModule``s; each gets the class name of the module it was exported
from (read from the nodes' ``nn_module_stack``), so the report's ``type`` column reads ``Conv2d``,
not ``InterpreterModule``.  Only the freshly unflattened copy is touched, never a user's object.

The program itself is what was traced at export time: its train/eval behaviour is baked in,
and a dimension that was not exported as dynamic accepts only the size it was exported with.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncost.errors import ModelNotFound, first_line


@dataclass
class Exported:
    """A loaded program and the example inputs it was exported with, as ``(args, kwargs)``."""

    path: Path
    program: Any  # torch.export.ExportedProgram
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None

    def module(self) -> nn.Module:
        """A new module tree, with the original module names and class names."""
        try:
            module = torch.export.unflatten(self.program)
        except Exception as exc:
            raise ModelNotFound(f"{self.path}: the program cannot be turned back into modules "
                                f"({type(exc).__name__}: {first_line(exc)})") from exc
        rename_types(module, module_types(self.program))
        return module


class _Caught(logging.Handler):
    """Keeps the exceptions ``torch.export.load`` logs (with a full traceback) before it raises
    a generic error, so the message can name the real cause in one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextmanager
def _caught_export_logs() -> Iterator[_Caught]:
    logger = logging.getLogger("torch.export")
    caught = _Caught()
    handlers, propagate, level = logger.handlers, logger.propagate, logger.level
    logger.handlers, logger.propagate = [caught], False
    logger.setLevel(logging.WARNING)
    try:
        yield caught
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def load_exported(path: str | Path) -> Exported:
    """Read a file written by ``torch.export.save``; every failure is one clear ModelNotFound."""
    file = Path(path)
    if not file.is_file():
        raise ModelNotFound(f"no such file: {file}")
    if not zipfile.is_zipfile(file):
        raise ModelNotFound(f"{file} is not a saved torch.export program: not a zip archive "
                            "(truncated or corrupt? torch.export.save writes a zip)")
    with _caught_export_logs() as caught:
        try:
            # Loaded on the CPU whatever the default device: the archive's storages are CPU storages.
            with torch.device("cpu"):
                program = torch.export.load(str(file))
        except Exception as exc:
            cause = caught.errors[0] if caught.errors else exc
            raise ModelNotFound(f"{file} cannot be read as a saved torch.export program "
                                f"(truncated or corrupt?): {type(cause).__name__}: {first_line(cause)}") from exc
    if not isinstance(program, torch.export.ExportedProgram):
        raise ModelNotFound(f"{file} holds a {type(program).__name__}, not a torch.export ExportedProgram")
    example = program.example_inputs
    return Exported(path=file, program=program,
                    example_inputs=(tuple(example[0]), dict(example[1])) if example is not None else None)


def module_types(program: Any) -> dict[str, str]:
    """Module path -> class name of the original module, from the nodes' ``nn_module_stack``."""
    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
            types.setdefault(str(path).split("@")[0], name.rsplit(".", 1)[-1])
    return types


_NAMED: dict[tuple[type, str], type] = {}


def _named(base: type, name: str) -> type:
    key = (base, name)
    if key not in _NAMED:
        _NAMED[key] = type(name, (base,), {"__module__": "nncost.exported", "__qualname__": name})
    return _NAMED[key]


def rename_types(root: nn.Module, types: dict[str, str]) -> None:
    """Give each unflattened module the class name it had before export (a subclass of its own
    class, named so; behaviour unchanged)."""
    for path, module in root.named_modules(remove_duplicate=False):
        name = types.get(path)
        if name and type(module).__name__ != name:
            module.__class__ = _named(type(module), name)


