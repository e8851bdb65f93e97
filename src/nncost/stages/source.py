"""The first stage: the model a request names, resolved and built where a stage needs it, with its
example inputs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from nncost.analyses.roofline import compute_dtype
from nncost.capture.inputs import rebatch, sizes_to_inputs
from nncost.capture.placement import quantized_weights
from nncost.errors import BadRequest
from nncost.precision import resolve_precision
from nncost.quantization import WeightFormat, weight_format
from nncost.request import DEFAULT_SEQ, NamedSize, Request
from nncost.sources.adapters import NF4_BLOCK, Nf4Base, with_lora, with_lora_copy
from nncost.sources.configs import ContextLimit, context_limit
from nncost.sources.models import ModelSpec, resolve
from nncost.stages.progress import Progress
from nncost.stages.real_run import check_memory, real_run, run_need


class Source:
    """The model of a request, built where it must be, with its example inputs.

    A module is used as it is.  A named model is built on meta; :meth:`on` builds it again with
    random weights on a real device when a stage needs values (a data-dependent forward,
    measured time, a real step).
    """

    def __init__(self, request: Request, spec: ModelSpec | None, module: nn.Module | None, say: Progress,
                 dtype_source: str | None = None, built_in: torch.dtype | None = None) -> None:
        self.request, self.spec, self.say = request, spec, say
        self.dtype_source = dtype_source
        self.built_in = built_in  # a model with adapters is built in its config's dtype before peft
        self.label = request.name or (spec.label if spec is not None else type(module).__name__)
        if module is not None and request.lora is not None:
            module = with_lora_copy(module, request.lora, nf4=self.nf4_base)  # peft changes the module it wraps
        self._built: dict[str, nn.Module] = {} if module is None else {"given": module}

    @property
    def dtype_name(self) -> str:
        """The dtype the floating parameters run in (float32 where nothing says otherwise)."""
        dtype = resolve_precision(self.request.precision, self.request.dtype).param_dtype or self.built_in
        return str(dtype or torch.float32).removeprefix("torch.")

    @property
    def nf4_base(self) -> Nf4Base | None:
        """QLoRA's base (:attr:`Request.qlora`): the linear weights quantized from the dtype the model
        is loaded in, the products computed in the run's 16-bit dtype (bf16 where it has none, as
        QLoRA computes)."""
        request = self.request
        if not request.qlora:
            return None
        setting = resolve_precision(request.precision, request.dtype)
        loaded = setting.param_dtype or self.built_in
        sixteen = [d for d in (loaded, setting.autocast_dtype) if d in (torch.bfloat16, torch.float16)]
        return Nf4Base(sixteen[0] if sixteen else torch.bfloat16, loaded, request.group_size or NF4_BLOCK)

    @property
    def given(self) -> nn.Module | None:
        return self._built.get("given")

    def on(self, device: str) -> nn.Module:
        """The model with its weights on ``device`` (the user's own module wherever it is)."""
        if self.given is not None:
            return self.given
        assert self.spec is not None
        if device not in self._built:
            if device != "meta":
                meta = self._built["meta"] if "meta" in self._built else self.spec.build("meta")
                check_memory(f"running {self.label} on {device}", device, *run_need(meta, param_dtype(self.request)))
            with self.say.step(f"building {self.label} on {device}", slow=device != "meta"), \
                    real_run(f"building {self.label} on {device}", device != "meta"):
                model = self.spec.build(device)
                if self.request.lora is not None:
                    model = with_lora(model.to(self.built_in) if self.built_in else model, self.request.lora,
                                      nf4=self.nf4_base)
                self._built = {device: model}  # one copy of the weights at a time
        return self._built[device]

    def built_on(self) -> str:
        """Where the named model was last built (meta when not yet)."""
        return next(iter(self._built), "meta")

    def inputs(self, device: str, batch_size: int | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword example inputs, at the request's batch or ``batch_size``.

        Sizes become meta tensors and token ids are made on ``device``; example inputs are taken
        as they are, or rebatched when another batch is asked for (a named model's examples at
        the request's batch, anything at ``batch_size``).
        """
        request, spec = self.request, self.spec
        given = request.inputs
        batch = batch_size or given.batch_size
        if spec is not None and spec.token_input:
            ids = torch.zeros((batch, given.seq or DEFAULT_SEQ), dtype=torch.long, device=device)
            return (), ({"input_ids": ids, "decoder_input_ids": ids} if spec.encoder_decoder else {"input_ids": ids})
        sizes = given.sizes or (spec.default_inputs if spec is not None and spec.example_inputs is None else None)
        if sizes:
            dtype = resolve_precision(request.precision, request.dtype).param_dtype
            return sizes_to_inputs(list(sizes), batch, dtype), dict(given.kwargs or {})
        if given.args is not None or given.kwargs:
            args, kwargs = _as_args(given.args), dict(given.kwargs or {})
            wanted = batch_size
        elif spec is not None and spec.example_inputs is not None:
            args, kwargs = spec.example_inputs
            wanted = batch_size or (given.batch_size if given.batch_size != 1 else None)
        else:
            raise BadRequest(f"{self.label} needs inputs: give input_size=(C, H, W) (--input CxHxW), inputs=... "
                             "or kwargs=...")
        if wanted is not None:
            args, kwargs = rebatch(args, wanted), rebatch(kwargs, wanted)
        return args, kwargs


def _as_args(inputs: Any) -> tuple[Any, ...]:
    if inputs is None:
        return ()
    if isinstance(inputs, tuple):
        return inputs
    if isinstance(inputs, list) and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    return (inputs,)


def resolve_source(request: Request, say: Progress) -> Source:
    if any(isinstance(size, NamedSize) for size in request.inputs.sizes or ()):
        raise BadRequest("named inputs (--input NAME=SIZE) are for .onnx models; give sizes as --input CxHxW")
    if request.device.startswith("cuda") and not torch.cuda.is_available():
        raise BadRequest("device 'cuda' was asked for, but no CUDA device is available")
    if isinstance(request.model, nn.Module):
        if request.config_overrides or request.trust_remote_code:
            raise BadRequest("config overrides and trust_remote_code are for transformers configs named by a string "
                             "(hf:NAME, hf:ORG/NAME, a config directory); a module is profiled as it is")
        if request.inputs.seq is not None:
            raise BadRequest("seq is for token models named hf:NAME; give a module its inputs")
        if request.generation is None and not (request.inputs.sizes or request.inputs.args is not None
                                                  or request.inputs.kwargs):
            raise BadRequest("no inputs: give input_size=(C, H, W), inputs=... or kwargs=...")
        _check_context(request, type(request.model).__name__, context_limit(getattr(request.model, "config", None)),
                       token_input=False)
        return Source(request, None, request.model, say)
    if not isinstance(request.model, str):
        raise BadRequest(f"a model is a torch.nn.Module or a model name, got {type(request.model).__name__}")
    spec = resolve(request.model, config_overrides=request.config_overrides,
                   trust_remote_code=request.trust_remote_code, trust_pickle=request.trust_pickle)
    inputs = request.inputs
    if spec.token_input and inputs.sizes:
        raise BadRequest(f"{spec.label} takes token ids: give --seq N, not --input")
    if inputs.seq is not None and not spec.token_input:
        raise BadRequest(f"--seq is for token models (hf:NAME); {spec.label} takes --input CxHxW")
    if not spec.token_input and not (inputs.sizes or spec.default_inputs or spec.example_inputs
                                     or inputs.args is not None):
        raise BadRequest(f"{spec.label} needs an input size: --input CxHxW")
    _check_context(request, spec.label, spec.context, token_input=spec.token_input)
    request, dtype_source = _model_dtype(request, spec)
    built_in = None
    if request.lora is not None and dtype_source == "config":
        # Loaded in its config's dtype, then given peft's float32 adapters (autocast_adapter_dtype):
        # the captures keep each parameter's dtype rather than casting all of them to the config's.
        built_in, request = request.dtype, replace(request, dtype=None)
    return Source(request, spec, None, say, dtype_source, built_in)


def _check_context(request: Request, label: str, limit: ContextLimit | None, *, token_input: bool) -> None:
    """Refuse a sequence longer than the model's context: a generation's prompt and new tokens
    together, or the ``seq`` of a token model's forward or step (its default included), unless
    the request ignores the limit."""
    if limit is None or request.ignore_context_limit:
        return
    generation = request.generation
    if generation is not None:
        tokens = generation.prompt_tokens + generation.new_tokens
        asked = (f"a prompt of {generation.prompt_tokens:,} tokens and {generation.new_tokens:,} new ones "
                 f"({tokens:,} in all)")
        fix = "a shorter --prompt or fewer --new-tokens"
    elif token_input:
        tokens = request.inputs.seq or DEFAULT_SEQ
        asked = f"--seq {tokens:,}" if request.inputs.seq is not None else f"the default --seq of {tokens:,}"
        fix = f"--seq {limit.tokens:,} or less"
    else:
        return
    if tokens > limit.tokens:
        raise BadRequest(f"{label} reads at most {limit.tokens:,} tokens ({limit.source}), and {asked} is past "
                         f"that: give {fix}, or --ignore-context-limit (ignore_context_limit=True) to cost it "
                         "anyway, as a rope-scaling what-if")


def _model_dtype(request: Request, spec: ModelSpec) -> tuple[Request, str | None]:
    """The request with the dtype a transformers model runs in, and where that dtype came from.

    ``request``: a dtype or a 16-bit precision was asked for (mixed precisions keep the fp32
    master weights the model is built with, whatever the config says); ``config``: the config's own dtype, as
    ``from_pretrained(dtype="auto")`` loads the weights; ``default``: the config names none, so
    float32.  Other models run as built (None).
    """
    if spec.family != "hf":
        return request, None
    own = spec.config_dtype
    if request.dtype is not None or request.precision != "fp32":
        return request, "request"
    if own is None:
        return request, "default"
    return replace(request, dtype=own), "config"


def asked_weights(request: Request, model: nn.Module) -> WeightFormat | None:
    """The weight format asked for: a what-if on a model whose weights are not quantized already
    (QLoRA's base is built quantized: no what-if on top)."""
    if request.qlora:
        return None
    weights = weight_format(request.weights, request.group_size)
    held = quantized_weights(model) if weights is not None else []
    if held:
        raise BadRequest(f"the model's weights are quantized already ({', '.join(held)}): it is profiled as stored; "
                         "drop --weights")
    return weights


def param_dtype(request: Request) -> torch.dtype | None:
    return resolve_precision(request.precision, request.dtype).param_dtype


def weights_dtype(model: nn.Module, dtype: torch.dtype | None) -> str:
    """The dtype a run of ``model`` computes in: ``dtype`` when given, else that of most of its
    floating parameter bytes (:func:`~nncost.analyses.roofline.compute_dtype`)."""
    by_dtype: dict[str, int] = {}
    for p in model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + p.numel() * p.element_size()
    return compute_dtype(by_dtype, dtype)
