"""nncost against torchvision's published figures, for every torchvision model.

    python bench/zoo.py                            # the whole zoo, prints the report
    python bench/zoo.py --write-docs               # the whole zoo, writes docs/zoo.md
    python bench/zoo.py --family classification    # one family (several may be given)
    python bench/zoo.py --only resnet50 ssd300_vgg16

Each model is built with random weights (nothing is downloaded) as torchvision builds the
architecture of its ``DEFAULT`` weights, profiled at the size torchvision evaluated it at, batch 1,
and compared with the weights' metadata: ``num_params`` must equal nncost's parameter count, and
``_ops`` (labelled "GFLOPS" but counting multiply-accumulates of convolutions and matrix products)
must agree with nncost's MACs within 0.5%, or to the three decimals it is published with.

Quantized models are left out.  Detection models run on CPU (their forward needs real values, so
nncost falls back to a real run); every other model is built and profiled on the meta device.
Progress goes to stderr; the markdown report to stdout, or with ``--write-docs`` to ``--out`` (default
``docs/zoo.md``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision import models as tvm

import nncost
from nncost.sources.models import resolve, torchvision_input

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.005  # relative, on MACs
OPS_DECIMALS = 3  # _ops is published in G to three decimals

FAMILIES: dict[str, Any] = {
    "classification": tvm,
    "segmentation": tvm.segmentation,
    "detection": tvm.detection,
    "video": tvm.video,
    "optical_flow": tvm.optical_flow,
}
# torchvision's _ops for RAFT is reproduced at 512×512 (any 262,144-pixel frame), not at the
# 520×960 Sintel size that ``nncost raft_large`` uses by default.
OPTICAL_FLOW_SIZE = (512, 512)


def sweep_section(page: Path) -> str:
    """The section bench/sweep.py keeps at the end of the page (transformers and timm), to write back."""
    from sweep import SECTION

    if not page.exists():
        return ""
    text = page.read_text()
    start = text.find("\n" + SECTION + "\n")
    return "\n" + text[start + 1:] if start >= 0 else ""


def models(families: list[str] | None = None) -> list[tuple[str, str]]:
    """(family, name) for every non-quantized torchvision model, in a stable order."""
    chosen = families or list(FAMILIES)
    return [(family, name) for family in chosen for name in tvm.list_models(module=FAMILIES[family])]


def family_of(name: str) -> str:
    module = tvm.get_model_builder(name).__module__
    for family in ("segmentation", "detection", "video", "optical_flow", "quantization"):
        if f".{family}." in module:
            return family
    return "classification"


def default_weights(name: str) -> Any:
    return tvm.get_model_weights(name).DEFAULT


def input_sizes(name: str) -> list[tuple[int, ...]]:
    """The input torchvision evaluated ``name`` at, without the batch dimension."""
    if family_of(name) == "optical_flow":
        return [(3, *OPTICAL_FLOW_SIZE), (3, *OPTICAL_FLOW_SIZE)]
    return torchvision_input(name)


def build(name: str) -> nn.Module:
    """The model as its DEFAULT weights describe it, random weights: on CPU for detection (it must
    be able to run for real), else on meta.  The same builder as ``nncost NAME``."""
    torch.manual_seed(0)
    return resolve(name).build("cpu" if family_of(name) == "detection" else "meta")


@dataclass
class RoiCounts:
    """What an R-CNN model's heads did in this run, and the box counts that reproduce ``_ops``."""

    proposals: int = 0  # kept by the RPN after NMS, fed to the box head
    detections: int = 0  # kept after the box head's score threshold and NMS, fed to the mask/keypoint head
    max_proposals: int = 0
    max_detections: int = 0
    per_proposal: int = 0  # MACs of box head + box predictor for one proposal
    per_detection: int = 0  # MACs of mask or keypoint head + predictor for one detection
    implied: tuple[int, int] | None = None  # (proposals, detections) that give torchvision's _ops
    implied_macs: int = 0


@dataclass
class Row:
    family: str
    name: str
    inputs: list[tuple[int, ...]]
    num_params: int
    ops: float  # G
    params: int = 0
    macs: int = 0
    execution: str = ""
    uncounted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    roi: RoiCounts | None = None

    @property
    def rel_error(self) -> float:
        return (self.macs / 1e9 - self.ops) / self.ops if self.ops else float("nan")

    @property
    def params_match(self) -> bool:
        return not self.error and self.params == self.num_params

    @property
    def macs_match(self) -> bool:
        return not self.error and macs_agree(self.macs, self.ops)

    @property
    def match(self) -> bool:
        return self.params_match and self.macs_match


def macs_agree(macs: int, ops: float) -> bool:
    """Within the tolerance, or equal to ``_ops`` at the three decimals torchvision publishes."""
    giga = macs / 1e9
    return abs(giga - ops) <= TOLERANCE * ops or round(giga, OPS_DECIMALS) == round(ops, OPS_DECIMALS)


def _head_macs(*modules: nn.Module, size: tuple[int, ...]) -> int:
    """MACs of running ``size`` (no batch) through ``modules`` in turn, for one box."""
    total = 0
    for module in modules:
        report = nncost.profile(module, size)
        total += report.totals.macs
        size = tuple(report.layers[0].output_shapes[0][1:])
    return total


def watch_roi_heads(model: nn.Module) -> Callable[[], RoiCounts] | None:
    """For R-CNN models, hook the ROI heads to count the boxes they get; None for the others."""
    heads = getattr(model, "roi_heads", None)
    if heads is None:
        return None
    seen: dict[str, int] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        seen["proposals"] = len(args[1][0])
        seen["detections"] = len(output[0][0]["boxes"])

    handle = heads.register_forward_hook(hook)

    def counts() -> RoiCounts:
        handle.remove()
        channels = model.backbone.out_channels
        box = _head_macs(heads.box_head, heads.box_predictor, size=(channels, *heads.box_roi_pool.output_size))
        detection = 0
        for kind in ("mask", "keypoint"):
            head = getattr(heads, f"{kind}_head", None)
            if head is not None:
                pool = getattr(heads, f"{kind}_roi_pool")
                detection = _head_macs(head, getattr(heads, f"{kind}_predictor"), size=(channels, *pool.output_size))
        return RoiCounts(
            proposals=seen.get("proposals", 0),
            detections=seen.get("detections", 0),
            max_proposals=model.rpn._post_nms_top_n["testing"],
            max_detections=heads.detections_per_img,
            per_proposal=box,
            per_detection=detection,
        )

    return counts


def implied_counts(row: Row) -> None:
    """The (proposals, detections) that turn this run's MACs into torchvision's ``_ops``.

    The backbone and RPN cost the same whatever the weights; only the number of boxes the heads
    see changes.  The counts must give ``_ops`` to the three decimals it is published with;
    fewest detections first; ``implied`` stays None when no counts in range do.
    """
    roi = row.roi
    if roi is None:
        return
    fixed = row.macs - roi.proposals * roi.per_proposal - roi.detections * roi.per_detection
    for detections in range(roi.max_detections + 1 if roi.per_detection else 1):
        rest = row.ops * 1e9 - fixed - detections * roi.per_detection
        proposals = round(rest / roi.per_proposal)
        macs = fixed + proposals * roi.per_proposal + detections * roi.per_detection
        if 0 <= proposals <= roi.max_proposals and round(macs / 1e9, OPS_DECIMALS) == round(row.ops, OPS_DECIMALS):
            roi.implied, roi.implied_macs = (proposals, detections), macs
            return


def check(family: str, name: str) -> Row:
    weights = default_weights(name)
    row = Row(family, name, input_sizes(name), weights.meta["num_params"], weights.meta["_ops"])
    start = time.perf_counter()
    try:
        model = build(name)
        counts = watch_roi_heads(model)
        report = nncost.profile(model, row.inputs if len(row.inputs) > 1 else row.inputs[0], batch_size=1)
        row.seconds = time.perf_counter() - start
        row.params, row.macs, row.execution = report.totals.params, report.totals.macs, report.execution
        row.uncounted = [f"{u.op}×{u.calls}" for u in report.uncounted]
        if counts is not None:
            row.roi = counts()
            implied_counts(row)
    except Exception as exc:  # one model's failure is a row of the report, not the end of the run
        row.seconds = time.perf_counter() - start
        first_line = (str(exc).strip().splitlines() or [""])[0]
        row.error = f"{type(exc).__name__}: {first_line[:200]}"
    return row


# -- the report ------------------------------------------------------------------------------
HEADER = ("| model | family | input | params | num_params | match | nncost GMACs | _ops | rel. error "
          "| execution | uncounted ops | time |")


def _size(inputs: list[tuple[int, ...]]) -> str:
    return " + ".join("×".join(map(str, s)) for s in inputs)


def table_row(row: Row) -> str:
    if row.error:
        return (f"| {row.name} | {row.family} | {_size(row.inputs)} | - | {row.num_params:,} | **error** | - "
                f"| {row.ops:.3f} | - | - | {row.error.replace('|', '/')} | {row.seconds:.1f} s |")
    match = "yes" if row.match else "**no** (" + ", ".join(
        what for what, ok in (("params", row.params_match), ("MACs", row.macs_match)) if not ok) + ")"
    return (f"| {row.name} | {row.family} | {_size(row.inputs)} | {row.params:,} | {row.num_params:,} | {match} "
            f"| {row.macs / 1e9:.4f} | {row.ops:.3f} | {row.rel_error:+.3%} | {row.execution} "
            f"| {', '.join(row.uncounted) or 'none'} | {row.seconds:.1f} s |")


def roi_table(rows: list[Row]) -> list[str]:
    lines = [
        "| model | proposals kept | detections kept | MACs / proposal | MACs / detection "
        "| counts that give _ops | GMACs at those counts | _ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        roi = row.roi
        assert roi is not None
        implied = f"{roi.implied[0]} / {roi.implied[1]}" if roi.implied else "none in range"
        at = f"{roi.implied_macs / 1e9:.4f}" if roi.implied else "-"
        lines.append(
            f"| {row.name} | {roi.proposals} of ≤ {roi.max_proposals} | {roi.detections} of ≤ {roi.max_detections} "
            f"| {roi.per_proposal:,} | {roi.per_detection:,} | {implied} | {at} | {row.ops:.3f} |"
        )
    return lines


NOTES = """\
## How each model is built and run

- Random weights, `weights=None` and `weights_backbone=None`: nothing is downloaded. The
  architecture is the one torchvision's builder makes when it loads the `DEFAULT` weights, since
  that is what `num_params` and `_ops` describe: segmentation models keep their auxiliary FCN
  head (`aux_loss=True`; its cost is part of `_ops`), GoogLeNet drops its two auxiliary
  classifiers (`aux_logits=False`; with the bare `weights=None` build it has 6,379,984 more
  parameters), `vit_h_14` takes the SWAG weights' 518×518 image size, and the R-CNN, RetinaNet
  and FCOS builders marked trained use `FrozenBatchNorm2d` in the backbone (buffers, no
  parameters: the bare build has 53,120 more for ResNet-50 backbones, 24,400 for
  MobileNetV3). These change parameters, not MACs, except the segmentation aux head and ViT's size.
- Input: the weights' crop size for classification, the resize size (520) for segmentation,
  16 frames at the crop size for video, two 512×512 frames for RAFT, and for detection 800×800
  (ssd300 300, ssdlite320 320, keypointrcnn 1333; the R-CNN transform resizes every square
  input to 800×800 anyway). RAFT's `_ops` carries no size; it is reproduced exactly by any
  262,144-pixel frame (512×512, 256×1024), not by the 520×960 Sintel size `nncost raft_large`
  uses by default (409.2 GMACs for raft_large there: the correlation volume grows with the
  square of the pixel count).
- Everything but detection is built and profiled on the meta device. RegNet's builders compute
  block widths with tensors and `.tolist()`, which fails under a meta default device, so nncost's
  builder (`nncost.sources.models.build_torchvision`, shared with the CLI) computes those widths on CPU.
  Detection models are built on CPU, seeded with
  `torch.manual_seed(0)`; their forward needs real values (`nonzero`, NMS), so nncost falls back
  to a real CPU run (`execution: real`).
- `match`: `params == num_params` exactly, and MACs within 0.5% of `_ops` or equal to it at the
  three decimals it is published with: mobilenet_v3_small (0.056510 G, published 0.057) and
  shufflenet_v2_x0_5 (0.040476 G, published 0.040) are off by more than 0.5% only through
  that rounding; every other match is within 0.44%, most within 0.01%.
"""

RCNN_NOTE = """\
The two-stage detectors' cost depends on how many boxes survive non-maximum suppression, which
depends on the weights. The backbone, FPN and RPN cost the same with any weights; the box head
(`TwoMLPHead` + predictor) costs a fixed number of MACs per *proposal* the RPN keeps (at most
`rpn.post_nms_top_n`, 1000 at test time), and the mask or keypoint head a fixed number per
*detection* kept after the box score threshold (at most 100). With random weights the counts are
whatever NMS leaves of random boxes, so nncost's total differs from `_ops`, which torchvision
measured with its trained weights. The table gives the counts kept in this run, the head costs
per box (each head profiled alone on one RoI), and the integer counts that reproduce `_ops` when
substituted; for every R-CNN model such counts exist and are the natural ones, so the difference
is the box count and not a counting error:

- ResNet-50 R-CNNs: `_ops` is the cost at the RPN's full quota of 1000 proposals, with 0 mask
  detections for Mask R-CNN (its `_ops` equals Faster R-CNN's, 134.380) and exactly 1 person for
  Keypoint R-CNN (its keypoint head, eight 3×3 convolutions at 14×14 and a transposed one, costs
  3.50 GMACs per detection). The v2 models kept 1000 proposals here as well (and
  maskrcnn_resnet50_fpn_v2 100 detections, the count its `_ops` implies), so they match.
- MobileNetV3 Faster R-CNNs: `_ops` is the cost at 0 proposals, backbone and RPN alone. Their
  RPN drops proposals whose objectness is below `rpn_score_thresh=0.05`; with the trained weights
  on torchvision's input none passed, while random weights give objectness ≈ sigmoid(0) = 0.5
  everywhere, so the full quota (1000, or 150 for the 320 model) reaches the box head at
  14.36 M MACs each.

RetinaNet, FCOS and SSD run their heads densely on every anchor before NMS, so their MACs do not
depend on the weights and match exactly.
"""


def markdown(rows: list[Row], command: str, elapsed: float) -> str:
    matched = sum(row.match for row in rows)
    errors = [row for row in rows if row.error]
    mismatched = [row for row in rows if not row.match and not row.error]
    lines = [
        "# nncost against torchvision's published figures",
        "",
        "Generated by:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}; {len(rows)} models in {elapsed:.0f} s (time: build + profile, on this machine).",
        "",
        f"**{matched} of {len(rows)} models match** (params equal to `num_params`, MACs within 0.5% of "
        f"`_ops`); {len(mismatched)} do not, {len(errors)} failed.",
        "",
        HEADER,
        "|" + "---|" * HEADER.count(" | ") + "---|",
        *(table_row(row) for row in rows),
        "",
        NOTES,
    ]
    lines += ["## Models that do not match", ""]
    if not mismatched and not errors:
        lines += ["None.", ""]
    rcnn = [row for row in mismatched if row.roi is not None]
    others = [row for row in mismatched + errors if row.roi is None]
    for row in others:
        lines.append(f"- **{row.name}**: {row.error or 'not explained yet'} "
                     f"(params {row.params:,} vs {row.num_params:,}, {row.macs / 1e9:.4f} vs {row.ops:.3f} GMACs).")
    if others:
        lines.append("")
    if rcnn:
        lines += [
            "### Two-stage detectors: " + ", ".join(row.name for row in rcnn),
            "",
            RCNN_NOTE,
            *roi_table([row for row in rows if row.roi is not None]),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", choices=list(FAMILIES), help="only these families")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo.md", help="markdown report (--write-docs)")
    parser.add_argument("--write-docs", action="store_true", help="write the report to --out instead of printing it")
    args = parser.parse_args(argv)
    todo = [(family_of(name), name) for name in args.only] if args.only else models(args.family)
    rows: list[Row] = []
    start = time.perf_counter()
    for i, (family, name) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name} ({family}) ...", end=" ", file=sys.stderr, flush=True)
        row = check(family, name)
        rows.append(row)
        verdict = "error: " + row.error if row.error else ("match" if row.match else "MISMATCH")
        detail = "" if row.error else f" {row.macs / 1e9:.4f} vs {row.ops:.3f} GMACs ({row.rel_error:+.3%})"
        print(f"{verdict}{detail}, {row.seconds:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    given = argv if argv is not None else sys.argv[1:]
    command = "python bench/zoo.py" + (" " + " ".join(a for a in given if a != "--write-docs")).rstrip()
    text = markdown(rows, command.strip(), elapsed)
    if args.write_docs:
        args.out.write_text(text.rstrip() + "\n" + sweep_section(args.out))
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    matched = sum(row.match for row in rows)
    print(f"{matched} of {len(rows)} models match; {elapsed:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
