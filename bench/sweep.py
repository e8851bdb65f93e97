"""Every transformers model type and every timm family, nncost on meta against a real CPU run.

    PYTHONPATH=src python bench/sweep.py                          # everything, prints the report
    PYTHONPATH=src python bench/sweep.py --library timm --jobs 2
    PYTHONPATH=src python bench/sweep.py --only llama,bert,timm:convnext_atto
    PYTHONPATH=src python bench/sweep.py --write-docs             # the section of docs/zoo.md

transformers: each type of ``CONFIG_MAPPING_NAMES``, from its default config shrunk to a tiny one
(2 layers or the fewest the config accepts, hidden 64, 4 heads, intermediate 128, vocabulary
about 1000, the same in every vision, audio and text sub-config; image and audio geometry kept),
eager attention, its ``AutoModelForCausalLM`` class where it has one, else ``AutoModel``, on 32
tokens of ``input_ids`` or the image, audio or feature input of its ``main_input_name``.
timm: the two smallest models of each family (the module that registers them), by parameters
counted on the meta device, at their default input size capped at 224, ``pretrained=False``.

The truth is a real CPU forward (eval, ``no_grad``, seed 0) counted by PyTorch's
``FlopCounterMode``, with formulas added for the matrix products it has none for
(:data:`EXTRA_FORMULAS`), and the parameters of ``model.parameters()``.  nncost profiles the
same model on meta (its default); params and MACs (FLOPs / 2 of the truth) must be equal.

Each model runs in its own process (forked from a server that imported torch, transformers and
timm once) under a time limit and an address-space cap, so a crash, a hang or a blow-up stops
only that model.  Results are cached in ``bench/.cache/sweep.json`` (``--cache``); a rerun resumes,
``--rerun`` runs the selected models again.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sections import replace_section  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "sweep.json"
TIMM_SIZES = ROOT / "bench" / ".cache" / "timm_params.json"
DOCS = ROOT / "docs" / "zoo.md"
SECTION = "## transformers and timm, every architecture"
SEQ = 32
SEED = 0
MAX_SIDE = 224
TIMM_PER_FAMILY = 2

# -- tiny configs ----------------------------------------------------------------------------
LAYERS = 2
HIDDEN = 64
HEADS = 4
INTERMEDIATE = 128
VOCAB = 1000

LAYER_KEYS = {
    "num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
    "num_encoder_layers", "num_decoder_layers", "num_text_layers", "num_vision_layers", "depth",
    "encoder_depth", "decoder_depth", "num_blocks", "n_layers_encoder", "n_layers_decoder",
    "decoder_num_layers", "num_audio_layers", "text_layers", "vision_layers", "num_self_attends_per_block",
}
HIDDEN_KEYS = {
    "hidden_size", "d_model", "n_embd", "embed_dim", "dim", "model_dim", "hidden_dim", "text_hidden_size",
    "vision_hidden_size", "decoder_hidden_size", "encoder_hidden_size", "word_embed_proj_dim", "d_embed",
    "projection_dim", "proj_dim", "encoder_embed_dim", "decoder_embed_dim", "embedding_dim", "n_embed",
    "kv_lora_rank", "q_lora_rank",
}
HEAD_KEYS = {
    "num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
    "decoder_attention_heads", "decoder_num_attention_heads", "encoder_num_attention_heads", "attention_heads",
}
KV_HEAD_KEYS = {"num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num", "n_kv_heads"}
INTERMEDIATE_KEYS = {
    "intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "n_inner",
    "decoder_intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size", "ffn_hidden_size",
    "expert_intermediate_size", "mlp_dim", "encoder_intermediate_size",
}
SMALL_KEYS = {  # sizes that are neither widths nor depths but make a model large
    "embedding_size": 32, "d_kv": HIDDEN // HEADS, "head_dim": HIDDEN // HEADS, "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8, "v_head_dim": HIDDEN // HEADS, "num_experts": 4, "num_local_experts": 4,
    "n_routed_experts": 4, "moe_num_experts": 4, "num_experts_per_tok": 2, "top_k": 2, "n_shared_experts": 1,
    "max_position_embeddings": 512, "num_codebooks": 2,
}
WIDTH_LISTS = {"hidden_sizes", "embed_dims", "dims", "conv_dim", "channels", "widths", "neck_hidden_sizes",
               "encoder_hidden_sizes", "decoder_hidden_sizes", "block_out_channels", "embed_dim_per_stage"}
HEAD_LISTS = {"num_heads", "num_attention_heads", "heads", "num_attention_heads_per_stage"}
DEPTH_LISTS = {"depths", "num_layers", "layers", "num_hidden_layers", "encoder_layers", "depth"}


def _shrink_int(key: str, value: int) -> int:
    if key in LAYER_KEYS:
        return min(value, LAYERS)
    if key in HIDDEN_KEYS:
        return min(value, HIDDEN)
    if key in HEAD_KEYS:
        return min(value, HEADS)
    if key in KV_HEAD_KEYS:
        return min(value, HEADS // 2 if value > 1 else 1)
    if key in INTERMEDIATE_KEYS:
        return min(value, INTERMEDIATE)
    if key in SMALL_KEYS:
        return min(value, SMALL_KEYS[key])
    return value


def _shrink_list(key: str, values: list[Any]) -> list[Any]:
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return values
    if key in DEPTH_LISTS:
        return [min(v, 1) for v in values]
    if key in WIDTH_LISTS:
        factor = max(1, values[0] // 16)
        return [max(1, v // factor) for v in values]
    if key in HEAD_LISTS:
        factor = max(1, values[0])
        return [max(1, v // factor) for v in values]
    return values


def shrink(config: dict[str, Any], mrope: bool = False) -> dict[str, Any]:
    """A tiny version of a config's dict, every sub-config (a nested dict with a model_type) too;
    ``mrope``: the model splits its rotary dimensions in sections (``[16, 24, 24]`` by default)."""
    out: dict[str, Any] = {}
    layers = {k: v for k, v in config.items() if k in LAYER_KEYS and isinstance(v, int)}
    for key, value in config.items():
        if isinstance(value, dict) and ("model_type" in value or key.endswith("config")):
            out[key] = shrink(value, mrope)
        elif isinstance(value, bool) or value is None:
            out[key] = value
        elif isinstance(value, int):
            out[key] = _shrink_int(key, value)
        elif isinstance(value, list):
            out[key] = _shrink_list(key, value)
        else:
            out[key] = value
    # key/value heads as many as the query heads stay so (MLA, multi-head attention)
    for key in KV_HEAD_KEYS & set(out):
        heads_key = next((h for h in ("num_attention_heads", "n_head", "n_heads", "num_heads") if h in config), None)
        if heads_key and config[key] == config[heads_key] and isinstance(out[heads_key], int):
            out[key] = out[heads_key]
    # a hybrid's layers keep one of each kind (linear and full attention): its first layers may all be one
    for lkey, old in layers.items():
        for value in config.values():
            if isinstance(value, list) and len(value) == old and all(isinstance(v, str) for v in value):
                out[lkey] = max(out[lkey], *(value.index(kind) + 1 for kind in set(value)))
    # per-layer lists (layer_types, sliding windows...) follow the number of layers
    for key, value in list(out.items()):
        if isinstance(value, list) and key not in DEPTH_LISTS | WIDTH_LISTS | HEAD_LISTS:
            for lkey, old in layers.items():
                if len(value) == old and old > out[lkey]:
                    out[key] = value[: out[lkey]]
                    break
    for key in ("out_features", "out_indices"):  # backbone stages named after the old depth: the default
        out.pop(key, None)
    vocab = out.get("vocab_size")
    if isinstance(vocab, int) and vocab > VOCAB:
        special = [v for k, v in out.items() if _is_token_id(k, v)]
        out["vocab_size"] = max([VOCAB, *[v + 1 for v in special if v < vocab]])
    hidden, heads = out.get("hidden_size"), out.get("num_attention_heads")
    if "head_dim" in out and isinstance(hidden, int) and isinstance(heads, int):
        out["head_dim"] = max(1, hidden // heads)
    if "head_dim" in out and isinstance(out.get("qk_rope_head_dim"), int):  # MLA: the rotary part of a head
        out["head_dim"] = out["qk_rope_head_dim"]
    for key in ("rope_parameters", "rope_scaling"):  # multimodal RoPE splits half a head in sections
        rope = out.get(key)
        head = out.get("head_dim") or (hidden // heads if isinstance(hidden, int) and isinstance(heads, int) else 0)
        if isinstance(rope, dict) and head and (mrope or "mrope_section" in rope):
            sections = rope.get("mrope_section") or [16, 24, 24]
            out[key] = {**rope, "mrope_section": resize_sections(sections, head // 2)}
    return out


def resize_sections(sections: list[int], total: int) -> list[int]:
    """Sections in the same proportions, summing to ``total``."""
    old = sum(sections)
    new = [max(1, s * total // old) for s in sections]
    new[-1] += total - sum(new)
    return new


def _is_token_id(key: Any, value: Any) -> bool:
    return isinstance(key, str) and isinstance(value, int) and not isinstance(value, bool) and (
        key.endswith("_token_id") or key.endswith("_token_index") or key.endswith("_token"))


def special_ids(config: Any) -> set[int]:
    found: set[int] = set()
    stack = [config.to_dict()]
    while stack:
        d = stack.pop()
        for k, v in d.items():
            if isinstance(v, dict):
                stack.append(v)
            elif _is_token_id(k, v):
                found.add(v)
            elif isinstance(v, list) and str(k).endswith("token_ids"):
                found.update(x for x in v if isinstance(x, int))
    return found


CONFIG_LEVELS = ("tiny", "2 layers")  # what a model whose tiny config fails is retried with


def tiny_config(model_type: str, level: str = "tiny") -> Any:
    """The default config of ``model_type`` shrunk: every size (``tiny``), or the depths only."""
    import transformers

    default = transformers.AutoConfig.for_model(model_type)
    if level == "tiny":
        small = shrink(default.to_dict(), uses_mrope(type(default)))
    else:
        small = shrink_layers(default.to_dict())
    small.pop("model_type", None)
    small.pop("transformers_version", None)
    return type(default).from_dict(small)


def uses_mrope(config_class: type) -> bool:
    """Whether the model of a config splits RoPE in sections: its modeling code says so."""
    import importlib

    package = config_class.__module__.rsplit(".", 1)[0]
    try:
        module = importlib.import_module(f"{package}.modeling_{package.rsplit('.', 1)[-1]}")
    except ImportError:
        return False
    return "mrope_section" in Path(module.__file__ or "").read_text()


def shrink_layers(config: dict[str, Any]) -> dict[str, Any]:
    """The config's dict with only its numbers of layers cut (and the per-layer lists with them)."""
    kept = {k: v for k, v in config.items() if k in LAYER_KEYS or isinstance(v, (dict, list))}
    small = shrink(kept)
    out = dict(config)
    for key in kept:
        if isinstance(config[key], dict):
            out[key] = shrink_layers(config[key])
        elif key in LAYER_KEYS or key not in WIDTH_LISTS | HEAD_LISTS:
            out[key] = small[key]
    return out


def model_class(model_type: str) -> tuple[Any, str]:
    import transformers
    from transformers.models.auto import modeling_auto as ma

    causal = ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if model_type in causal:
        return transformers.AutoModelForCausalLM, causal[model_type]
    if model_type in ma.MODEL_MAPPING_NAMES:
        name = ma.MODEL_MAPPING_NAMES[model_type]
        return transformers.AutoModel, name if isinstance(name, str) else name[0]
    found = own_model_class(model_type)
    if found is None:
        raise LookupError("no AutoModel or causal-LM class, and no model class of its config")
    return found, found.__name__


def own_model_class(model_type: str) -> Any:
    """A model type without an auto class (``align_text_model``, ``colpali``): the model class of its
    package whose ``config_class`` is its config."""
    import importlib

    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    package = config_class.__module__.rsplit(".", 1)[0]
    candidates = []
    for module_name in (f"{package}.modeling_{package.rsplit('.', 1)[-1]}",):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr in vars(module).values():
            if (isinstance(attr, type) and issubclass(attr, transformers.PreTrainedModel)
                    and getattr(attr, "config_class", None) is config_class
                    and not attr.__name__.endswith("PreTrainedModel")):
                candidates.append(attr)
    # a base model (``…Model``) first, else the head with the shortest name (``ColPaliForRetrieval``)
    return min(candidates, key=lambda c: (not c.__name__.endswith("Model"), len(c.__name__))) if candidates else None


# -- inputs ----------------------------------------------------------------------------------
def _find(config: Any, *names: str, default: Any = None) -> Any:
    """The first attribute of ``names`` on the config or its vision/audio sub-configs."""
    for sub in (config, *(getattr(config, k, None) for k in ("vision_config", "audio_config", "encoder_config",
                                                             "backbone_config", "encoder"))):
        if sub is None:
            continue
        for name in names:
            value = getattr(sub, name, None)
            if value is not None:
                return value
    return default


def _side(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        h, w = (int(value[0]), int(value[-1]))
    else:
        h = w = int(value)
    return min(h, MAX_SIDE), min(w, MAX_SIDE)


def token_ids(config: Any, generator: Any) -> Any:
    import torch

    vocab = _find(config, "vocab_size", default=VOCAB)
    text = getattr(config, "text_config", None)
    if text is not None and getattr(text, "vocab_size", None):
        vocab = text.vocab_size
    vocab = min(int(vocab), 100_000)
    avoid = sorted(special_ids(config))
    allowed = torch.tensor([i for i in range(min(vocab, VOCAB + len(avoid) + 1)) if i not in set(avoid)][:VOCAB])
    return allowed[torch.randint(0, len(allowed), (1, SEQ), generator=generator)]


def pixel_values(config: Any, generator: Any) -> Any:
    import torch

    channels = _find(config, "num_channels", "in_channels", "num_input_channels", default=3)
    size = _find(config, "image_size", "img_size", "input_size", default=224)
    h, w = _side(size)
    return torch.randn(1, int(channels), h, w, generator=generator)


def audio_input(name: str, config: Any, generator: Any) -> Any:
    import torch

    if name == "input_features":
        bins = _find(config, "num_mel_bins", "feature_size", "input_feat_per_channel", "n_mels", default=80)
        source = _find(config, "max_source_positions", default=None)
        frames = 2 * int(source) if source else 3000 if bins == 80 or bins == 128 else 64
        frames = min(frames, 3000)
        if getattr(config, "model_type", "") in ("speech_to_text", "speech2text"):
            return torch.randn(1, 64, int(bins), generator=generator)
        return torch.randn(1, int(bins), frames, generator=generator)
    length, bins = getattr(config, "max_length", None), getattr(config, "num_mel_bins", None)
    if isinstance(length, int) and isinstance(bins, int):  # a spectrogram (audio-spectrogram-transformer)
        return torch.randn(1, length, bins, generator=generator)
    return torch.randn(1, 16000, generator=generator)


GRID = 8  # patches per side of a Qwen2-VL style image


def patches_and_grid(config: Any, params: Any, generator: Any) -> dict[str, Any]:
    """One image of GRID × GRID patches, flattened as the Qwen2-VL family's processors give them."""
    import torch

    channels = int(_find(config, "in_channels", "in_chans", "num_channels", default=3))
    temporal = int(_find(config, "temporal_patch_size", default=2))
    patch = int(_find(config, "patch_size", default=14))
    patches = torch.randn(GRID * GRID, channels * temporal * patch * patch, generator=generator)
    first = next(name for name in params if name != "self")
    return {first: patches, "grid_thw": torch.tensor([[1, GRID, GRID]])}


def input_variants(model: Any, config: Any) -> list[dict[str, Any]]:
    """Keyword inputs to try, in order: the main input (+ decoder ids), then with pixel values."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    main = getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    base: dict[str, Any] = {}
    if main == "input_ids":
        base["input_ids"] = token_ids(config, generator)
    elif main in ("pixel_values", "images", "image", "pixel_values_videos"):
        base[main] = pixel_values(config, generator)
    elif main in ("input_values", "input_features", "audio_values"):
        base[main] = audio_input(main, config, generator)
    else:
        base[main] = token_ids(config, generator)
    if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False) and main != "input_ids":
        base["decoder_input_ids"] = token_ids(getattr(config, "decoder", None) or config, generator)
    elif "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
        base["decoder_input_ids"] = base["input_ids"].clone()
    variants = [base]
    if "grid_thw" in params:  # a Qwen2-VL style vision encoder: flattened patches and their grid
        variants.append(patches_and_grid(config, params, generator))
    if main == "input_features" and base[main].dim() == 3:  # (batch, frames, bins) encoders (conformers)
        variants.append({**base, main: base[main].transpose(1, 2).contiguous()})
    if main == "input_values" and base[main].dim() == 2:  # a codec's (batch, channels, samples) waveform
        variants.append({**base, main: base[main].unsqueeze(1)})
    if "pixel_values" in params and "pixel_values" not in base:
        variants.append({**base, "pixel_values": pixel_values(config, generator)})
    if "input_ids" in params and "input_ids" not in base:
        variants.append({**base, "input_ids": token_ids(config, generator)})
    return variants


# -- the truth -------------------------------------------------------------------------------
def _prod(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _mv(a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * _prod(a)


def _addmv(c: Any, a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * _prod(a)


def _dot(a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * _prod(a)


def _addr(c: Any, a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * _prod(a) * _prod(b)


def _addbmm(c: Any, a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * _prod(a) * int(b[-1])


def _int_mm(a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * _prod(a) * int(b[-1])


def _grouped_mm(a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    # out (M, N) for 2d×3d with offsets: every row meets one expert's (K, N) matrix
    k = int(a[-1])
    return 2 * _prod(out_shape) * k


def _sdpa_cpu(q: Any, k: Any, v: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    # (B, H, L, E) queries against (B, H, S, E) keys and (B, H, S, Ev) values: Q·Kᵀ and P·V, dense
    return 2 * _prod(q[:-1]) * int(k[-2]) * (int(q[-1]) + int(v[-1]))


def _euclidean_dist(x1: Any, x2: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    # the matmul form: x1·x2ᵀ on inputs augmented with the two norms (M + 2 columns)
    return 2 * _prod(x1[:-1]) * int(x2[-2]) * (int(x1[-1]) + 2)


def _mkldnn_rnn_layer(x: Any, w_ih: Any, w_hh: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    # every step multiplies the input by w_ih and the state by w_hh; steps × batch = numel(x)/I
    steps = _prod(x[:-1])
    return 2 * steps * (_prod(w_ih) + _prod(w_hh))


def _solve_triangular(a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any) -> int:
    n = int(a[-1])
    rhs = _prod(b) // n
    return 2 * rhs * (n * (n - 1) // 2)


EXTRA_FORMULAS: dict[str, Callable[..., int]] = {
    "mv": _mv, "addmv": _addmv, "dot": _dot, "vdot": _dot, "addr": _addr, "addbmm": _addbmm,
    "_int_mm": _int_mm, "_grouped_mm": _grouped_mm, "_euclidean_dist": _euclidean_dist,
    "mkldnn_rnn_layer": _mkldnn_rnn_layer, "linalg_solve_triangular": _solve_triangular,
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu,
}


def flop_counter() -> Any:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    for name, fn in EXTRA_FORMULAS.items():
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            mapping[packet] = fn
    return FlopCounterMode(display=False, custom_mapping=mapping)


def real_run(model: Any, kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """FLOPs of a real forward by FlopCounterMode, or, where its module tracking breaks the forward
    (it wraps each module's inputs in an autograd function), by its formulas alone."""
    import torch

    counter = flop_counter()
    torch.manual_seed(SEED)
    try:
        with torch.no_grad(), counter:
            model(**kwargs)
    except AssertionError as exc:
        if "gradient function" not in str(exc):
            raise
        flops, per_op = formulas_only_run(model, kwargs, counter.flop_registry)
        return flops, {**per_op, "counted by": "FlopCounterMode's formulas, without its module tracking"}
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def formulas_only_run(model: Any, kwargs: dict[str, Any], registry: dict[Any, Any]) -> tuple[int, dict[str, int]]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    per_op: Counter[str] = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kw: Any = None) -> Any:
            kw = kw or {}
            out = func(*args, **kw)
            packet = func._overloadpacket
            if packet in registry:
                per_op[str(packet)] += int(registry[packet](*args, **kw, out_val=out))
            return out

    torch.manual_seed(SEED)
    with torch.no_grad(), Count():
        model(**kwargs)
    return sum(per_op.values()), dict(per_op)


def distinct_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# -- one model, in its own process -----------------------------------------------------------
def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if "/nncost/" in frame.filename:
            return f"{frame.filename.split('/src/')[-1]}:{frame.lineno}"
    last = frames[-1] if frames else None
    return f"{last.filename.split('site-packages/')[-1]}:{last.lineno}" if last else ""


def build_transformers(name: str, level: str = "tiny") -> tuple[Any, Any, str]:
    import torch

    config = tiny_config(name, level)
    auto, cls = model_class(name)
    torch.manual_seed(SEED)
    if hasattr(auto, "from_config"):
        model = auto.from_config(config, attn_implementation="eager")
    else:
        model = auto._from_config(config, attn_implementation="eager")
    return model, config, cls


def timm_size(name: str) -> tuple[int, ...]:
    """The default input of a timm model, its sides capped at 224."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
    return (size[0], *(min(s, MAX_SIDE) for s in size[1:]))


def build_timm(name: str) -> tuple[Any, Any, str]:
    import timm
    import torch

    torch.manual_seed(SEED)
    cfg = timm.get_pretrained_cfg(name)
    size = timm_size(name)
    if cfg is not None and cfg.input_size and tuple(cfg.input_size) != size:
        try:  # a model built for its input size (a fixed grid of positions) is built for the capped one
            return build_timm_at(name, size[1:])
        except TypeError:
            pass
    model = timm.create_model(name, pretrained=False)
    return model, None, type(model).__name__


def build_timm_at(name: str, side: tuple[int, ...]) -> tuple[Any, Any, str]:
    import timm
    import torch

    torch.manual_seed(SEED)
    model = timm.create_model(name, pretrained=False, img_size=side)
    return model, None, type(model).__name__


def timm_inputs(name: str) -> list[dict[str, Any]]:
    import torch

    shape = (1, *timm_size(name))
    return [{"x": torch.randn(*shape, generator=torch.Generator().manual_seed(SEED))}]


def build_and_run(library: str, name: str, level: str) -> dict[str, Any]:
    """The model built at ``level`` and its real run; a failure is a dict with ``outcome``."""
    try:
        if library == "timm":
            model, config, cls = build_timm(name)
            variants = timm_inputs(name)
        else:
            model, config, cls = build_transformers(name, level)
            variants = input_variants(model, config)
        model.eval()
    except Exception as exc:
        return {"outcome": "no build", "stage": "build", "reason": _reason(exc), "where": _where(exc)}
    error: BaseException | None = None
    for kwargs in variants:
        try:
            flops, per_op = real_run(model, kwargs)
        except Exception as exc:
            error = error or exc
            continue
        return {"class": cls, "config": level, "params_truth": distinct_params(model), "model": model,
                "kwargs": kwargs, "flops": flops, "per_op": per_op}
    assert error is not None
    return {"outcome": "real run fails", "stage": "real", "class": cls, "reason": _reason(error),
            "where": _where(error)}


def worth_retrying(reason: str) -> bool:
    """Whether a failure of the tiny config may be the shrinking's: not a missing model class, nor an
    input the forward wants and the sweep does not give (a bigger config would fail the same way)."""
    if reason.startswith("LookupError"):
        return False
    inputs = ("required positional argument", "unexpected keyword argument", "You have to specify", "must specify")
    return not any(text in reason for text in inputs)


def measure(library: str, name: str) -> dict[str, Any]:
    """Build, run for real under FlopCounterMode, profile with nncost; every stage's failure recorded."""
    import torch

    import nncost

    torch.set_num_threads(1)
    row: dict[str, Any] = {"library": library, "name": name}
    start = time.perf_counter()
    levels = ("default",) if library == "timm" else CONFIG_LEVELS
    failure: dict[str, Any] = {}
    for level in levels:
        attempt = build_and_run(library, name, level)
        if "outcome" not in attempt:
            break
        failure = failure or attempt
        if not worth_retrying(attempt["reason"]):
            break
    if "outcome" in attempt:
        row.update(failure)
        row["seconds"] = round(time.perf_counter() - start, 2)
        if attempt["stage"] != failure["stage"] or attempt["reason"] != failure["reason"]:
            row["reason_" + levels[-1].replace(" ", "_")] = attempt["reason"]
        return row
    model, kwargs = attempt.pop("model"), attempt.pop("kwargs")
    flops, per_op = attempt.pop("flops"), attempt.pop("per_op")
    row.update(attempt)
    if failure:
        row["tiny_failed"] = failure["reason"]
    row["inputs"] = {k: list(v.shape) for k, v in kwargs.items()}
    row["flops_truth"] = flops
    row["macs_truth"] = flops // 2
    row["truth_ops"] = per_op
    torch.manual_seed(SEED)  # a model nncost must run for real draws what the truth's run drew
    try:
        if library == "timm":
            report = nncost.profile(model, inputs=kwargs["x"])
        else:
            report = nncost.profile(model, kwargs=kwargs)
    except Exception as exc:
        row.update(outcome="nncost fails", stage="nncost", reason=_reason(exc), where=_where(exc))
        row["traceback"] = traceback.format_exc()[-3000:]
        row["seconds"] = round(time.perf_counter() - start, 2)
        return row
    row["params"] = report.totals.params
    row["macs"] = report.totals.macs
    row["execution"] = report.execution
    row["fallback_reason"] = report.fallback_reason
    row["uncounted"] = {u.op: u.calls for u in report.uncounted}
    exact = row["params"] == row["params_truth"] and row["macs"] == row["macs_truth"] and flops % 2 == 0
    row["outcome"] = "exact" if exact else "differs"
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def timm_family_sizes(module: str) -> dict[str, int | None]:
    """Parameters of every model of a timm family, counted on the meta device."""
    import timm
    import torch
    from timm.models import _registry

    sizes: dict[str, int | None] = {}
    for name in sorted(_registry._module_to_models[module]):
        try:
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
            sizes[name] = sum(p.numel() for p in model.parameters())
        except Exception:
            sizes[name] = None
    return sizes


def _child(task: tuple[str, str], conn: Connection, cap_bytes: int) -> None:
    library, name = task
    if cap_bytes:
        status = Path("/proc/self/status").read_text()
        vm = int(status.split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + cap_bytes, vm + cap_bytes))
    try:
        import warnings

        warnings.filterwarnings("ignore")
        result: Any = timm_family_sizes(name) if library == "timm-sizes" else measure(library, name)
    except BaseException as exc:
        result = {"library": library, "name": name, "outcome": "harness error", "reason": _reason(exc)}
    conn.send(result)
    conn.close()


# what every model imports: once, in the server the models' processes fork from
PRELOAD = ["torch", "torch.utils.flop_counter", "timm", "nncost", "transformers", "transformers.modeling_utils",
           "transformers.models.auto.modeling_auto", "transformers.generation"]


# -- the pool --------------------------------------------------------------------------------
def run_all(tasks: list[tuple[str, str]], jobs: int, timeout: float, cap_bytes: int,
            done: Callable[[tuple[str, str], Any], None]) -> None:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    pending = list(tasks)
    running: dict[tuple[str, str], tuple[Any, Connection, float]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            task = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(task, child, cap_bytes), daemon=True)
            proc.start()
            child.close()
            running[task] = (proc, parent, time.monotonic())
        time.sleep(0.2)
        for task, (proc, conn, started) in list(running.items()):
            result: Any = None
            if conn.poll():
                try:
                    result = conn.recv()
                except (EOFError, OSError):
                    result = {"outcome": "process died", "reason": f"exit code {proc.exitcode}"}
            elif not proc.is_alive():
                killed = " (memory cap)" if proc.exitcode in (-9, -6) else ""
                result = {"outcome": "process died", "reason": f"exit code {proc.exitcode}{killed}"}
            elif time.monotonic() - started > timeout:
                proc.kill()
                result = {"outcome": "timeout", "reason": f"over {timeout:.0f} s"}
            if result is None:
                continue
            proc.join(5)
            conn.close()
            del running[task]
            if isinstance(result, dict) and "library" not in result:
                result.update(library=task[0], name=task[1], seconds=round(time.monotonic() - started, 1))
            done(task, result)


# -- selection -------------------------------------------------------------------------------
def transformers_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(CONFIG_MAPPING_NAMES)


def timm_families() -> dict[str, list[str]]:
    import timm
    from timm.models import _registry

    families: dict[str, list[str]] = defaultdict(list)
    for name in timm.list_models():
        families[_registry._model_to_module[name]].append(name)
    return dict(sorted(families.items()))


def timm_selection(jobs: int, timeout: float, cap_bytes: int, log: Callable[[str], None]) -> dict[str, list[str]]:
    """The two smallest models of each timm family (sizes cached in bench/.cache/timm_params.json)."""
    families = timm_families()
    sizes: dict[str, dict[str, int | None]] = json.loads(TIMM_SIZES.read_text()) if TIMM_SIZES.exists() else {}
    missing = [("timm-sizes", module) for module in families if module not in sizes]
    if missing:
        log(f"counting parameters of {len(missing)} timm families on meta")

        def keep(task: tuple[str, str], result: Any) -> None:
            sizes[task[1]] = result if isinstance(result, dict) and "outcome" not in result else {}
            TIMM_SIZES.parent.mkdir(parents=True, exist_ok=True)
            TIMM_SIZES.write_text(json.dumps(sizes, indent=1, sort_keys=True))

        run_all(missing, jobs, max(timeout, 600), cap_bytes, keep)
    chosen: dict[str, list[str]] = {}
    for module, names in families.items():
        known = sizes.get(module, {})
        ranked = sorted(names, key=lambda n: (known.get(n) is None, known.get(n) or 0, n))
        chosen[module] = ranked[:TIMM_PER_FAMILY]
    return chosen


# -- the report ------------------------------------------------------------------------------
OUTCOMES = ("exact", "differs", "nncost fails", "real run fails", "no build", "timeout", "process died",
            "harness error")


def cause(row: dict[str, Any]) -> str:
    """Why a row that ran for real is not exact, in one line."""
    parts = []
    if row.get("params") != row.get("params_truth"):
        parts.append(f"params {row.get('params'):,} vs {row.get('params_truth'):,}")
    if row.get("macs") != row.get("macs_truth"):
        parts.append(f"MACs {row.get('macs'):,} vs {row.get('macs_truth'):,}")
    if row.get("uncounted"):
        parts.append("uncounted " + ", ".join(sorted(row["uncounted"])))
    if row.get("execution") == "real":
        parts.append("nncost ran it for real")
    return "; ".join(parts)


def summary_table(rows: list[dict[str, Any]]) -> list[str]:
    counts = {lib: Counter(r["outcome"] for r in rows if r["library"] == lib) for lib in ("transformers", "timm")}
    lines = ["| library | models | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 2) + "|"]
    for lib, counter in counts.items():
        total = sum(counter.values())
        lines.append(f"| {lib} | {total} | " + " | ".join(str(counter.get(o, 0)) for o in OUTCOMES) + " |")
    return lines


def report(rows: list[dict[str, Any]], command: str, seconds: float) -> str:
    import timm
    import torch
    import transformers

    lines = [
        SECTION,
        "",
        "Generated by:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"{datetime.date.today().isoformat()}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"timm {timm.__version__}, Python {platform.python_version()}, {platform.machine()}; "
        f"{len(rows)} models, {seconds / 60:.0f} min of runs on two shared cores. The sweep ran once over "
        "everything, then again (`--rerun --only ...`) for the models whose configs or inputs it had "
        "since learnt to build (MLA heads, multimodal RoPE sections, conformer features, Qwen2-VL "
        "style patches, sub-model "
        "classes); each row is its model's last run, from the cache.",
        "",
        "*exact*: nncost's params equal the real model's `parameters()` and its MACs equal "
        "FlopCounterMode's FLOPs / 2 on the real CPU forward; *differs*: both ran and a figure is not "
        "equal; *nncost fails*: the real forward ran and nncost's meta profile raised; *real run fails*: "
        "the model's own forward fails on the sweep's config and input, without nncost (transformers or "
        "timm, or an input the sweep does not give); *no build*: no model class for the type, or the "
        "config refuses the small sizes; *timeout*, *process died*: the sweep's limits (120 s, 6 GiB of "
        "address space per model).",
        "",
        "How each model is built and run is in `bench/sweep.py`'s docstring: transformers types from "
        "their default config shrunk to 2 layers, hidden 64, 4 heads, intermediate 128, vocabulary about "
        "1000 (sub-configs too; when the tiny config fails, the default widths with 2 layers are tried), "
        "eager attention, the causal-LM class where there is one, else `AutoModel`, on 32 tokens or the "
        "image, audio or feature input of `main_input_name`; timm, the two smallest models of each "
        "family at their default input size capped at 224. FlopCounterMode has no formula for "
        f"{', '.join(f'`{n}`' for n in EXTRA_FORMULAS)}; the sweep adds one for each, written apart "
        "from nncost's rules (`EXTRA_FORMULAS`)" + _met(rows) + ".",
        "",
        *summary_table(rows),
        "",
    ]
    bad = [r for r in rows if r["outcome"] in ("differs", "nncost fails")]
    ran = [r for r in rows if r["outcome"] in ("exact", "differs", "nncost fails")]
    if not bad:
        lines += [f"Every one of the {len(ran)} models that ran for real is exact: params and MACs equal, "
                  "and nncost never failed where the model itself runs.", ""]
    lines += execution_table(ran)
    if bad:
        lines += ["### Not exact", "", "| library | model | class | outcome | cause |", "|---|---|---|---|---|"]
        for r in sorted(bad, key=lambda r: (r["library"], r["name"])):
            why = KNOWN_CAUSES.get(f"{r['library']}:{r['name']}") or (
                cause(r) if r["outcome"] == "differs" else f"{r.get('reason', '')} ({r.get('where', '')})")
            lines.append(f"| {r['library']} | {r['name']} | {r.get('class', '')} | {r['outcome']} | {_cell(why)} |")
        lines.append("")
    other = [r for r in rows if r["outcome"] not in ("exact", "differs", "nncost fails")]
    if other:
        kinds = Counter(failure_kind(r) for r in other)
        lines += ["### Not run", "",
                  "Models whose own real forward did not run on the sweep's config and input (nncost is not "
                  "involved), by kind, with the tiny config's reason. A failure that may be the shrinking's (not "
                  "a missing input or model class) was retried at the default widths with 2 layers and failed "
                  "again, most often at the memory cap:", "",
                  "| kind | models |", "|---|---|"]
        lines += [f"| {kind} | {n} |" for kind, n in kinds.most_common()]
        lines += ["", "| library | model | outcome | kind | reason |", "|---|---|---|---|---|"]
        for r in sorted(other, key=lambda r: (r["library"], r["name"])):
            reason = str(r.get("reason", ""))[:160]
            lines.append(f"| {r['library']} | {r['name']} | {r['outcome']} | {failure_kind(r)} | {_cell(reason)} |")
        lines.append("")
    return "\n".join(lines)


def execution_table(ran: list[dict[str, Any]]) -> list[str]:
    """How nncost ran the models that ran: on meta, or for real, and why (the first operator that
    refused meta tensors, by its message)."""
    import re

    real = [r for r in ran if r.get("execution") == "real"]
    if not real:
        return []
    why: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for r in real:
        reason = str(r.get("fallback_reason") or "")
        reason = reason.split("): ", 1)[-1].split(". ")[0]
        reason = re.sub(r"\d+", "N", reason)[:100]
        why[reason] += 1
        examples[reason].append(r["name"])
    lines = [f"nncost profiled {len(ran) - len(real)} of them on meta and {len(real)} for real, where an "
             "operator refused meta tensors (its report says so, and why):", "",
             "| why nncost ran it for real | models | for example |", "|---|---|---|"]
    for reason, n in why.most_common():
        lines.append(f"| {_cell(reason)} | {n} | {', '.join(sorted(examples[reason])[:4])} |")
    lines += ["", "They need values (`.item()`, `.tolist()`, `nonzero`, `repeat_interleave` by counts) that follow "
              "from the weights, or an operator whose output size depends on values, but for the last two, "
              "where a 0-dim CPU tensor made inside the forward meets meta activations (`masked_fill` with a "
              "`torch.tensor` value in SEW-D). Values that follow from known ones (positions, masks, the inputs' "
              "and small parameters' values) are answered on meta (capture/shadows.py). Mixture-of-experts "
              "layers (`_grouped_mm`) run on meta: capture/meta_kernels.py answers the kernel whose meta "
              "version takes 16-bit matrices only."]
    return [*lines, ""]


def _met(rows: list[dict[str, Any]]) -> str:
    """Which of the added formulas the real runs met, and in how many models."""
    met: Counter[str] = Counter()
    for r in rows:
        for op in r.get("truth_ops") or {}:
            name = op.removeprefix("aten.")
            if name in EXTRA_FORMULAS:
                met[name] += 1
    if not met:
        return ""
    return "; the real runs met " + ", ".join(f"`{op}` in {n}" for op, n in met.most_common())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def failure_kind(row: dict[str, Any]) -> str:
    """What kind of failure kept a model from running for real, from its reason."""
    reason = str(row.get("reason", ""))
    if row["outcome"] in ("timeout", "process died", "harness error"):
        return row["outcome"]
    if row["library"] == "timm":
        return "refuses the input size capped at 224" if "size" in reason or not reason.split(":", 1)[1].strip() \
            else "fails in timm's own code"
    if reason.startswith("LookupError"):
        return "no model class for the type"
    if any(text in reason for text in ("required positional argument", "unexpected keyword argument",
                                       "You have to specify", "must specify", "must be provided")):
        return "needs an input the sweep does not give"
    if "ValidationError" in reason or "config" in reason.lower():
        return "the config rejects the tiny sizes"
    return "fails in the model's own code on the tiny config"


# causes found by hand for models that differ, by "library:name"
KNOWN_CAUSES: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", choices=("transformers", "timm"), action="append",
                    help="one library (default: both)")
    ap.add_argument("--only", help="comma-separated names: transformers model types, or timm:NAME")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per model")
    ap.add_argument("--memory-gib", type=float, default=6, help="address space a model may add, GiB")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--rerun", action="store_true", help="run the selected models again")
    ap.add_argument("--rerun-outcome", default="", help="comma-separated outcomes whose cached models run again")
    ap.add_argument("--write-docs", action="store_true", help="write the section of --out (docs/zoo.md)")
    ap.add_argument("--out", type=Path, default=DOCS)
    a = ap.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    cap = int(a.memory_gib * 2**30)
    libraries = a.library or ["transformers", "timm"]
    tasks: list[tuple[str, str]] = []
    if a.only:
        for item in a.only.split(","):
            item = item.strip()
            if item.startswith("timm:"):
                tasks.append(("timm", item[5:]))
            elif item:
                tasks.append(("transformers", item))
    else:
        if "transformers" in libraries:
            tasks += [("transformers", t) for t in transformers_types()]
        if "timm" in libraries:
            chosen = timm_selection(a.jobs, a.timeout, cap, log)
            tasks += [("timm", n) for names in chosen.values() for n in names]
    cache: dict[str, Any] = json.loads(a.cache.read_text()) if a.cache.exists() else {}
    again = set(filter(None, a.rerun_outcome.split(",")))
    todo = [t for t in tasks if a.rerun or f"{t[0]}:{t[1]}" not in cache
            or cache[f"{t[0]}:{t[1]}"].get("outcome") in again]
    log(f"{len(tasks)} models, {len(todo)} to run")
    started = time.monotonic()
    pending_names = {f"{t[0]}:{t[1]}" for t in todo}

    def done(task: tuple[str, str], result: Any) -> None:
        cache[f"{task[0]}:{task[1]}"] = result
        a.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(a.cache)
        finished = len(todo) - len(pending_names) + 1
        pending_names.discard(f"{task[0]}:{task[1]}")
        extra = cause(result) if result.get("outcome") == "differs" else result.get("reason", "")
        log(f"[{finished}/{len(todo)}] {task[0]}:{task[1]}: {result.get('outcome')} "
            f"{result.get('seconds', '')} s {extra}"[:300])

    run_all(todo, a.jobs, a.timeout, cap, done)
    rows = [cache[f"{t[0]}:{t[1]}"] for t in tasks]
    seconds = sum(float(r.get("seconds") or 0) for r in rows)
    command = "PYTHONPATH=src python bench/sweep.py " + " ".join(
        arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--write-docs")
    text = report(rows, command.strip(), seconds)
    if a.write_docs:
        replace_section(a.out, SECTION, text, new_page="# nncost against published figures\n", ends=("## ",))
        log(f"wrote {a.out}")
    else:
        print(text)
    log(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
