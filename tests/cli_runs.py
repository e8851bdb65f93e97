"""The command line run inside a test: its exit status, and what it printed."""

from __future__ import annotations

import json
from typing import Any

from nncost.cli import run


def cli(*argv: str) -> tuple[int, str]:
    """The exit status of ``nncost ARGV`` and everything it printed."""
    chunks: list[str] = []
    code = run(list(argv), out=chunks.append)
    return code, "".join(chunks)


def cli_json(*argv: str) -> dict[str, Any]:
    """The JSON document of ``nncost ARGV --format json``, which must succeed."""
    code, text = cli(*argv, "--format", "json")
    assert code == 0
    document: dict[str, Any] = json.loads(text)
    return document
