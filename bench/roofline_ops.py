"""One layer's operators on the cpu: the roofline's estimate beside torch.profiler's self time, op by op.

    PYTHONPATH=src python bench/roofline_ops.py swin_t ShiftedWindowAttention
    PYTHONPATH=src python bench/roofline_ops.py densenet121 AvgPool2d --index 1

Where ``bench/roofline.py`` says a layer type is off, this says which of its operators are: the first
(or ``--index``-th) call of a module of that type in a torchvision model (3×224×224, batch 1) is run
alone on its real input, ``--repeats`` times under ``torch.profiler``, with torch on one thread as in
the bench.  Each ATen operator's self CPU time (per call of the layer) is printed beside nncost's
estimate for the operators of that name in the layer (``hardware="cpu"``).  Operators with no
estimate are views, shape functions and the pieces of composite operators: the profiler lists both
a composite (``linear``) and what it runs (``addmm``); the capture sees the kernels.  The profiler
adds a few microseconds to every operator call.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from typing import Any

import torch
from torch.profiler import profile

import nncost
from nncost.analyses.roofline import op_overhead, op_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("layer_type")
    parser.add_argument("--index", type=int, default=0, help="which call of a module of that type (0: the first)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    import torchvision

    torch.set_num_threads(1)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    report = nncost.profile(model, (3, 224, 224), hardware="cpu")
    roofline = report.roofline
    assert roofline is not None
    layers = [layer for layer in report.layers if layer.type == args.layer_type]
    if len(layers) <= args.index:
        raise SystemExit(f"{args.model} has {len(layers)} calls of a {args.layer_type}")
    layer = layers[args.index]
    estimated: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    stack = [layer]
    while stack:  # the layer's own operators and its descendants'
        current = stack.pop()
        for op in current.self_ops:
            estimated[op.op] += max(op_seconds(op, roofline)) + op_overhead(op, roofline)
            count[op.op] += 1
        stack += [child for child in report.layers if child.parent == current.index]

    module = dict(model.named_modules())[layer.name]
    captured: dict[str, Any] = {}
    handle = module.register_forward_pre_hook(lambda mod, inputs: captured.setdefault("inputs", inputs))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    handle.remove()
    with torch.no_grad():
        for _ in range(3):
            module(*captured["inputs"])
        with profile() as prof:
            for _ in range(args.repeats):
                module(*captured["inputs"])
    rows = sorted(((e.self_cpu_time_total / args.repeats, e.key, e.count / args.repeats)
                   for e in prof.key_averages() if e.key.startswith("aten::")), reverse=True)
    print(f"{args.model} {layer.name} ({args.layer_type}): estimated {layer.estimated_seconds * 1e6:.1f} µs, "
          f"profiled self time {sum(r[0] for r in rows):.1f} µs (per call of the layer)")
    print(f"{'self µs':>10} {'calls':>6}  {'operator':<36} {'estimated µs':>13} {'calls':>6}")
    for seconds, key, calls in rows[:args.top]:
        name = key.removeprefix("aten::")
        print(f"{seconds:10.1f} {calls:6.0f}  {name:<36} {estimated.get(name, 0.0) * 1e6:13.1f} {count.get(name, 0):6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
