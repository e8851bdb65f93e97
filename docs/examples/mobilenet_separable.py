"""The brief's MobileNet calculation, redone with nncost: standard against depthwise-separable convs.

The brief defines MobileNet's body as a list of conv definitions (TensorFlow, ``_CONV_DEFS``): a
3×3 standard conv, then thirteen ``DepthSepConv``s, a 3×3 depthwise conv followed by a 1×1
pointwise conv.  It counts the multiplications of the body twice, once as if every layer were a
standard 3×3 conv and once with the separable ones, and prints the ratio.

Here the same body is built twice as a PyTorch module, with 'same' padding (padding = K // 2,
as MobileNet's TensorFlow code pads), each conv bias-free and followed by BatchNorm and ReLU as
in MobileNet.  nncost profiles both and compares them; each layer's ratio is printed next to the
closed form 1/N + 1/K² (N output channels, K kernel size), computed here from the definitions
alone.

    python docs/examples/mobilenet_separable.py            # the comparison
    python docs/examples/mobilenet_separable.py --onnx DIR # also export both nets to DIR/*.onnx
"""

from __future__ import annotations

import argparse
from collections import OrderedDict, namedtuple
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

import nncost

# -- the brief's definitions, as it writes them ----------------------------------------------
Conv = namedtuple("Conv", ["kernel", "stride", "depth"])
DepthSepConv = namedtuple("DepthSepConv", ["kernel", "stride", "depth"])

_CONV_DEFS = [
    Conv(kernel=[3, 3], stride=2, depth=32),
    DepthSepConv(kernel=[3, 3], stride=1, depth=64),
    DepthSepConv(kernel=[3, 3], stride=2, depth=128),
    DepthSepConv(kernel=[3, 3], stride=1, depth=128),
    DepthSepConv(kernel=[3, 3], stride=2, depth=256),
    DepthSepConv(kernel=[3, 3], stride=1, depth=256),
    DepthSepConv(kernel=[3, 3], stride=2, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=2, depth=1024),
    DepthSepConv(kernel=[3, 3], stride=1, depth=1024),
]
INPUT_SIZE = 160  # the brief's input_size
INPUT_DEPTH = 3


# -- the two networks ------------------------------------------------------------------------
def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def body(separable: bool, conv_defs: list = _CONV_DEFS, input_depth: int = INPUT_DEPTH) -> nn.Sequential:
    """MobileNet's body; layer i is named ``conv{i}`` in both versions, so nncost matches them.

    ``separable=False`` builds every definition as a standard K×K conv; ``separable=True`` builds
    each ``DepthSepConv`` as a depthwise K×K conv (``groups`` = input channels) and a 1×1 conv.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = input_depth
    for i, d in enumerate(conv_defs):
        k, n = d.kernel[0], d.depth
        if separable and isinstance(d, DepthSepConv):
            parts = conv_bn_relu(c_in, c_in, k, d.stride, groups=c_in) + conv_bn_relu(c_in, n, 1, 1)
        else:
            parts = conv_bn_relu(c_in, n, k, d.stride)
        layers[f"conv{i}"] = nn.Sequential(*parts)
        c_in = n
    return nn.Sequential(layers)


def standard() -> nn.Sequential:
    return body(separable=False)


def separable() -> nn.Sequential:
    return body(separable=True)


# -- closed forms, from the definitions alone --------------------------------------------------
def closed_form_rows(conv_defs: list = _CONV_DEFS, size: int = INPUT_SIZE, c_in: int = INPUT_DEPTH) -> list[dict]:
    """Per layer: the output size (PyTorch's formula, padding K//2), the brief's multiplication
    counts H·W·K²·C·N (standard) and H·W·(C·K² + C·N) (separable), and 1/N + 1/K²."""
    rows = []
    for i, d in enumerate(conv_defs):
        k, n, s = d.kernel[0], d.depth, d.stride
        size = (size + 2 * (k // 2) - k) // s + 1
        standard_macs = size * size * k * k * c_in * n
        separable_macs = size * size * (c_in * k * k + c_in * n) if isinstance(d, DepthSepConv) else standard_macs
        closed = Fraction(1, n) + Fraction(1, k * k) if isinstance(d, DepthSepConv) else Fraction(1)
        rows.append({"layer": f"conv{i}", "kind": type(d).__name__, "c_in": c_in, "n": n, "k": k, "stride": s,
                     "size": size, "standard_macs": standard_macs, "separable_macs": separable_macs,
                     "closed_form": closed})
        c_in = n
    return rows


def brief_loop(separable_cost: bool) -> tuple[int, list[int]]:
    """The brief's own loop, verbatim in substance, and the output sizes it used.

    Its output size, round((in - 2·(K//2)) / s), is 'valid' padding with Python's rounding: a
    stride-1 layer shrinks the map by 2, and the 512-channel layers reach 0 and negative sizes,
    whose squares are counted as if positive."""
    input_size, inputdepth, sumcost, sizes = INPUT_SIZE, INPUT_DEPTH, 0, []
    for conv_def in _CONV_DEFS:
        stride, kernel, outdepth = conv_def.stride, conv_def.kernel, conv_def.depth
        output_size = round((input_size - int(kernel[0] / 2) * 2) / stride)
        if isinstance(conv_def, Conv) or not separable_cost:
            sumcost += output_size * output_size * kernel[0] * kernel[0] * inputdepth * outdepth
        else:
            sumcost += output_size * output_size * (inputdepth * kernel[0] * kernel[0] + inputdepth * outdepth * 1 * 1)
        inputdepth, input_size = outdepth, output_size
        sizes.append(output_size)
    return sumcost, sizes


def compared() -> nncost.Comparison:
    return nncost.compare({"standard": standard(), "separable": separable()}, (3, INPUT_SIZE, INPUT_SIZE))


def export_onnx(directory: Path) -> list[Path]:
    """Both nets as ONNX files, for ``nncost compare DIR/standard.onnx DIR/separable.onnx``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, net in (("standard", standard()), ("separable", separable())):
        path = directory / f"{name}.onnx"
        torch.onnx.export(net.eval(), (torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE),), str(path),
                          input_names=["input"], output_names=["features"], dynamo=True, external_data=False)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, metavar="DIR", help="also export both nets to DIR/*.onnx")
    args = parser.parse_args()

    comparison = compared()
    print(comparison)

    std_report, sep_report = comparison.reports
    print(f"Per layer, input {INPUT_DEPTH}×{INPUT_SIZE}×{INPUT_SIZE}: MACs counted by nncost, their ratio, "
          "and the closed form 1/N + 1/K²\n")
    header = (f"{'layer':<7}{'kind':<13}{'C→N':>10}{'K':>3}{'s':>3}{'out':>6}{'standard MACs':>16}"
              f"{'separable MACs':>16}{'ratio':>10}{'1/N + 1/K²':>12}  same")
    print(header)
    print("-" * len(header))
    for row in closed_form_rows():
        std_macs, sep_macs = std_report.layer(row["layer"]).macs, sep_report.layer(row["layer"]).macs
        measured = Fraction(sep_macs, std_macs)
        agrees = (measured == row["closed_form"] and std_macs == row["standard_macs"]
                  and sep_macs == row["separable_macs"])
        print(f"{row['layer']:<7}{row['kind']:<13}{row['c_in']:>5}→{row['n']:<4}{row['k']:>3}{row['stride']:>3}"
              f"{row['size']:>4}²{std_macs:>16,}{sep_macs:>16,}{float(measured):>10.5f}"
              f"{float(row['closed_form']):>12.5f}  {'yes' if agrees else 'NO'}")
    std_total, sep_total = std_report.totals.macs, sep_report.totals.macs
    rows = closed_form_rows()
    formula_std, formula_sep = sum(r["standard_macs"] for r in rows), sum(r["separable_macs"] for r in rows)
    print(f"\nbody, nncost:           standard {std_total:,} MACs, separable {sep_total:,} MACs, "
          f"ratio {sep_total / std_total:.5f}")
    print(f"body, brief's formulas: standard {formula_std:,} MACs, separable {formula_sep:,} MACs, "
          f"ratio {formula_sep / formula_std:.5f} (at the sizes above)")
    (brief_std, sizes), (brief_sep, _) = brief_loop(False), brief_loop(True)
    print(f"the brief's loop as written: src conv {brief_std:,}, DepthSepConv {brief_sep:,}, "
          f"compare {brief_sep / brief_std:.5f}\n  (its output sizes: {', '.join(map(str, sizes))})")

    if args.onnx:
        for path in export_onnx(args.onnx):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
