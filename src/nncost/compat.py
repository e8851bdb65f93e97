"""What differs between the Python versions nncost runs on (3.10 and later).

``StrEnum`` is the standard library's from Python 3.11: a member is its value, a ``str``, so it
compares equal to that string, prints as it and is written as it to JSON.  On 3.10 a ``str``
mix-in with the same ``__str__`` and ``__format__`` stands in for it.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised on Python 3.10 only

    class StrEnum(str, Enum):
        """A member is its value: ``str()``, ``format()`` and JSON give the string itself."""

        __str__ = str.__str__
        __format__ = str.__format__  # type: ignore[assignment]

__all__ = ["StrEnum"]
