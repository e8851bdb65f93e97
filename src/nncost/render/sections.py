"""What every renderer shares about a result's sections: their names, their order, and the line
that names a section a renderer cannot show.

Each renderer keeps one small table from a section's name to the function that shows it, and
walks the result's sections in order.  A section's name is its type's ``SECTION`` (the key it
goes under in the JSON document), else its class name in snake case, so a new kind of section
appears in the JSON without a renderer of its own and is named, never dropped, by the others.
Records are not imported here: a record's thin ``to_*`` methods import the renderers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

JSON_HINT = "see --format json"


def name(section: Any) -> str:
    """``section``'s name: ``MemoryReport.SECTION`` is ``"memory"``; a ``ServingReport`` without
    one is ``"serving_report"``."""
    kind = type(section)
    named = getattr(kind, "SECTION", None)
    return named if isinstance(named, str) else re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()


def sections(result: Any) -> tuple[Any, ...]:
    """The sections of a :class:`~nncost.records.result.Result`, or a record alone as the one
    section of its result (``report.to_json()``)."""
    held = getattr(result, "sections", None)
    return tuple(held) if isinstance(held, tuple) else (result,)


def not_shown(section: Any, where: str) -> str:
    """The line a renderer writes for a section it cannot show: ``serving: not shown in CSV; see
    --format json``."""
    return f"{name(section)}: not shown {where}; {JSON_HINT}"


@dataclass(frozen=True)
class Sections:
    """Sections shown together, as a result holds them, for a renderer called with records
    rather than a result (``report.to_html(memory=...)``)."""

    sections: tuple[Any, ...]
