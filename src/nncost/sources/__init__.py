"""Where a model comes from: each module reads one kind of source into something nncost can cost.

- ``models``: a model name or path (``resnet50``, ``timm:NAME``, ``hf:NAME``, a config, a
  ``file.py:callable``, a saved file) resolved into a builder of an ``nn.Module`` and its inputs;
- ``configs``: a transformers config (an architecture's default, a local ``config.json``, a Hub
  repository's), with ``KEY=VALUE`` overrides;
- ``adapters``: LoRA adapters (peft) and QLoRA's 4-bit base (bitsandbytes) put on a model;
- ``exported``: a saved ``torch.export`` program (``.pt2``), unflattened back into a module tree;
- ``saved``: what a ``torch.save`` / ``torch.jit.save`` file (``.pt``, ``.pth``) holds, found
  without running it; TorchScript archives and trusted pickles loaded;
- ``onnx``: an ONNX file parsed and checked into a ``ModelProto``, external weights checked, not
  read.

Sources may import :mod:`nncost.capture`; capture reads no source but the ONNX file it costs.
Nothing is imported here, so reading one source imports no other.
"""
