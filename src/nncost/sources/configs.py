"""Transformers model configs: an architecture's default, a local ``config.json``, a Hub
repository's config, and ``KEY=VALUE`` overrides of any of them.

A config is read as ``transformers.AutoConfig.from_pretrained`` reads it; from the Hub only
``config.json`` is fetched (through ``huggingface_hub``, so the local cache answers offline),
never weights.  A custom architecture (``auto_map``, or a ``model_type`` transformers does not
know) is built only with ``trust_remote_code``, because building it runs its repository's
Python code.  Overrides change the config as it was written, before transformers derives
anything from it, so ``hidden_size=...`` also changes the ``head_dim`` computed from it.

Nothing here imports torch or transformers at module level: the command line's parser reads
:func:`parse_override` without them.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from nncost.errors import BadRequest, ModelNotFound, NncostWarning, did_you_mean

CONFIG_FILE = "config.json"
# the fields of a transformers config that set a model's size, by their canonical names: one the
# file leaves out is filled by the class's default, which is said (:func:`defaulted_sizes`)
SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
               "vocab_size", "max_position_embeddings", "num_local_experts", "num_experts", "num_experts_per_tok",
               "moe_intermediate_size", "n_routed_experts")
HUB_TIMEOUT = 2.0  # seconds the Hub's host has to accept a connection before nncost reads only its cache


def parse_override(text: str) -> tuple[str, Any]:
    """``num_hidden_layers=2`` → ``("num_hidden_layers", 2)``: the value is a JSON literal
    (``2``, ``1e-5``, ``true``, ``null``, ``[1, 2]``), else the text as a string."""
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise BadRequest(f"config override {text!r} is not KEY=VALUE, e.g. num_hidden_layers=2")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parse_overrides(texts: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Every ``KEY=VALUE`` of the command line; a key given twice keeps its last value."""
    return dict(parse_override(text) for text in texts)


def is_config_path(name: str) -> bool:
    """A MODEL string naming a local config: a directory, or a ``.json`` file."""
    return name.lower().endswith(".json") or Path(name).is_dir()


def load_config(name: str, overrides: Mapping[str, Any] | None = None, trust_remote_code: bool = False) -> Any:
    """The ``PretrainedConfig`` a MODEL string names, overrides applied.

    ``hf:NAME``: the architecture's default config; ``hf:ORG/NAME`` (``@REVISION`` optional):
    the Hub repository's config; anything else: a directory holding ``config.json``, or the file.
    """
    if name.startswith("hf:"):
        repo = name.removeprefix("hf:")
        if "/" not in repo:
            return default_config(repo, overrides)
        repo_id, _, revision = repo.partition("@")
        return hub_config(repo_id, revision or None, overrides, trust_remote_code)
    return local_config(Path(name), overrides, trust_remote_code)


def default_config(model_type: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The default config of a transformers architecture (``llama``, ``gpt2``, ``bert``)."""
    transformers = _transformers()
    from transformers.models.auto import configuration_auto

    known = list(configuration_auto.CONFIG_MAPPING_NAMES)
    if model_type not in known:
        raise ModelNotFound(f"unknown transformers architecture {model_type!r}"
                            f"{did_you_mean(model_type, known, prefix='hf:')}")
    return with_overrides(transformers.AutoConfig.for_model(model_type), {"model_type": model_type}, overrides)


def local_config(path: Path, overrides: Mapping[str, Any] | None = None, trust_remote_code: bool = False) -> Any:
    """The config of a directory holding ``config.json``, or of the file itself."""
    file = path / CONFIG_FILE if path.is_dir() else path
    if not file.is_file():
        raise ModelNotFound(f"{path} has no {CONFIG_FILE}" if path.is_dir() else f"no such file: {path}")
    raw = read_json(file)
    check_code(raw, str(path), trust_remote_code)
    config = with_overrides(_from_pretrained(str(path), trust_remote_code), raw, overrides)
    _warn_defaults(config, raw, overrides, str(file))
    return config


def hub_config(repo_id: str, revision: str | None = None, overrides: Mapping[str, Any] | None = None,
               trust_remote_code: bool = False) -> Any:
    """A Hub repository's config: ``config.json`` only, from the network or the local cache.

    The repository's code (``auto_map``) is fetched by transformers only when trusted.
    """
    file = download_config(repo_id, revision)
    raw = read_json(file)
    check_code(raw, f"hf:{repo_id}", trust_remote_code)
    if trust_remote_code and raw.get("auto_map"):
        config = _from_pretrained(repo_id, True, revision=revision)
    else:
        config = _from_pretrained(str(file.parent), False)
    config = with_overrides(config, raw, overrides)
    _warn_defaults(config, raw, overrides, f"hf:{repo_id}'s {CONFIG_FILE}")
    return config


def download_config(repo_id: str, revision: str | None = None) -> Path:
    """``config.json`` of a Hub repository, through the local cache; one sentence when it
    cannot be had.  Whether the Hub answers is asked once, in :data:`HUB_TIMEOUT` seconds, so an
    offline machine reads its cache, or says it has no copy, without huggingface_hub's retries."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub import errors as hub
    except ImportError as exc:
        raise ModelNotFound("hf:ORG/NAME models need huggingface_hub: pip install 'nncost[hf]'") from exc
    where = f"hf:{repo_id}" + (f"@{revision}" if revision else "")
    offline = bool(constants.HF_HUB_OFFLINE)
    unreachable = not offline and not hub_reachable(constants.ENDPOINT)
    try:
        return Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision, local_files_only=offline or unreachable))
    except hub.LocalEntryNotFoundError:
        why = (" (HF_HUB_OFFLINE is set)" if offline
               else f" ({constants.ENDPOINT} did not answer in {HUB_TIMEOUT:g} s)" if unreachable else "")
        raise ModelNotFound(f"cannot read the config of {where}: the Hugging Face Hub cannot be reached{why} "
                            f"and the local cache ({constants.HF_HUB_CACHE}) has no copy of it") from None
    except hub.GatedRepoError:
        raise ModelNotFound(f"{where} is gated: accept its terms on huggingface.co and log in (hf auth login) "
                            "to read its config") from None
    except hub.RepositoryNotFoundError:
        raise ModelNotFound(f"no Hub repository {repo_id!r} (a private one needs hf auth login)") from None
    except hub.RevisionNotFoundError:
        raise ModelNotFound(f"{repo_id!r} has no revision {revision!r}") from None
    except hub.EntryNotFoundError:
        raise ModelNotFound(f"{where} has no {CONFIG_FILE}: it is not a transformers model") from None
    except hub.HfHubHTTPError as exc:
        raise ModelNotFound(f"cannot read the config of {where}: {exc}".splitlines()[0]) from None


def hub_reachable(endpoint: str, timeout: float | None = None) -> bool:
    """Whether a TCP connection to the Hub's host (or the HTTPS proxy in the environment) opens
    within ``timeout`` seconds (:data:`HUB_TIMEOUT`), name lookup included: the attempt runs in
    a daemon thread, so a resolver that does not answer cannot hold the command longer."""
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlsplit

    proxy = urllib.request.getproxies().get(urlsplit(endpoint).scheme or "https")
    url = urlsplit(proxy if proxy and not urllib.request.proxy_bypass(urlsplit(endpoint).hostname or "")
                   else endpoint)
    if url.hostname is None:
        return True  # nothing to ask: let huggingface_hub say what is wrong
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    limit = HUB_TIMEOUT if timeout is None else timeout
    answered, opened = threading.Event(), []

    def connect() -> None:
        try:
            with socket.create_connection(address, timeout=limit):
                opened.append(True)
        except OSError:
            pass
        answered.set()

    threading.Thread(target=connect, daemon=True, name="nncost-hub-check").start()
    return answered.wait(limit) and bool(opened)


def defaulted_sizes(config: Any, raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fields of :data:`SIZE_FIELDS` that ``config`` has but neither the file it was read
    from (``raw``, under any alias of the class's ``attribute_map``) nor ``overrides`` gives: the
    values its class took from its defaults, by their names in the file (``n_embd`` for gpt2)."""
    aliases = type(config).attribute_map
    given = {aliases.get(key, key) for key in (*raw, *(overrides or {}))}
    values = config.to_dict()
    fields = dict.fromkeys(aliases.get(name, name) for name in SIZE_FIELDS)
    defaulted = {key: values[key] for key in fields if key in values and key not in given and values[key] is not None}
    heads = values.get(aliases.get("num_attention_heads", "num_attention_heads"))
    if "num_key_value_heads" in defaulted and defaulted["num_key_value_heads"] == heads:
        del defaulted["num_key_value_heads"]  # left out, as multi-head attention's files do
    return defaulted


def _warn_defaults(config: Any, raw: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str) -> None:
    defaulted = defaulted_sizes(config, raw, overrides)
    if defaulted:
        fields = ", ".join(f"{key}={value!r}" for key, value in defaulted.items())
        warnings.warn(f"{where} does not give {fields}: {type(config).__name__}'s defaults, which size the "
                      "model, are used (set them in the file or with --config KEY=VALUE)", NncostWarning,
                      stacklevel=3)


class ContextLimit(NamedTuple):
    """The most tokens a model reads in one sequence, and where the figure comes from (the
    config field, or the rope scaling that extends it)."""

    tokens: int
    source: str


# the config fields that bound the positions a model reads, first match wins (an alias of the
# class's attribute_map counts: gpt2's max_position_embeddings is its n_positions)
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
# rope types whose factor stretches the original positions; llama3 and longrope configs give
# their extended context as max_position_embeddings itself
STRETCHING_ROPE = ("linear", "dynamic", "yarn")


def context_limit(config: Any) -> ContextLimit | None:
    """The context a transformers config allows: its position field (:data:`POSITION_FIELDS`),
    or, with ``rope_scaling`` (``rope_parameters``) of a stretching type, ``factor`` × the
    original positions (``original_max_position_embeddings``, else the position field) when that
    is larger (yarn's 4 × 32,768 = 131,072).  None when the config bounds no positions (relative
    position schemes such as T5's, or a module without a config)."""
    if config is None:
        return None
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    aliases = getattr(type(text), "attribute_map", {})
    for name in POSITION_FIELDS:
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            base = ContextLimit(value, f"{aliases.get(name, name)} in its config")
            return _rope_stretched(text, base) or base
    return None


def _rope_stretched(config: Any, base: ContextLimit) -> ContextLimit | None:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(params, Mapping):
        return None
    # one set of parameters, or one per attention type (gemma3's full and sliding attention)
    sets = list(params.values()) if params and all(isinstance(v, Mapping) for v in params.values()) else [params]
    best = None
    for rope in sets:
        kind, factor = rope.get("rope_type") or rope.get("type"), rope.get("factor")
        if kind not in STRETCHING_ROPE or not isinstance(factor, (int, float)) or factor <= 1:
            continue
        original = rope.get("original_max_position_embeddings") or getattr(config, "original_max_position_embeddings",
                                                                           None)
        field = "original_max_position_embeddings" if original else base.source.removesuffix(" in its config")
        original = original or base.tokens
        tokens = int(factor * original)
        if tokens > base.tokens and (best is None or tokens > best.tokens):
            best = ContextLimit(tokens, f"rope_scaling {kind}: factor {factor:g} × {field} {original:,}")
    return best


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelNotFound(f"{file} is not a readable JSON config: {exc}") from None
    if not isinstance(data, dict):
        raise ModelNotFound(f"{file} is not a config: its JSON is a {type(data).__name__}, not an object")
    return data


def check_code(raw: Mapping[str, Any], where: str, trust_remote_code: bool) -> None:
    """Refuse a config whose model only its repository's code can build, unless trusted.

    A ``model_type`` transformers knows is built by transformers' own classes (as
    ``from_pretrained`` does without ``trust_remote_code``), whatever ``auto_map`` says.
    """
    transformers = _transformers()
    from transformers.models.auto import configuration_auto

    model_type = raw.get("model_type")
    known = list(configuration_auto.CONFIG_MAPPING_NAMES)
    if model_type in known or (raw.get("auto_map") and trust_remote_code):
        return
    if raw.get("auto_map"):
        raise BadRequest(f"{where} is a custom architecture (model_type {model_type!r}, built by the code its "
                         "auto_map names): building it runs that repository's Python code on this machine, so "
                         "nncost does it only with --trust-remote-code (trust_remote_code=True)")
    if model_type is None:
        raise ModelNotFound(f"{where} names no model_type: it is not a transformers config")
    raise ModelNotFound(f"transformers {transformers.__version__} does not know model_type {model_type!r}, and "
                        f"{where} has no auto_map naming its code{did_you_mean(str(model_type), known)}")


def with_overrides(config: Any, raw: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> Any:
    """``config`` rebuilt from the ``raw`` dict it was read from with ``overrides`` set.

    A key is a config attribute (or one of its aliases, ``n_layer`` for ``num_hidden_layers``);
    dots reach into nested configs (``text_config.num_hidden_layers``).  The config is built
    again from the changed dict, so values transformers derives (``head_dim``) follow.
    """
    if not overrides:
        return config
    data = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        _set(data, config, key.split("."), value, key)
    try:
        rebuilt = type(config).from_dict(data)
    except _invalid_config() as exc:
        raise BadRequest(f"with {overrides_text(overrides)} the config is not valid: {_first_line(exc)}") from None
    rebuilt._name_or_path = config._name_or_path
    return rebuilt


def _set(data: dict[str, Any], config: Any, path: list[str], value: Any, full_key: str) -> None:
    from transformers import PretrainedConfig

    prefix = full_key[: len(full_key) - len(".".join(path))]
    key = type(config).attribute_map.get(path[0], path[0])
    known = config.to_dict()
    if key not in known:
        raise BadRequest(f"unknown config key {full_key!r}"
                         f"{did_you_mean(path[0], [*known, *type(config).attribute_map], prefix=prefix)}")
    if len(path) == 1:
        data[key] = value
        return
    child = getattr(config, key, None)
    if not isinstance(child, PretrainedConfig):
        raise BadRequest(f"config key {prefix + path[0]!r} is not a nested config, so {full_key!r} names nothing")
    nested = data.get(key)
    if not isinstance(nested, dict):
        nested = data[key] = {"model_type": child.model_type} if getattr(child, "model_type", "") else {}
    _set(nested, child, path[1:], value, full_key)


def config_dtype(config: Any) -> Any:
    """The dtype a config names (``dtype``, or the legacy ``torch_dtype``) as a ``torch.dtype``:
    what ``from_pretrained(dtype="auto")`` loads the weights in; None when it names none."""
    import torch

    for value in (getattr(config, "dtype", None), config.__dict__.get("torch_dtype")):
        if isinstance(value, str):
            value = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(value, torch.dtype):
            return value
    return None


def _from_pretrained(source: str, trust_remote_code: bool, revision: str | None = None) -> Any:
    transformers = _transformers()
    refused: tuple[type[Exception], ...] = (OSError, KeyError, *_invalid_config())
    try:
        return transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                       revision=revision)
    except refused as exc:
        raise ModelNotFound(f"transformers cannot read the config {source}: {_first_line(exc)}") from None


def _invalid_config() -> tuple[type[Exception], ...]:
    """What a config class raises for values it refuses (huggingface_hub's strict dataclasses)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return (ValueError, TypeError)
    return (ValueError, TypeError, StrictDataclassError)


def overrides_text(overrides: Mapping[str, Any]) -> str:
    """``--config`` overrides as a user writes them: ``num_hidden_layers=2, rope_theta=10000.0``."""
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in overrides.items())


def _first_line(exc: Exception) -> str:
    cause = exc.__cause__ if exc.__cause__ is not None and not str(exc).strip() else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ModelNotFound("transformers configs need transformers: pip install 'nncost[hf]'") from exc
    return transformers
