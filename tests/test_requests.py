"""One request, however it is asked: ``nncost ... --format json`` and ``nncost.cost(...).to_json()``
give the same document, byte for byte, for every kind of request; the one builder's rules."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import nncost
from nncost.cli import run as cli
from nncost.errors import BadRequest
from nncost.request import OPTIONS, build_request

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
         "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 256, "max_position_embeddings": 256, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("requests")
    llama = folder / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps(LLAMA))
    found = {"llama": str(llama)}
    try:
        import onnx  # noqa: F401
    except ImportError:
        return found
    path = folder / "convs.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Convs().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False)
    found["onnx"] = str(path)
    return found


# (command line words, the same options as keywords); {llama} and {onnx} are the files above
CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "profile": (["resnet18", "--input", "3x64x64", "--hardware", "a100-80gb", "--depth", "1"],
                {"input": (3, 64, 64), "hardware": "a100-80gb", "depth": 1}),
    "train": (["resnet18", "--input", "3x32x32", "--batch", "2", "--train", "--optimizer", "adamw"],
              {"input": (3, 32, 32), "batch": 2, "train": True, "optimizer": "adamw"}),
    "generation": (["{llama}", "--prompt", "8", "--new-tokens", "4", "--hardware", "h100-sxm", "--batch", "2"],
                   {"prompt": 8, "new_tokens": 4, "hardware": "h100-sxm", "batch": 2}),
    "lora": (["{llama}", "--lora", "4", "--lora-targets", "q_proj,v_proj", "--train", "--seq", "16"],
             {"lora": 4, "lora_targets": "q_proj,v_proj", "train": True, "seq": 16}),
    "training run": (["{llama}", "--train", "--seq", "16", "--hardware", "a100-80gb", "--tokens", "1B",
                      "--price-per-gpu-hour", "2"],
                     {"train": True, "seq": 16, "hardware": "a100-80gb", "tokens": 10**9, "price_per_gpu_hour": 2.0}),
    "layout": (["{llama}", "--train", "--seq", "16", "--hardware", "h100-sxm", "--gpus", "4", "--tensor-parallel",
                "2", "--micro-batches", "2"],
               {"train": True, "seq": 16, "hardware": "h100-sxm", "gpus": 4, "tensor_parallel": 2,
                "micro_batches": 2}),
    "plan": (["{llama}", "--train", "--seq", "16", "--hardware", "h100-sxm", "--gpus", "4", "--plan"],
             {"train": True, "seq": 16, "hardware": "h100-sxm", "gpus": 4, "plan": True}),
    "compare": (["compare", "resnet18", "mobilenet_v2", "--input", "3x32x32", "--batch", "2", "--train"],
                {"models": ["resnet18", "mobilenet_v2"], "input": (3, 32, 32), "batch": 2, "train": True}),
    "onnx": (["{onnx}", "--hardware", "h100-sxm", "--precision", "fp32"],
             {"hardware": "h100-sxm", "precision": "fp32"}),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_the_command_line_and_the_api_give_the_same_document(kind: str, files: dict[str, str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    words, options = CASES[kind]
    if any("{onnx}" in word for word in words) and "onnx" not in files:
        pytest.skip("onnx is not installed")
    words = [word.format(**files) for word in words]
    printed: list[str] = []
    assert cli([*words, "--format", "json"], out=printed.append) == 0, capsys.readouterr().err
    model = None if words[0] == "compare" else words[0]
    document = nncost.cost(model, **options).to_json()
    assert printed == [document]
    assert json.loads(document)["schema"] == nncost.SCHEMA


def test_an_onnx_file_on_a_device_is_timed_as_its_module_is(files: dict[str, str]) -> None:
    """The roofline of the ONNX path and of the PyTorch path rest on the same rules: each
    convolution's time agrees within 5%."""
    if "onnx" not in files:
        pytest.skip("onnx is not installed")
    from_file = nncost.cost(files["onnx"], hardware="h100-sxm", precision="fp32").report
    from_module = nncost.cost(Convs(), input=(3, 32, 32), hardware="h100-sxm", precision="fp32", memory=False).report
    assert from_file is not None and from_module is not None
    convs = [[layer.estimated_seconds for layer in report.layers if layer.is_leaf and layer.macs]
             for report in (from_file, from_module)]
    assert len(convs[0]) == len(convs[1]) == 3
    for onnx_seconds, torch_seconds in zip(*convs, strict=True):
        assert onnx_seconds is not None and torch_seconds is not None
        assert onnx_seconds == pytest.approx(torch_seconds, rel=0.05)


def test_a_device_alone_sets_an_inference_step_against_its_memory_for_a_module_not_for_a_file() -> None:
    assert build_request("resnet18", hardware="h100-sxm").step is not None
    assert build_request("resnet18", hardware="h100-sxm", memory=False).step is None
    assert build_request("model.onnx", hardware="h100-sxm").step is None
    assert build_request("resnet18", hardware="h100-sxm", weights="int8").step is None


def test_fp32_asked_for_is_float32_over_a_configs_dtype_but_a_file_is_read_as_stored() -> None:
    assert build_request("hf:gpt2", precision="fp32").dtype is torch.float32
    assert build_request("hf:gpt2").dtype is None
    assert build_request("model.onnx", precision="fp32").dtype is None


def test_tensor_parallelism_lands_where_the_other_options_say() -> None:
    generation = build_request("hf:gpt2", prompt=8, new_tokens=4, tensor_parallel=2)
    assert generation.generation is not None and generation.generation.tensor_parallel == 2
    assert generation.step is None
    step = build_request("hf:gpt2", train=True, tensor_parallel=2, gpus=2, hardware="h100-sxm")
    assert step.step is not None and step.step.tensor_parallel == 2 and step.generation is None
    with pytest.raises(BadRequest, match="add --train"):
        build_request("hf:gpt2", tensor_parallel=2)


def test_an_unknown_option_names_the_options() -> None:
    with pytest.raises(BadRequest, match="unknown option 'prompts'"):
        build_request("hf:gpt2", prompts=8)


def test_every_flag_of_every_command_is_an_option_with_one_default() -> None:
    from nncost.cli import build_parser
    from nncost.request import COMMANDS

    output = {"format", "explain", "html", "plot", "progress", "debug", "model", "help", "version"}
    for name, command in COMMANDS.items():
        for action in build_parser(name)._actions:
            assert action.dest in OPTIONS or action.dest in output, (name, action.dest)
        for group in command.groups:
            for option in group.flags:  # a name two commands share is one option: one default
                assert OPTIONS[option.option] == option.default, (name, option.option)


def test_an_onnx_model_in_memory_is_read_as_stored_as_its_file_is(files: dict[str, str]) -> None:
    """A loaded ``onnx.ModelProto`` on a device is timed, as its file is: no memory step is
    asked of a model nothing runs."""
    if "onnx" not in files:
        pytest.skip("onnx is not installed")
    import onnx

    loaded = onnx.load(files["onnx"])
    assert build_request(loaded, hardware="h100-sxm", precision="fp32").step is None
    from_memory = nncost.cost(loaded, hardware="h100-sxm", precision="fp32").report
    from_file = nncost.cost(files["onnx"], hardware="h100-sxm", precision="fp32").report
    assert from_memory is not None and from_file is not None
    assert from_memory.totals.estimated_seconds == from_file.totals.estimated_seconds
