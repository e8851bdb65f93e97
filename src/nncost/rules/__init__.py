"""Cost rules: one registry per operator source, each rule a pure function of shapes."""

from nncost.rules.aten import ATEN
from nncost.rules.registry import ZERO, Cost, Registry, Rule, Shape

__all__ = ["ATEN", "ZERO", "Cost", "Registry", "Rule", "Shape"]
