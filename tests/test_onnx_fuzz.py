"""Fuzzing the ONNX reader: truncated and bit-flipped files give nncost's own errors or a report.

Any other exception (a protobuf error, an IndexError in a rule, a crash in a renderer) fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import nncost
from onnx_helpers import graph_model, tensor

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def small_model_bytes() -> bytes:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="/conv/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="/act/Relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["s"], name="/Shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="/Gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="/Unsqueeze"),
        helper.make_node("Concat", ["n1", "minus_one"], ["shape"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="/Reshape"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], name="/fc/Gemm", transB=1),
        helper.make_node("Softmax", ["g"], ["y"], name="/Softmax", axis=-1),
    ]
    weights = [
        tensor("w", (4, 3, 3, 3)), tensor("b", (4,)), tensor("zero", (), dtype=np.int64, value=0),
        tensor("axes", (1,), dtype=np.int64, value=[0]), tensor("minus_one", (1,), dtype=np.int64, value=[-1]),
        tensor("fc_w", (5, 4 * 4 * 4)), tensor("fc_b", (5,)),
    ]
    return graph_model(nodes, {"x": ("batch", 3, 8, 8)}, ["y"], weights).SerializeToString()


MODEL = small_model_bytes()


def read(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        report = nncost.profile_onnx(path)
    except nncost.NncostError:
        return
    report.table()  # a report that reads must also render
    report.to_json()
    report.to_csv()


def test_the_fuzzed_model_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(MODEL)
    report = nncost.profile_onnx(path)
    assert report.uncounted == [] and report.totals.macs == 4 * 8 * 8 * 27 + 5 * 64


@SETTINGS
@given(cut=st.integers(0, len(MODEL) - 1))
def test_truncated_files(tmp_path: Path, cut: int) -> None:
    read(tmp_path / "cut.onnx", MODEL[:cut])


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, len(MODEL) - 1), st.integers(0, 7)), min_size=1, max_size=6))
def test_bit_flipped_files(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(MODEL)
    for position, bit in flips:
        data[position] ^= 1 << bit
    read(tmp_path / "flipped.onnx", bytes(data))


@SETTINGS
@given(position=st.integers(0, len(MODEL) - 1), junk=st.binary(min_size=1, max_size=8))
def test_overwritten_bytes(tmp_path: Path, position: int, junk: bytes) -> None:
    read(tmp_path / "junk.onnx", MODEL[:position] + junk + MODEL[position + len(junk):])


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, len(MODEL) - 1), st.integers(0, 7)), min_size=1, max_size=12))
def test_bit_flipped_files_long(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(MODEL)
    for position, bit in flips:
        data[position] ^= 1 << bit
    read(tmp_path / "flipped.onnx", bytes(data))
