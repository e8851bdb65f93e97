"""CUDA checks of the core report, for a machine with a GPU (one invocation, well under a minute).

    PYTHONPATH=src python bench/cuda_check.py

For each case it profiles the same model on meta and for real on CUDA and checks:
- MACs agree exactly (on CUDA, SDPA runs flash or memory-efficient kernels; convolutions run cuDNN);
- the model is left untouched on its device (values, flags, hooks);
- nncost's peak of live activations against the allocator's peak during the same forward
  (``torch.cuda.max_memory_allocated`` minus what was allocated before), as information.
"""

from __future__ import annotations

import sys

import torch

import nncost


def cases() -> list[tuple[str, torch.nn.Module, dict[str, object]]]:
    import torchvision
    import transformers

    out: list[tuple[str, torch.nn.Module, dict[str, object]]] = []
    out.append(("resnet50 fp32 b8", torchvision.models.resnet50(), {"input_size": (3, 224, 224), "batch_size": 8}))
    out.append(("vit_b_16 fp16 b4", torchvision.models.vit_b_16(),
                {"input_size": (3, 224, 224), "batch_size": 4, "dtype": torch.float16}))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="sdpa"))
    out.append(("gpt2 bf16 seq1024", gpt2,
                {"kwargs": {"input_ids": torch.zeros(1, 1024, dtype=torch.long)}, "dtype": torch.bfloat16}))
    return out


def measured_forward_peak(model: torch.nn.Module, spec: dict[str, object]) -> int:
    dtype = spec.get("dtype") or torch.float32
    copy = model.to("cuda", dtype=dtype).eval()  # type: ignore[arg-type]
    if "kwargs" in spec:
        kw = {k: v.cuda() for k, v in spec["kwargs"].items()}  # type: ignore[union-attr]
        args: tuple[object, ...] = ()
    else:
        kw = {}
        args = (torch.randn(spec["batch_size"], *spec["input_size"], device="cuda", dtype=dtype),)  # type: ignore[misc]
    with torch.no_grad():
        copy(*args, **kw)  # warm-up: cuDNN/cuBLAS workspaces
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        copy(*args, **kw)
        torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    failures = 0
    for name, model, spec in cases():
        model.cuda()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        meta = nncost.profile(model, **spec)  # type: ignore[arg-type]
        real = nncost.profile(model, device="cuda", **spec)  # type: ignore[arg-type]
        untouched = all(torch.equal(v, model.state_dict()[k]) for k, v in state.items()) and all(
            not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()
        ) and next(model.parameters()).device.type == "cuda"
        ok = meta.totals.macs == real.totals.macs and untouched and not real.uncounted
        failures += not ok
        peak = measured_forward_peak(model, spec)
        sdpa = sorted({op.op for layer in real.layers for op in layer.self_ops if "scaled_dot" in op.op})
        print(f"{name:20s} meta MACs {meta.totals.macs:,} | cuda MACs {real.totals.macs:,} | "
              f"equal {meta.totals.macs == real.totals.macs} | untouched {untouched} | "
              f"uncounted {[u.op for u in real.uncounted]} | sdpa kernels {sdpa}")
        print(f"{'':20s} peak activations: nncost meta {meta.totals.peak_activation_bytes:,} B, "
              f"nncost cuda {real.totals.peak_activation_bytes:,} B, allocator {peak:,} B")
    print("ALL OK" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
