"""Running llm-analysis (and hf-mem) beside nncost: their own process, with ``.peers`` on the path.

llm-analysis pins an old huggingface_hub, so the peers are installed apart from nncost's packages
(``pip install --target .peers llm-analysis hf-mem``) and a bench runs them in a process of its
own: :func:`run_peer` hands a script a JSON payload and a path for llm-analysis's model file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PEERS = Path(__file__).resolve().parent.parent / ".peers"


def model_config(config: dict[str, Any]) -> dict[str, Any]:
    """llm-analysis's ModelConfig for a transformers ``config.json``.  It has no gated MLP and wants
    a multiple of d: the three d×f matrices are given as two of d×(1.5 f), rounded to a multiple of
    d (its own Llama-2-7B config does the same: 4d)."""
    d = config["hidden_size"]
    return {"name": "case", "num_layers": config["num_hidden_layers"], "n_head": config["num_attention_heads"],
            "hidden_dim": d, "vocab_size": config["vocab_size"],
            "max_seq_len": config.get("max_position_embeddings"),
            "num_key_value_heads": config.get("num_key_value_heads"),
            "ffn_embed_dim": d * max(1, round(1.5 * config["intermediate_size"] / d)),
            "model_type": config["model_type"],
            "moe_num_experts": config.get("num_local_experts", 1),
            "moe_top_k": config.get("num_experts_per_tok", 1)}


def run_peer(script: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON ``script`` prints last, run as ``python -c script PAYLOAD MODEL_PATH`` with ``.peers``
    on the path; ``{"error": ...}`` when the peers are not installed or the script fails."""
    if not PEERS.exists():
        return {"error": f"no peers installed: pip install --target {PEERS} llm-analysis hf-mem"}
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-c", script, json.dumps(payload), str(Path(folder) / "model.json")],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(PEERS)})
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures
