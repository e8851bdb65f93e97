"""Real model configs: a local config.json or directory, a Hub repository's config read offline
from the cache, ``KEY=VALUE`` overrides, custom code only when trusted, and the config's dtype.

Every config is written by the test into ``tmp_path``; the Hub tests run with ``HF_HUB_OFFLINE``
and a cache laid out in ``tmp_path``, so nothing reaches the network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import nncost
from cli_runs import cli
from nncost.cli import run as cli_run
from nncost.errors import BadRequest, ModelNotFound
from nncost.sources import configs
from nncost.sources.models import resolve

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())

TINY_LLAMA = {  # grouped-query attention: 4 query heads share 2 key/value heads
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 160, "num_hidden_layers": 3, "vocab_size": 300,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
TINY_MISTRAL = {
    "model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
    "num_key_value_heads": 1, "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 200,
    "sliding_window": 8, "dtype": "float16",
}
LLAMA_3_70B = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256,
    "tie_word_embeddings": False, "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    "torch_dtype": "bfloat16",
}
CUSTOM = {  # a model_type transformers does not know, built by the repository's own code
    "model_type": "nncost-tiny", "architectures": ["TinyForCausalLM"], "hidden_size": 16, "vocab_size": 50,
    "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                 "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"},
}


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def llama_layer_params(d: int, heads: int, kv_heads: int, inner: int) -> int:
    """One decoder layer: q and o (d×d), k and v (d × kv_heads·head_dim), the gated MLP (3·d·inner),
    two RMSNorms; no biases."""
    kv = kv_heads * (d // heads)
    return 2 * d * d + 2 * d * kv + 3 * d * inner + 2 * d


def llama_params(c: dict[str, Any]) -> int:
    d, vocab = c["hidden_size"], c["vocab_size"]
    layer = llama_layer_params(d, c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"])
    heads = 1 if c.get("tie_word_embeddings", True) else 2
    return c["num_hidden_layers"] * layer + heads * vocab * d + d  # embeddings, LM head, final norm


def llama_macs(c: dict[str, Any], seq: int) -> int:
    """Projections and MLP per token, the dense QKᵀ and PV products over all query heads, the LM head."""
    d, layers = c["hidden_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * (d // c["num_attention_heads"])
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * c["intermediate_size"]) * seq
    return linear + layers * 2 * seq * seq * d + d * c["vocab_size"] * seq


def profile(model: str, seq: int = 16, **fields: Any) -> nncost.Report:
    report = nncost.run(nncost.Request(model, nncost.Inputs(seq=seq), **fields)).report
    assert report is not None
    return report


# -- local configs -----------------------------------------------------------------------
def test_a_config_directory_builds_the_llama_it_describes(tmp_path: Path) -> None:
    directory = write_config(tmp_path / "tiny-llama", TINY_LLAMA)
    report = profile(str(directory), seq=16)
    assert report.model == str(directory)
    assert report.layers[0].type == "LlamaForCausalLM"
    assert report.totals.params == llama_params(TINY_LLAMA)
    assert report.totals.macs == llama_macs(TINY_LLAMA, 16)
    assert report.uncounted == []
    assert report.layer("model.layers.0.self_attn.k_proj").params == 64 * 2 * 16  # 2 KV heads of 16


def test_the_config_file_itself_is_the_same_model(tmp_path: Path) -> None:
    directory = write_config(tmp_path / "tiny-llama", TINY_LLAMA)
    by_file = profile(str(directory / "config.json"))
    assert by_file.totals == profile(str(directory)).totals


def test_a_mistral_with_a_sliding_window_keeps_it_and_counts_dense_attention(tmp_path: Path) -> None:
    directory = write_config(tmp_path / "mistral", TINY_MISTRAL)
    model = resolve(str(directory)).build()
    assert type(model).__name__ == "MistralForCausalLM"
    assert model.config.sliding_window == 8
    seq = 32  # four windows: the mask hides most pairs, the dense kernel still computes them
    report = profile(str(directory), seq=seq)
    config = {**TINY_MISTRAL, "tie_word_embeddings": False}
    assert report.totals.params == llama_params(config)
    assert report.totals.macs == llama_macs(config, seq)
    assert report.uncounted == []


def test_llama_3_70b_from_its_config_has_the_published_parameter_count(tmp_path: Path) -> None:
    directory = write_config(tmp_path / "Meta-Llama-3-70B", LLAMA_3_70B)
    report = profile(str(directory), seq=4)
    assert report.totals.params == llama_params(LLAMA_3_70B) == 70_553_706_496
    assert report.totals.param_bytes == 2 * 70_553_706_496  # bfloat16, the config's
    assert report.execution == "meta"


def test_a_directory_without_a_config_says_so(tmp_path: Path) -> None:
    code = cli_run([str(tmp_path)])
    assert code == 2
    with pytest.raises(ModelNotFound, match=r"has no config\.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelNotFound, match="no such file"):
        resolve(str(tmp_path / "missing.json"))


def test_an_unknown_model_type_without_code_is_not_buildable(tmp_path: Path) -> None:
    directory = write_config(tmp_path / "odd", {"model_type": "lama", "hidden_size": 8})
    with pytest.raises(ModelNotFound, match=r"does not know model_type 'lama'.*did you mean 'llama'"):
        resolve(str(directory))


# -- custom code -------------------------------------------------------------------------
def test_a_custom_architecture_is_refused_without_trust_remote_code(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_config(tmp_path / "custom", CUSTOM)
    (directory / "modeling_tiny.py").write_text("raise SystemExit('this code must not run')\n")
    code, _ = cli(str(directory))
    message = capsys.readouterr().err
    assert code == 2
    assert message.count("\n") == 1 and message.startswith("nncost: error: ")
    assert "custom architecture" in message and "runs that repository's Python code" in message
    assert "--trust-remote-code" in message
    with pytest.raises(BadRequest, match="trust_remote_code=True"):
        nncost.run(nncost.Request(str(directory)))


MODELING_TINY = '''
import torch
from transformers import PreTrainedModel
from .configuration_tiny import TinyConfig


class TinyForCausalLM(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids))
'''
CONFIGURATION_TINY = '''
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "nncost-tiny"

    def __init__(self, hidden_size=16, vocab_size=50, **kwargs):
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        super().__init__(**kwargs)
'''


def test_a_trusted_custom_architecture_is_built_from_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import dynamic_module_utils

    directory = write_config(tmp_path / "custom", CUSTOM)
    (directory / "configuration_tiny.py").write_text(CONFIGURATION_TINY)
    (directory / "modeling_tiny.py").write_text(MODELING_TINY)
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # where it copies code
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    try:
        report = profile(str(directory), seq=8, trust_remote_code=True, config_overrides={"hidden_size": 32})
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("transformers_modules"):
                del sys.modules[name]
    assert report.layers[0].type == "TinyForCausalLM"
    assert report.totals.params == 2 * 50 * 32
    assert report.totals.macs == 32 * 50 * 8


# -- the Hub, offline --------------------------------------------------------------------
@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache in tmp_path, offline; huggingface_hub read its settings at import."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_config(cache: Path, repo_id: str, config: dict[str, Any], commit: str = "a" * 40) -> None:
    """``config.json`` as huggingface_hub caches it: refs/main names the snapshot holding it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    write_config(repo / "snapshots" / commit, config)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_config_is_read_from_the_cache_offline_and_only_the_config(hub_cache: Path) -> None:
    cache_config(hub_cache, "someorg/tiny-llama", TINY_LLAMA)  # the cache holds no weights at all
    code, text = cli("hf:someorg/tiny-llama", "--seq", "16", "--format", "json")
    assert code == 0
    data = json.loads(text)
    assert data["model"] == "hf:someorg/tiny-llama"
    assert data["totals"]["params"] == llama_params(TINY_LLAMA)
    assert data["totals"]["macs"] == llama_macs(TINY_LLAMA, 16)
    assert (data["dtype"], data["dtype_source"]) == ("bfloat16", "config")
    assert sorted(p.name for p in hub_cache.rglob("*") if p.is_file()) == ["config.json", "main"]


def test_without_network_or_cache_a_hub_config_is_one_sentence(hub_cache: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("hf:someorg/not-cached")
    message = capsys.readouterr().err
    assert code == 2
    assert message.count("\n") == 1
    assert "cannot be reached (HF_HUB_OFFLINE is set)" in message and str(hub_cache) in message
    assert "hf:someorg/not-cached" in message


def test_hf_name_without_a_slash_is_still_the_default_config() -> None:
    report = profile("hf:llama", seq=8, config_overrides={"num_hidden_layers": 1})
    assert report.model == "hf:llama (num_hidden_layers=1)"
    default = transformers.LlamaConfig()
    assert report.totals.params == llama_params({
        "hidden_size": default.hidden_size, "num_attention_heads": default.num_attention_heads,
        "num_key_value_heads": default.num_key_value_heads, "intermediate_size": default.intermediate_size,
        "vocab_size": default.vocab_size, "num_hidden_layers": 1, "tie_word_embeddings": False})
    assert (report.dtype, report.dtype_source) == ("float32", "default")


# -- overrides ---------------------------------------------------------------------------
def test_layers_overridden_differ_by_exactly_their_params(tmp_path: Path) -> None:
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))
    two = profile(directory, config_overrides={"num_hidden_layers": 2})
    code, text = cli(directory, "--config", "num_hidden_layers=4", "--seq", "16", "--format", "json")
    four = json.loads(text)
    assert code == 0
    one_layer = llama_layer_params(64, 4, 2, 160)
    assert four["totals"]["params"] - two.totals.params == 2 * one_layer
    assert two.totals.params == llama_params({**TINY_LLAMA, "num_hidden_layers": 2})


def test_an_override_is_applied_before_transformers_derives_from_it(tmp_path: Path) -> None:
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))
    config = configs.load_config(directory, {"hidden_size": 128})
    assert config.head_dim == 32  # 128 / 4 heads, not the 16 of the written config
    gpt2 = configs.load_config("hf:gpt2", {"num_hidden_layers": 1, "n_embd": 96})  # an alias, the stored name
    assert (gpt2.n_layer, gpt2.n_embd) == (1, 96)


def test_override_values_are_json_literals_else_strings() -> None:
    assert configs.parse_overrides(["a=2", "b=1e-5", "c=true", "d=null", "e=[1, 2]", "f=silu", "g=", "a=3"]) == {
        "a": 3, "b": 1e-5, "c": True, "d": None, "e": [1, 2], "f": "silu", "g": ""}
    with pytest.raises(BadRequest, match="not KEY=VALUE"):
        configs.parse_override("num_hidden_layers")


def test_nested_keys_reach_a_sub_config() -> None:
    config = configs.load_config("hf:llava", {"text_config.num_hidden_layers": 2, "vision_config.num_hidden_layers": 3})
    assert config.text_config.num_hidden_layers == 2
    assert config.vision_config.num_hidden_layers == 3
    assert config.text_config.hidden_size == transformers.LlavaConfig().text_config.hidden_size
    with pytest.raises(BadRequest, match=r"unknown config key 'text_config.num_hiden_layers'; "
                                         r"did you mean 'text_config.num_hidden_layers'"):
        configs.load_config("hf:llava", {"text_config.num_hiden_layers": 2})
    with pytest.raises(BadRequest, match="'image_token_id' is not a nested config"):
        configs.load_config("hf:llava", {"image_token_id.x": 2})
    with pytest.raises(BadRequest, match=r"with vision_config.hidden_size=64 the config is not valid: .*"
                                         r"not a multiple of the number of attention heads"):
        configs.load_config("hf:llava", {"vision_config.hidden_size": 64})


def test_an_unknown_key_is_an_error_with_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))
    code, _ = cli(directory, "--config", "num_hiden_layers=2")
    message = capsys.readouterr().err
    assert code == 2
    assert "unknown config key 'num_hiden_layers'; did you mean 'num_hidden_layers'" in message
    code, _ = cli(directory, "--config", "num_hidden_layers")
    assert code == 2 and "not KEY=VALUE" in capsys.readouterr().err


def test_overrides_are_only_for_transformers_configs() -> None:
    with pytest.raises(BadRequest, match="resnet18 is not one"):
        nncost.run(nncost.Request("resnet18", config_overrides={"num_hidden_layers": 2}))
    with pytest.raises(BadRequest, match="a module is profiled as it is"):
        nncost.run(nncost.Request(torch.nn.Linear(2, 2), nncost.Inputs((2,)), config_overrides={"x": 1}))


# -- the dtype ---------------------------------------------------------------------------
def test_the_configs_dtype_is_the_default_and_the_report_says_so(tmp_path: Path) -> None:
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))
    report = profile(directory)
    params = llama_params(TINY_LLAMA)
    assert report.totals.param_bytes == 2 * params
    assert report.totals.param_bytes_by_dtype == {"bfloat16": 2 * params}
    assert (report.dtype, report.dtype_source) == ("bfloat16", "config")
    code, text = cli(directory, "--seq", "16")
    assert code == 0 and "Dtype                  bfloat16 (the config's)" in text


def test_the_new_dtype_key_is_read_as_the_legacy_one(tmp_path: Path) -> None:
    report = profile(str(write_config(tmp_path / "mistral", TINY_MISTRAL)))
    assert (report.dtype, report.dtype_source) == ("float16", "config")
    assert report.totals.param_bytes == 2 * report.totals.params


def test_dtype_and_precision_override_the_configs(tmp_path: Path) -> None:
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))
    params = llama_params(TINY_LLAMA)
    code, text = cli(directory, "--dtype", "float32", "--format", "json")
    data = json.loads(text)
    assert code == 0
    assert data["totals"]["param_bytes"] == 4 * params
    assert (data["dtype"], data["dtype_source"]) == ("float32", "request")
    mixed = profile(directory, precision="bf16-mixed")  # fp32 master weights, whatever the config says
    assert mixed.totals.param_bytes == 4 * params and mixed.dtype == "float32"
    step = nncost.run(nncost.Request(directory, nncost.Inputs(seq=8), report=False, step=nncost.Step(
        optimizer="sgd", allocator="cpu"))).memory
    assert step is not None  # the step, in the config's dtype (buffers beside the parameters)
    assert 2 * params <= step.breakdown["parameters"] < 2 * params + 1024


@pytest.mark.parametrize(("precision", "size", "matrix"), [("fp32", 4, "fp32"), ("fp16", 2, "fp16"),
                                                            ("bf16", 2, "bf16")])
def test_a_precision_given_overrides_the_configs_dtype_in_generation(tmp_path: Path, precision: str, size: int,
                                                                    matrix: str) -> None:
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))  # bfloat16
    params = llama_params(TINY_LLAMA)
    code, text = cli(directory, "--prompt", "8", "--new-tokens", "2", "--hardware", "h100-sxm", "--precision",
                     precision, "--format", "json")
    assert code == 0
    data = json.loads(text)
    rotary = TINY_LLAMA["hidden_size"] // TINY_LLAMA["num_attention_heads"]  # inv_freq, original_inv_freq: d/2 each
    assert data["generation"]["weights_bytes"] == size * (params + rotary)
    assert data["dtype_source"] == "request"
    code, text = cli(directory, "--prompt", "8", "--new-tokens", "2", "--hardware", "h100-sxm", "--precision",
                     precision)
    assert code == 0 and f"matrix work {matrix}," in text
    code, text = cli(directory, "--seq", "8", "--precision", precision, "--format", "json")
    assert code == 0 and json.loads(text)["totals"]["param_bytes"] == size * params


def test_config_documents_follow_the_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    directory = str(write_config(tmp_path / "tiny-llama", TINY_LLAMA))
    for argv in ([directory], [directory, "--dtype", "float16"], ["hf:gpt2", "--config", "n_layer=1"],
                 [directory, "--train", "--allocator", "cpu"]):
        code, text = cli(*argv, "--seq", "8", "--format", "json")
        assert code == 0
        jsonschema.validate(json.loads(text), SCHEMA)
