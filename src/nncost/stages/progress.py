"""Where the stages say what they do: the command line shows spinners and bars, the API stays quiet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from nncost.compat import StrEnum


class Counts(StrEnum):
    """What a bar counts."""

    PASSES = "passes"  # timed forwards
    SIMULATIONS = "simulations"  # steps simulated by a search of the largest batch or the most sequences
    LAYOUTS = "layouts"  # layouts a plan has considered


class Progress(Protocol):
    """Where messages about slow stages go: the CLI shows spinners and bars, the API stays quiet."""

    def __call__(self, message: str) -> None: ...

    def step(self, message: str, slow: bool = True) -> AbstractContextManager[Any]: ...

    def bar(self, message: str, total: int | None, *, counts: Counts) -> AbstractContextManager[Callable[[], None]]:
        """A bar of ``total`` steps (None: no known end) counting ``counts``; the yielded callable
        advances it by one."""


class Quiet:
    """Progress that says nothing."""

    def __call__(self, message: str) -> None:
        pass

    @contextmanager
    def step(self, message: str, slow: bool = True) -> Iterator[None]:
        yield

    @contextmanager
    def bar(self, message: str, total: int | None, *, counts: Counts) -> Iterator[Callable[[], None]]:
        yield lambda: None
