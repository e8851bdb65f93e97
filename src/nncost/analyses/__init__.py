"""Analyses: figures derived from a capture's Trace.  They compute; they never print.

``build_report`` is imported when first used, so the pure-name modules here (``sharding``) load
without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nncost.analyses.build import build_report

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from nncost.analyses.build import build_report

        return build_report
    raise AttributeError(f"module 'nncost.analyses' has no attribute {name!r}")
