"""Capturing generation as ``model.generate`` runs it: a prefill, then one-token decode steps.

Each step calls the model exactly as transformers' ``generate`` does (greedy search, the model's
own cache class): the cache is made by ``_prepare_cache_for_generation`` (dynamic, sliding
window, hybrid or static, as the model and its generation config choose), the inputs of every
call by ``prepare_inputs_for_generation`` (``logits_to_keep=1`` where the model supports it, so
the prefill computes the logits of the last position only), and the keyword arguments between
calls by ``_update_model_kwargs_for_generation``.  tests/test_generation.py checks the counts
against the real ``generate`` on the CPU.

A decode step is traced at a given context length ``L`` (the tokens already in the cache): the
cache is first filled by an untraced prefill of ``L`` tokens, which leaves it in the state ``L −
P`` decode steps after a prefill of ``P`` would.  So any step can be traced without running the
ones before it (:mod:`nncost.analyses.generation` sums the steps from a few of them).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from nncost.capture.meta_kernels import Answering
from nncost.capture.paged import PagedLayer, cache_writes_read_source_only, paged
from nncost.capture.paths import KernelPaths
from nncost.capture.placement import (
    attributes_restored,
    four_bit_format,
    named_parameters,
    needs_swap,
    param_stats,
    quantized_weights,
    swapped,
    to_meta,
    training_flags,
)
from nncost.capture.run import mismatch, param_storages
from nncost.capture.scopes import Scopes
from nncost.capture.state import run_state
from nncost.capture.tracer import Tracer
from nncost.errors import BadRequest
from nncost.quantization import cache_nbytes
from nncost.records.trace import Named, Trace
from nncost.rules import ATEN

NEEDED = ("prepare_inputs_for_generation", "_update_model_kwargs_for_generation", "_prepare_cache_for_generation")


class GenerationSession:
    """A generating model, swapped onto the meta device for several traced calls.

    Use as a context manager; :meth:`prefill` and :meth:`decode_at` each trace one call of the
    model as ``generate`` makes it.  The user's model is put back as it was on exit.
    ``kv_cache_dtype`` (fp8, int8) sizes the cache as if stored in that dtype
    (:func:`nncost.quantization.cache_nbytes`); the traces name the cache's storages, so that
    :mod:`nncost.analyses.quantize` can size what the steps read and write of it.  ``kernels``
    (``cuda``, ``cpu`` or ``meta``) is the device whose attention kernels the traced calls run
    (:mod:`nncost.capture.paths`).  ``engine="vllm"`` replaces the layers of that cache by a paged
    one (:mod:`nncost.capture.paged`): the same calls, with vLLM's cache traffic.
    """

    def __init__(self, model: nn.Module, batch_size: int, *, dtype: torch.dtype | None = None,
                 model_name: str = "", max_cache_length: int = 0, kv_cache_dtype: str | None = None,
                 kernels: str = "meta", engine: str = "hf-generate") -> None:
        missing = [name for name in NEEDED if not hasattr(model, name)]
        if missing:
            raise BadRequest(f"{model_name or type(model).__name__} cannot generate: it is not a transformers "
                             f"model with a generation loop (no {missing[0]}); generation needs transformers >= 5")
        self.model: Any = model  # a transformers model: its generation methods are not nn.Module's
        self.batch, self.dtype = batch_size, dtype
        self.name = model_name or type(model).__name__
        self.max_cache_length = max_cache_length
        self.kv_cache_dtype = kv_cache_dtype
        self.kernels = kernels
        self.engine = engine
        quantized = quantized_weights(model)
        if quantized:
            raise BadRequest(f"{self.name} holds quantized weights ({', '.join(quantized)}), whose kernels do not run "
                             "on meta, where generation is traced: profile its forward (it runs on the CPU), or "
                             "cost the unquantized model with weights='int4' (--weights)")
        self.device = torch.device("meta")
        self._stack = ExitStack()

    def __enter__(self) -> GenerationSession:
        model = self.model
        self._stack.enter_context(run_state(self.device))
        self._stack.enter_context(attributes_restored(model))
        self._stack.enter_context(training_flags(model, False))
        if needs_swap(model, self.device, self.dtype):
            self._stack.enter_context(swapped(model, to_meta(self.dtype)))
        self._stack.enter_context(torch.no_grad())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- the calls generate makes ---------------------------------------------------------
    def _start(self, prompt_tokens: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """A prompt of ``prompt_tokens`` per sequence and the keyword arguments ``generate``
        prepares before its first call: no attention mask (all ones), position ids, the cache."""
        model = self.model
        ids = torch.zeros((self.batch, prompt_tokens), dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {"use_cache": True}
        if model._supports_logits_to_keep():
            kwargs["logits_to_keep"] = 1
        if "position_ids" in inspect.signature(model.forward).parameters:
            kwargs["position_ids"] = model._prepare_position_ids_for_generation(
                ids, {"attention_mask": torch.ones_like(ids)})
        config = copy.deepcopy(model.generation_config)
        config.max_new_tokens = max(1, self.max_cache_length + 1 - prompt_tokens)
        model._prepare_cache_for_generation(config, kwargs, None, self.batch,
                                            max(self.max_cache_length, prompt_tokens))
        if self.engine == "vllm":
            paged(_cache(kwargs), max(self.max_cache_length, prompt_tokens) + 1, self.name)
        return ids, kwargs

    def _call(self, ids: torch.Tensor, kwargs: dict[str, Any], *, first: bool) -> Any:
        if first:
            inputs = self.model.prepare_inputs_for_generation(ids, is_first_iteration=True, **kwargs)
        else:
            inputs = self.model.prepare_inputs_for_generation(ids, next_sequence_length=1, **kwargs)
        return self.model(**inputs, return_dict=True)

    def _untraced(self, ids: torch.Tensor, kwargs: dict[str, Any]) -> Any:
        """A prefill that only fills the cache; operators whose meta kernel is stricter than the real
        ones are answered as under the tracer (capture.meta_kernels)."""
        with Answering():
            return self._call(ids, kwargs, first=True)

    def _traced(self, ids: torch.Tensor, kwargs: dict[str, Any], *, first: bool) -> tuple[Trace, Any]:
        scopes = Scopes(self.model)
        tracer = Tracer(ATEN, scopes.current, memoise=True, params=param_storages(self.model))
        named = _cache_named(kwargs, tracer.watch)  # the cache before the call, whose frees are events
        with scopes.hooked(self.model):
            try:
                with tracer, KernelPaths(tracer, self.kernels):
                    output = self._call(ids, kwargs, first=first)
            except Exception as exc:
                raise mismatch(exc, scopes, tracer, self.name) from exc
            finally:
                tracer.close()
        scopes.finish()
        named.update(_cache_named(kwargs, tracer.storage_id))  # and after it: the storages it made
        named.update(named_parameters(self.model, tracer.storage_id))
        trace = Trace(model=self.name, execution="meta", device="meta", batch_size=self.batch, layers=scopes.layers,
                      ops=tracer.ops, memory_events=tracer.memory_events, params=param_stats(self.model, self.dtype),
                      input_bytes=ids.numel() * ids.element_size(), named=named,
                      weight_format=four_bit_format(self.model))
        if self.engine == "vllm":
            trace = cache_writes_read_source_only(trace)
        return trace, output

    def prefill(self, prompt_tokens: int) -> tuple[Trace, int]:
        """The traced prefill over ``prompt_tokens``, and the bytes its cache holds afterwards."""
        ids, kwargs = self._start(prompt_tokens)
        trace, output = self._traced(ids, kwargs, first=True)
        kwargs = self.model._update_model_kwargs_for_generation(output, kwargs)
        return trace, cache_bytes(kwargs, self.kv_cache_dtype)

    def decode_at(self, context: int) -> tuple[Trace, int, int]:
        """The traced decode step that finds ``context`` tokens in the cache: the trace, and the
        bytes the cache holds before and after it."""
        ids, kwargs = self._start(context)
        output = self._untraced(ids, kwargs)
        kwargs = self.model._update_model_kwargs_for_generation(output, kwargs)
        del output
        before = cache_bytes(kwargs, self.kv_cache_dtype)
        ids = torch.zeros((self.batch, context + 1), dtype=torch.long, device=self.device)
        trace, output = self._traced(ids, kwargs, first=False)
        kwargs = self.model._update_model_kwargs_for_generation(output, kwargs)
        return trace, before, cache_bytes(kwargs, self.kv_cache_dtype)

    def cache_description(self) -> str:
        """``DynamicCache (DynamicLayer ×32)``: the cache class ``generate`` makes, and its layers'."""
        _, kwargs = self._start(1)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None:
            return "made by the model's own forward"
        kinds: dict[str, int] = {}
        for layer in getattr(cache, "layers", ()):
            kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
        layers = ", ".join(f"{kind} ×{n}" for kind, n in kinds.items())
        return type(cache).__name__ + (f" ({layers})" if layers else "")

    def cache_bytes_at(self, context: int) -> int:
        """The bytes the cache holds after a prefill of ``context`` tokens (untraced)."""
        ids, kwargs = self._start(context)
        output = self._untraced(ids, kwargs)
        return cache_bytes(self.model._update_model_kwargs_for_generation(output, kwargs), self.kv_cache_dtype)


def _cache(kwargs: dict[str, Any]) -> Any:
    return kwargs.get("cache", kwargs.get("past_key_values", kwargs.get("cache_params")))


def is_kv(tensor: torch.Tensor) -> bool:
    """A tensor of keys or values (floating, ``(..., tokens, head_dim)``), not a counter or a mask."""
    return tensor.is_floating_point() and tensor.dim() >= 3


def cache_bytes(kwargs: dict[str, Any], kv_cache_dtype: str | None = None) -> int:
    """Bytes of every tensor the generation cache in ``kwargs`` holds, each storage once; with
    ``kv_cache_dtype``, its keys and values as stored in that dtype.  A paged cache holds its
    layers' blocks in use, not its whole pool."""
    cache = _cache(kwargs)
    layers = getattr(cache, "layers", None) or ()
    if layers and all(isinstance(layer, PagedLayer) for layer in layers):
        return sum(layer.held_bytes(kv_cache_dtype) for layer in layers)
    seen: dict[int, int] = {}
    for tensor in _tensors(cache, depth=0):
        storage = tensor.untyped_storage()
        if kv_cache_dtype is not None and is_kv(tensor):
            seen[id(storage)] = cache_nbytes(kv_cache_dtype, tuple(storage_shape(tensor)), tensor.element_size())
        else:
            seen[id(storage)] = storage.nbytes()
    return sum(seen.values())


def storage_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape of the whole storage behind a cache tensor (a static cache's view covers all of it):
    the tensor's shape with its first dimension stretched over the storage."""
    shape = tuple(tensor.shape)
    per_row = tensor.numel() // shape[0] if shape and shape[0] else 1
    rows = tensor.untyped_storage().nbytes() // tensor.element_size() // max(per_row, 1)
    return (rows, *shape[1:]) if shape else shape


def _cache_named(kwargs: dict[str, Any], storage_id: Any) -> dict[int, Named]:
    """The keys and values the cache holds, by storage id."""
    named = {}
    for tensor in _tensors(_cache(kwargs), depth=0):
        if is_kv(tensor):
            named[storage_id(tensor)] = Named("cache", "kv", tuple(tensor.shape),
                                              str(tensor.dtype).removeprefix("torch."), tensor.element_size())
    return named


def _tensors(value: Any, depth: int) -> Iterator[torch.Tensor]:
    """The tensors a cache object holds: in its attributes, lists, tuples and dicts."""
    if depth > 6 or value is None:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
        for item in vars(value).values():
            yield from _tensors(item, depth + 1)


@contextmanager
def session(model: nn.Module, batch_size: int, *, dtype: torch.dtype | None = None, model_name: str = "",
            max_cache_length: int = 0, kv_cache_dtype: str | None = None,
            kernels: str = "meta", engine: str = "hf-generate") -> Iterator[GenerationSession]:
    """A :class:`GenerationSession` as a ``with`` block."""
    with GenerationSession(model, batch_size, dtype=dtype, model_name=model_name, max_cache_length=max_cache_length,
                           kv_cache_dtype=kv_cache_dtype, kernels=kernels, engine=engine) as opened:
        yield opened
