"""Resolving a model name into something that builds an ``nn.Module``.

Accepted forms:

* ``resnet50`` or ``torchvision:resnet50``: a torchvision model, random weights;
* ``timm:NAME``: a timm model, ``pretrained=False``;
* ``hf:NAME``: a transformers architecture from its default config (``hf:gpt2``, ``hf:llama``,
  ``hf:bert``), random weights, nothing downloaded; its input is token ids;
* ``hf:ORG/NAME[@REVISION]``, ``path/to/dir`` or ``path/to/config.json``: a real model's config,
  from the Hub (``config.json`` only, never weights; the local cache answers offline) or from
  disk (:mod:`nncost.sources.configs`), ``KEY=VALUE`` overrides applied;
* ``path/to/file.py:callable`` or ``package.module:callable``: a class or zero-argument factory;
* ``path/to/model.pt2``: a program saved by ``torch.export.save``, unflattened into its original
  module tree; its input is the program's example inputs unless sizes are given;
* ``path/to/model.pt`` (or ``.pth``): a TorchScript archive (``torch.jit.save``).  A state dict
  holds no architecture and is refused with the ways to give one; a module pickled whole
  (``torch.save(model)``) is unpickled only with ``trust_pickle``, since unpickling runs code
  stored in the file (:mod:`nncost.sources.saved` reads what a file holds without running it).

``model.onnx`` is not built: :func:`is_onnx` tells the CLI to read it with ``profile_onnx``.

Models are built under a device context, so ``meta`` builds even a 70B model in seconds
without allocating its weights.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncost.errors import BadRequest, ModelNotFound, NncostError, did_you_mean, first_line
from nncost.sources.configs import (
    ContextLimit,
    config_dtype,
    context_limit,
    is_config_path,
    load_config,
    overrides_text,
)

Builder = Callable[[], nn.Module]
SAVED_SUFFIXES = (".pt", ".pth")
OTHER_FORMS = ("timm:NAME, hf:NAME, path/to/file.py:Class, a torch.export program (.pt2), "
               "a TorchScript archive (.pt), an ONNX file (.onnx)")


@dataclass
class ModelSpec:
    """A resolved model: how to build it, and what input it takes by default."""

    label: str
    family: str  # torchvision, timm, hf, python, pt2, torchscript, pickle
    builder: Builder
    default_inputs: list[tuple[int, ...]] | None = None  # without the batch dimension
    token_input: bool = False  # takes input_ids of length --seq
    encoder_decoder: bool = False  # also takes decoder_input_ids
    # (args, kwargs) to run with when no input size is given (a .pt2 file's example inputs)
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    config_dtype: torch.dtype | None = None  # the dtype a transformers config names (from_pretrained's "auto")
    context: ContextLimit | None = None  # the most tokens a sequence may have (a transformers config's positions)

    def build(self, device: str = "meta") -> nn.Module:
        with torch.device(device):
            if self.family != "python":
                model = self.builder()
            else:
                try:
                    model = self.builder()
                except NncostError:
                    raise
                except Exception as exc:  # the user's constructor: a mistake in their code, not ours
                    raise ModelNotFound(f"{self.label.rpartition(':')[2]}() raised {_described(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise ModelNotFound(f"{self.label} built a {type(model).__name__}, not a torch.nn.Module")
        return model


def is_onnx(name: str) -> bool:
    """``model.onnx``: a file read by :func:`nncost.profile_onnx`, not a module to build."""
    return name.lower().endswith(".onnx")


def is_onnx_model(model: object) -> bool:
    """An ONNX file's path, or an ``onnx.ModelProto`` (it has a graph and an opset)."""
    if isinstance(model, str):
        return is_onnx(model)
    return hasattr(model, "graph") and hasattr(model, "opset_import")


def _described(exc: BaseException) -> str:
    """``ValueError: its first line``, for an exception raised by the user's code."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def resolve(name: str, *, config_overrides: Mapping[str, Any] | None = None, trust_remote_code: bool = False,
            trust_pickle: bool = False) -> ModelSpec:
    """The model a MODEL string names; ``config_overrides`` and ``trust_remote_code`` are for
    transformers configs (``hf:...``, a config directory or ``config.json``), ``trust_pickle``
    lets a ``.pt`` file that holds a pickled module be unpickled (which runs code from the file)."""
    if name.startswith("hf:") or is_config_path(name):
        return _hf_config(name, config_overrides, trust_remote_code)
    if config_overrides:
        raise BadRequest(f"config overrides (--config KEY=VALUE) change a transformers config; {name} is not one: "
                         "give hf:NAME, hf:ORG/NAME, a directory with config.json, or a config.json")
    if is_onnx(name):
        raise ModelNotFound(f"{name} is an ONNX file, not a module to build: read it with nncost.profile_onnx")
    if name.endswith(".pt2"):
        return _exported(name)
    if name.lower().endswith(SAVED_SUFFIXES):
        return _saved(name, trust_pickle)
    if name.startswith("timm:"):
        return _timm(name.removeprefix("timm:"))
    if name.startswith("torchvision:"):
        return _torchvision(name.removeprefix("torchvision:"))
    if ":" in name:
        return _python(name)
    return _torchvision(name)


# -- torchvision ---------------------------------------------------------------------------
VIDEO_FRAMES = 16


DETECTION_SIZES = {"ssd300": 300, "ssdlite320": 320, "keypointrcnn": 1333}


def torchvision_input(name: str) -> list[tuple[int, ...]]:
    """The input sizes torchvision evaluated a model at, without batch.

    Classification: the weights' crop size; video: 16 frames at the crop size; segmentation:
    the resize size; detection: 800×800 (ssd300 300, ssdlite320 320, keypointrcnn 1333);
    optical flow: two 520×960 frames.
    """
    import torchvision

    module = torchvision.models.get_model_builder(name).__module__
    if ".detection." in module:
        size = next((s for prefix, s in DETECTION_SIZES.items() if name.startswith(prefix)), 800)
        return [(3, size, size)]
    if ".optical_flow." in module:
        return [(3, 520, 960), (3, 520, 960)]
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        return [(3, 224, 224)]
    keywords = getattr(weights.transforms, "keywords", {}) or {}
    crop = keywords.get("crop_size") or keywords.get("resize_size") or 224
    crop = crop[0] if isinstance(crop, (list, tuple)) else crop
    if ".video." in module:
        return [(3, VIDEO_FRAMES, crop, crop)]
    return [(3, crop, crop)]


# Builders that swap BatchNorm2d for FrozenBatchNorm2d (buffers, no parameters) in the backbone
# whenever trained weights are loaded: the weights' num_params counts that.
FROZEN_BN_BACKBONE = frozenset({
    "fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
    "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "fcos_resnet50_fpn",
})


def torchvision_kwargs(name: str) -> dict[str, Any]:
    """Builder arguments giving the architecture of the DEFAULT weights, without loading them.

    Loading weights makes torchvision's builders change the model: segmentation models keep their
    auxiliary head (``aux_loss=True``), GoogLeNet drops its auxiliary classifiers, ViT takes the
    weights' image size (518 for vit_h_14).  With a bare ``weights=None`` none of this happens, and
    detection and segmentation builders would download ImageNet backbone weights.
    """
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    parameters = inspect.signature(builder).parameters
    kwargs: dict[str, Any] = {"weights": None}
    if "weights_backbone" in parameters:
        kwargs["weights_backbone"] = None
    if "aux_loss" in parameters:
        kwargs["aux_loss"] = True
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    if name == "inception_v3":
        kwargs["init_weights"] = False  # only silences a warning; the architecture is the same
    if builder.__module__.endswith(".vision_transformer"):
        kwargs["image_size"] = torchvision.models.get_model_weights(name).DEFAULT.meta["min_size"][0]
    return kwargs


@contextmanager
def regnet_widths_on_cpu() -> Iterator[None]:
    """RegNet builders compute block widths with tensors and ``.tolist()``, which cannot run under a
    meta default device: for the duration of one build, those widths are computed on CPU."""
    from torchvision.models import regnet

    params = regnet.BlockParams
    original = params.__dict__["from_init_params"]

    def on_cpu(cls: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    params.from_init_params = classmethod(on_cpu)
    try:
        yield
    finally:
        params.from_init_params = original


def freeze_batch_norm(module: nn.Module) -> None:
    """Replace every BatchNorm2d under ``module`` by a FrozenBatchNorm2d, as a trained builder does."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, child_name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            freeze_batch_norm(child)


def build_torchvision(name: str) -> nn.Module:
    """A torchvision model as its DEFAULT weights describe it, with random weights."""
    import torchvision

    with warnings.catch_warnings(), regnet_widths_on_cpu():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, **torchvision_kwargs(name))
    if name in FROZEN_BN_BACKBONE:
        freeze_batch_norm(model.backbone.body)
    return model


def _torchvision(name: str) -> ModelSpec:
    try:
        import torchvision
    except ImportError as exc:
        raise ModelNotFound(f"{name!r} looks like a torchvision model, but torchvision is not installed: "
                            "pip install 'nncost[vision]'") from exc
    known = torchvision.models.list_models()
    if name not in known:
        raise ModelNotFound(f"unknown model {name!r} (other forms: {OTHER_FORMS}){did_you_mean(name, known)}")
    return ModelSpec(
        label=name,
        family="torchvision",
        builder=lambda: build_torchvision(name),
        default_inputs=torchvision_input(name),
    )


# -- timm ----------------------------------------------------------------------------------
def _timm(name: str) -> ModelSpec:
    try:
        import timm
    except ImportError as exc:
        raise ModelNotFound("timm models need timm: pip install 'nncost[timm]'") from exc
    if not timm.is_model(name):
        raise ModelNotFound(f"unknown timm model {name!r}{did_you_mean(name, timm.list_models(), prefix='timm:')}")
    config = timm.get_pretrained_cfg(name)
    size = tuple(config.input_size) if config is not None and config.input_size else (3, 224, 224)
    return ModelSpec(
        label=f"timm:{name}",
        family="timm",
        builder=lambda: timm.create_model(name, pretrained=False),
        default_inputs=[size],
    )


# -- transformers --------------------------------------------------------------------------
def _hf_config(name: str, overrides: Mapping[str, Any] | None, trust_remote_code: bool) -> ModelSpec:
    """A transformers model from its config (``hf:NAME``'s default, the Hub's, a local one),
    random weights, nothing else downloaded; its input is token ids."""
    config = load_config(name, overrides, trust_remote_code)
    shown = overrides_text(overrides or {})
    return ModelSpec(
        label=f"{name} ({shown})" if shown else name,
        family="hf",
        builder=hf_builder(config, trust_remote_code),
        token_input=True,
        encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)),
        config_dtype=config_dtype(config),
        context=context_limit(config),
    )


def hf_builder(config: Any, trust_remote_code: bool = False) -> Builder:
    """How transformers would build the model of ``config``: the repository's own class when its
    code is trusted; else the first class of the config's ``architectures`` that transformers
    has; else the architecture's causal LM where it has one (and is not a masked LM), else its
    base model.  It is built in float32, as every named model is: the pipeline puts it in the
    config's dtype (:attr:`ModelSpec.config_dtype`) or the one asked for."""
    import transformers
    from transformers.models.auto import modeling_auto

    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and auto_map:
        auto_name = next((a for a in ("AutoModelForCausalLM", "AutoModel") if a in auto_map), None)
        if auto_name is None:
            raise ModelNotFound(f"the auto_map of {config.name_or_path} names neither AutoModelForCausalLM nor "
                                f"AutoModel, only {', '.join(auto_map)}")
        remote = getattr(transformers, auto_name)
        return lambda: remote.from_config(config, trust_remote_code=True, dtype=torch.float32)
    for architecture in getattr(config, "architectures", None) or ():
        model_class = getattr(transformers, architecture, None)
        if isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel):
            return lambda: model_class._from_config(config, dtype=torch.float32)
    model_type = config.model_type
    causal = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    masked = modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if model_type in causal and model_type not in masked:
        auto: Any = transformers.AutoModelForCausalLM
    else:
        auto = transformers.AutoModel
    return lambda: auto.from_config(config, dtype=torch.float32)


# -- user code -----------------------------------------------------------------------------
def _python(name: str) -> ModelSpec:
    target, _, attr = name.rpartition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise ModelNotFound(f"no such file: {target}")
        module_name = f"_nncost_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ModelNotFound(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # their file: a syntax error, a failed import, code that raises
            raise ModelNotFound(f"importing {target} raised {_described(exc)}") from exc
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelNotFound(f"cannot import module {target!r}: {exc}") from exc
        except Exception as exc:
            raise ModelNotFound(f"importing {target} raised {_described(exc)}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        names = [n for n in vars(module) if not n.startswith("_")]
        raise ModelNotFound(f"{target} has no attribute {attr!r}{did_you_mean(attr, names)}")
    if not callable(factory):
        raise ModelNotFound(f"{name} is not a class or a factory function")
    return ModelSpec(label=name, family="python", builder=factory)


# -- torch.export programs -----------------------------------------------------------------
def _exported(name: str) -> ModelSpec:
    from nncost.sources.exported import load_exported

    exported = load_exported(name)
    return ModelSpec(label=name, family="pt2", builder=exported.module, example_inputs=exported.example_inputs)


# -- files torch.save and torch.jit.save write ---------------------------------------------
def _saved(name: str, trust_pickle: bool) -> ModelSpec:
    from nncost.sources.saved import EXPORTED, PICKLED, TORCHSCRIPT, inspect_saved, load_pickled, load_torchscript

    saved = inspect_saved(name)
    if saved.kind == TORCHSCRIPT:
        return ModelSpec(label=name, family="torchscript", builder=lambda: load_torchscript(name))
    if saved.kind == EXPORTED:
        return _exported(name)
    ways = ("profile its architecture instead: path/to/file.py:Class, a program saved with torch.export.save "
            "(.pt2), a TorchScript archive (torch.jit.save) or an .onnx file")
    if saved.kind != PICKLED:
        raise ModelNotFound(f"{name} holds weights (a state dict or a checkpoint) and no architecture; {ways}")
    what = saved.classes[0] if saved.classes else "an object"
    if not trust_pickle:
        raise ModelNotFound(f"{name} holds a pickled {what}; unpickling it runs code the file names, so nncost "
                            f"does not do it unasked: pass --trust-pickle (trust_pickle=True) if you trust the "
                            f"file, or {ways}")
    return ModelSpec(label=name, family="pickle", builder=lambda: load_pickled(name))
