"""Plain data: what the capture observed (:mod:`trace`) and the report built from it (:mod:`report`)."""

from nncost.records.report import Layer, Report, Totals, Uncounted
from nncost.records.trace import LayerCall, OpCall, ParamStats, Trace

__all__ = ["Layer", "LayerCall", "OpCall", "ParamStats", "Report", "Totals", "Trace", "Uncounted"]
