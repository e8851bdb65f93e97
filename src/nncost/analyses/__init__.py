"""Analyses: figures derived from a capture's Trace.  They compute; they never print."""

from nncost.analyses.build import build_report

__all__ = ["build_report"]
