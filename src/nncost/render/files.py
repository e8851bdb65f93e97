"""The files renderers write (``--html``, ``--plot``): checked before the run that fills them."""

from __future__ import annotations

import os
from pathlib import Path

from nncost.errors import BadRequest


def writable(path: str | Path, what: str) -> Path:
    """``path`` as a file ``what`` (e.g. ``"the HTML report"``) can be written to, or a
    one-sentence :class:`BadRequest` naming why not: checked up front, so a typo in the path
    does not cost a whole run first."""
    target = Path(path)
    parent = target.parent
    problem = None
    if target.is_dir():
        problem = "it is a directory"
    elif not parent.exists():
        problem = f"the directory {parent} does not exist"
    elif not parent.is_dir():
        problem = f"{parent} is not a directory"
    elif not os.access(target if target.exists() else parent, os.W_OK):
        problem = "permission denied"
    if problem is not None:
        raise BadRequest(f"cannot write {what} to {path}: {problem}")
    return target


def write_failed(path: str | Path, what: str, exc: OSError) -> BadRequest:
    """The one sentence for an ``OSError`` met while writing ``what`` to ``path``."""
    return BadRequest(f"cannot write {what} to {path}: {exc.strerror or exc}")
