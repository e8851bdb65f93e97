"""Reading ONNX files: load and check, fix the input shapes, infer the rest, cost every node."""

from nncost.capture.onnx.read import read_onnx

__all__ = ["read_onnx"]
