"""Cost rules for ONNX operators, read from a model file's graph.

Importing this package fills :data:`ONNX`, the second registry beside :data:`nncost.rules.ATEN`.
The conventions are the ATen rules' (docs/conventions.md).  An ONNX rule receives the shapes of
the node's inputs (``None`` for an omitted optional input), the node's attributes as plain Python
values, and ``out``, the shapes of its outputs.  Operators outside the default domain are keyed
``domain::OpType`` (``com.microsoft::Attention``).
"""

from nncost.rules.registry import Registry

ONNX = Registry()

from nncost.rules.onnx import (  # noqa: E402  (the modules register into ONNX on import)
    attention,
    conv,
    elementwise,
    linear,
    movement,
    norm,
    pool,
    rnn,
)

__all__ = ["ONNX", "attention", "conv", "elementwise", "linear", "movement", "norm", "pool", "rnn"]
