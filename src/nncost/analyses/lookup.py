"""Finding things by name, with close-name suggestions when the name is wrong."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from nncost.errors import NncostError


def suggestions(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    known = list(dict.fromkeys(known))
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    if not close:
        lowered = name.lower()
        close = [k for k in known if lowered in k.lower()][:n]
    return close


def unknown_layer(name: str, known: Iterable[str]) -> NncostError:
    close = suggestions(name, [k for k in known if k])
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return NncostError(f"no layer named {name!r}{hint}")
