"""An ONNX Runtime-optimised BERT against its plain export: the fused ops must not lose MACs.

    python bench/onnx_fused.py

Exports a 2-layer BERT (hidden 64, 2 heads, random weights, built from a config) with the
TorchScript exporter, fuses it with ``onnxruntime.transformers.optimizer`` (SkipLayerNormalization,
Gelu from the ``com.microsoft`` domain) and prints nncost's figures for both files and for the module.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch
import transformers
from torch import nn

import nncost


class LastHidden(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state


def main() -> int:
    from onnxruntime.transformers import optimizer

    config = transformers.BertConfig(hidden_size=64, num_attention_heads=2, intermediate_size=128,
                                     num_hidden_layers=2, vocab_size=1000, attn_implementation="eager")
    torch.manual_seed(0)
    model = LastHidden(transformers.BertModel(config).eval())
    ids = torch.zeros(1, 16, dtype=torch.long)
    with tempfile.TemporaryDirectory() as folder:
        plain, fused = Path(folder) / "bert.onnx", Path(folder) / "bert_fused.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (ids,), str(plain), dynamo=False, input_names=["input_ids"], opset_version=17)
            optimizer.optimize_model(str(plain), model_type="bert", num_heads=2, hidden_size=64).save_model_to_file(
                str(fused))
        reports = (("module", nncost.profile(model, inputs=ids)), ("plain export", nncost.profile_onnx(plain)),
                   ("fused export", nncost.profile_onnx(fused)))
        for label, report in reports:
            ops = ", ".join(f"{u.op}×{u.calls}" for u in report.uncounted) or "none"
            print(f"{label:13} MACs {report.totals.macs:>10,}  FLOPs {report.totals.flops:>10,}  uncounted: {ops}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
