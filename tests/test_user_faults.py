"""What a new user tripped on (issue 23): each a clear answer instead of a crash, a wrong unit
or a silent default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runs import cli

pytest.importorskip("torchvision")


def _no_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the run started before the bad path was refused")


# -- output files --------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--plot", "--html"])
def test_an_output_file_in_a_missing_directory_is_refused_before_the_run(
        flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("nncost.pipeline.run", _no_run)
    target = tmp_path / "nowhere" / "x.png"
    code, _ = cli("resnet18", "--train", flag, str(target))
    err = capsys.readouterr().err
    assert code == 2
    assert f"the directory {target.parent} does not exist" in err and "internal error" not in err


@pytest.mark.parametrize("flag", ["--plot", "--html"])
def test_an_output_file_under_a_file_is_refused(
        flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("nncost.pipeline.run", _no_run)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    code, _ = cli("resnet18", "--train", flag, str(tmp_path / "notes.txt" / "x.out"))
    err = capsys.readouterr().err
    assert code == 2 and "is not a directory" in err and len(err.strip().splitlines()) == 1


def test_the_plot_refuses_a_path_it_cannot_write() -> None:
    pytest.importorskip("matplotlib")
    from nncost.errors import BadRequest
    from nncost.render.files import writable

    with pytest.raises(BadRequest, match="it is a directory"):
        writable(Path.cwd(), "the memory plot")


# -- --explain ------------------------------------------------------------------------------------
def test_explain_in_json_is_the_explanation_as_data() -> None:
    code, text = cli("resnet18", "--explain", "conv1", "--format", "json")
    assert code == 0
    data = json.loads(text)
    assert data["name"] == "conv1" and data["type"] == "Conv2d"
    assert data["params"] == 64 * 7 * 7 * 3  # Co × K·K·Cin, no bias
    assert data["output_shapes"] == [[1, 64, 112, 112]]
    assert data["totals"]["macs"] == 112 * 112 * 64 * 3 * 7 * 7
    assert [(op["op"], op["counted"]) for op in data["ops"]] == [("aten.convolution", True)]
    assert sum(op["macs"] for op in data["ops"]) == data["totals"]["macs"]


def test_explain_refuses_a_table_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("resnet18", "--explain", "conv1", "--format", "csv")
    assert code == 2 and "--explain shows" in capsys.readouterr().err


# -- number formats -------------------------------------------------------------------------------
def test_counts_and_bytes_have_prefixes_past_tera() -> None:
    from nncost.render import units

    assert units.count(26_284_193.22e12) == "26.28 E"
    assert units.count(3.5e15) == "3.50 P"
    assert units.count(999_999.5) == "1.00 M"  # not '1000.00 K'
    assert units.nbytes(3 << 50) == "3.00 PiB"
    assert units.nbytes(5 << 60) == "5.00 EiB"
    assert units.rate(2.5e18) == "2.5 EFLOP/s"
    assert units.bandwidth(1.8e15) == "1.8 PB/s"


@pytest.mark.parametrize("s, text", [
    (53_805, "14.9 h"), (90, "1.50 min"), (59.5, "59.5 s"), (3600, "1.00 h"), (2 * 86400, "2.00 days"),
    (1.2e6, "13.9 days"), (0.0123, "12.3 ms"),
])
def test_long_times_are_in_minutes_hours_and_days(s: float, text: str) -> None:
    from nncost.render import units

    assert units.seconds(s) == text


@pytest.mark.parametrize("rate, text", [(1234.56, "1,234.6"), (0.04123, "0.0412"), (0.5, "0.500"), (0, "0.0")])
def test_slow_rates_keep_their_figures(rate: float, text: str) -> None:
    """A decode past a hundred million tokens runs well under a token a second: not '0.0'."""
    from nncost.render import units

    assert units.per_second(rate) == text


def test_did_you_mean_ends_the_sentence_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("resnet5")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "did you mean 'resnet50'" in err
    assert "?." not in err and err.endswith("?")


# -- warnings -------------------------------------------------------------------------------------
def test_a_mixed_step_without_a_gpu_is_one_line_naming_the_users_device(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU here: the step runs CUDA autocast itself")
    code, _ = cli("resnet18", "--input", "3x64x64", "--train", "--precision", "bf16-mixed",
                  "--hardware", "a100-80gb")
    err = capsys.readouterr().err
    assert code == 0
    notes = [line for line in err.splitlines() if "no GPU here" in line]
    assert len(notes) == 1 and notes[0].startswith("nncost: warning: no GPU here: the bf16-mixed step of a100-80gb")
    assert "UserWarning" not in err and "hardware='cuda'" not in err and "warnings.warn" not in err


# -- the API's renamed keyword --------------------------------------------------------------------
def _small_net() -> object:
    from torch import nn

    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def test_memory_keeps_the_old_hardware_keyword_with_a_deprecation_warning() -> None:
    import nncost

    with pytest.warns(DeprecationWarning, match=r"memory\(hardware=\.\.\.\) is now memory\(allocator=\.\.\.\)"):
        old = nncost.memory(_small_net(), (16,), batch_size=4, hardware="cpu")
    new = nncost.memory(_small_net(), (16,), batch_size=4, allocator="cpu")
    assert old.allocator == new.allocator == "cpu"
    assert old.peak_bytes == new.peak_bytes


def test_memory_with_allocator_alone_warns_nothing() -> None:
    import warnings

    import nncost

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        report = nncost.memory(_small_net(), (16,), allocator="cpu")
    assert report.allocator == "cpu"


def test_memory_refuses_both_names_disagreeing() -> None:
    import nncost
    from nncost.errors import BadRequest

    with pytest.warns(DeprecationWarning), pytest.raises(BadRequest, match="give allocator only"):
        nncost.memory(_small_net(), (16,), hardware="cuda", allocator="cpu")


# -- --fit ---------------------------------------------------------------------------------------
def test_a_budget_without_a_unit_that_holds_no_model_is_refused_before_the_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("nncost.pipeline.run", _no_run)
    code, _ = cli("resnet18", "--train", "--fit", "24")
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 24GiB?" in err and "24 bytes" in err


@pytest.mark.parametrize("text, nbytes", [("24GiB", 24 << 30), ("80GB", 80 * 10**9), ("4e9", 4 * 10**9),
                                          ("2097152", 2 << 20)])
def test_budgets_with_a_unit_or_a_large_number_of_bytes_are_read(text: str, nbytes: int) -> None:
    from nncost.analyses.fit import parse_bytes

    assert parse_bytes(text) == nbytes


def test_a_generation_budget_is_checked_too() -> None:
    from nncost.errors import BadRequest
    from nncost.request import Generation

    with pytest.raises(BadRequest, match="did you mean 80GiB"):
        Generation(128, 16, fit="80")


# -- input sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size, got", [("3x224", 3), ("224", 2), ("1x3x224x224", 5)])
def test_an_input_size_with_the_wrong_number_of_dimensions_says_so(
        size: str, got: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("resnet18", "--input", size)
    err = capsys.readouterr().err
    assert code == 2
    assert "conv1 (Conv2d) expects a 4-dimensional input N×C×H×W (an input size of C×H×W" in err
    assert f"got {got} dimensions" in err and "input channels" not in err


def test_a_one_dimensional_convolution_names_its_length() -> None:
    from torch import nn

    from nncost.capture.mismatch import expectation

    text = expectation(nn.Conv1d(4, 8, 3), [(1, 7)])
    assert text is not None and "N×C×L" in text and "got 2 dimensions" in text
    assert expectation(nn.Conv1d(4, 8, 3), [(4, 7)]) is None  # an unbatched C×L that fits


# -- the Hub, unreachable -------------------------------------------------------------------------
TINY_GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 64, "n_positions": 32}


@pytest.fixture
def unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache in tmp_path, HF_HUB_OFFLINE unset, and a Hub that does not answer: the
    reachability check is replaced, and a download that would use the network fails the test."""
    pytest.importorskip("transformers")
    import huggingface_hub
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked: list[str] = []

    def reachable(endpoint: str, timeout: float | None = None) -> bool:
        asked.append(endpoint)
        return False

    monkeypatch.setattr("nncost.sources.configs.hub_reachable", reachable)
    download = huggingface_hub.hf_hub_download

    def cache_only(*args: object, **kwargs: object) -> str:
        assert kwargs.get("local_files_only") is True, "the network was used after the Hub did not answer"
        return download(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    return cache


def test_an_unreachable_hub_is_one_sentence_at_once(unreachable_hub: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli("hf:someorg/not-cached")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "hf:someorg/not-cached" in err and "did not answer in 2 s" in err and str(unreachable_hub) in err


def test_an_unreachable_hub_still_reads_the_cache(unreachable_hub: Path) -> None:
    snapshot = unreachable_hub / "models--someorg--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY_GPT2))
    (unreachable_hub / "models--someorg--tiny" / "refs").mkdir()
    (unreachable_hub / "models--someorg--tiny" / "refs" / "main").write_text("a" * 40)
    code, text = cli("hf:someorg/tiny", "--seq", "8", "--format", "json")
    assert code == 0
    # wte + wpe + one block (2 layer norms, qkv, proj, fc, fc proj) + ln_f
    d = 16
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert json.loads(text)["totals"]["params"] == 64 * d + 32 * d + block + 2 * d


def test_the_reachability_check_gives_up_on_a_closed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

    from nncost.sources.configs import hub_reachable

    with socket.socket() as probe:  # a port on this machine that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert hub_reachable(f"http://127.0.0.1:{port}", timeout=0.5) is False


# -- configs with missing fields ------------------------------------------------------------------
def _write(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_a_config_missing_size_fields_names_the_defaults_taken(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    partial = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
               "intermediate_size": 128}
    code, _ = cli(str(_write(tmp_path / "llama", partial)), "--seq", "8")
    notes = [line for line in capsys.readouterr().err.splitlines() if "does not give" in line]
    assert code == 0 and len(notes) == 1
    # LlamaConfig's own defaults: a 32,000-token vocabulary and 2,048 positions
    assert "vocab_size=32000, max_position_embeddings=2048: LlamaConfig's defaults" in notes[0]
    assert notes[0].startswith("nncost: warning: ") and "num_key_value_heads" not in notes[0]


def test_defaulted_fields_go_by_the_files_names_and_overrides_count_as_given(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from nncost.sources.configs import defaulted_sizes, local_config

    raw = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2}
    with pytest.warns(UserWarning, match="does not give vocab_size=50257, n_positions=1024"):
        config = local_config(_write(tmp_path / "gpt2", raw))
    assert defaulted_sizes(config, raw) == {"vocab_size": 50257, "n_positions": 1024}
    assert defaulted_sizes(config, raw, {"vocab_size": 100}) == {"n_positions": 1024}
    assert defaulted_sizes(config, {**raw, "max_position_embeddings": 64, "vocab_size": 100}) == {}


def test_a_config_that_gives_every_size_warns_nothing(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import warnings

    from nncost.sources.configs import local_config

    whole = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        local_config(_write(tmp_path / "whole", whole))


# -- narrow terminals ------------------------------------------------------------------------------
TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 512}


def _header_and_rows(text: str) -> tuple[str, list[str]]:
    """The header line of the first table in ``text`` (the line above its rule) and its rows."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) <= {"─", "-", " "} and line.strip())
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.startswith(("Columns", "Names")):
            break
        rows.append(line)
    return lines[rule - 1], rows


def test_the_generation_table_fits_60_columns_with_whole_headers_and_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from nncost.render.generation import HEADER

    monkeypatch.setenv("COLUMNS", "60")
    code, text = cli(str(_write(tmp_path / "llama", TINY_LLAMA)), "--prompt", "16", "--new-tokens", "4",
                     "--hardware", "h100-sxm", "--depth", "2")
    assert code == 0
    header, rows = _header_and_rows(text)
    shown = [name for name in HEADER if name in header]
    assert "Layer" in shown and "Decode time" in shown
    assert sum(len(name) for name in shown) + 2 * (len(shown) - 1) <= len(header)  # every shown header whole
    assert rows and all(len(row) <= 60 for row in rows)
    names = [row.split()[0] for row in rows]
    assert "model.embed_tokens" in names and "lm_head" in names and not any(set(n) <= {"…"} for n in names)
    assert "Columns left out to fit 60" in text and "(all in --format json)" in text


def test_the_plan_and_stage_tables_fit_the_width_and_name_what_they_leave_out() -> None:
    from nncost.render.parallel import PLAN_DROP_ORDER, PLAN_HEADER, _table

    row = ("1", "8", "2", "4", "32 × 1", "yes", "no", "zero1", "75.43 GiB", "10.3 s", "50.68 K", "2.8%")
    wide = _table(PLAN_HEADER, [row], 8, 200, PLAN_DROP_ORDER)
    assert len(wide) == 3 and all(name in wide[0] for name in PLAN_HEADER)
    narrow = _table(PLAN_HEADER, [row], 8, 60, PLAN_DROP_ORDER)
    assert all(len(line) <= 60 for line in narrow)
    assert narrow[0].split() == ["#", "TP", "PP", "DP", "Sharding", "Peak", "per", "GPU", "Tokens/s"]
    assert narrow[2].split() == ["1", "8", "2", "4", "zero1", "75.43", "GiB", "50.68", "K"]
    note = " ".join(line.strip() for line in narrow[3:])
    assert note == ("Columns left out to fit 60: Bubble, Step time, SP, Micro-batches, Checkpointing "
                    "(all in --format json)")


def test_compare_breaks_model_names_between_their_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    from nncost.render.compare import stacked

    assert stacked("mobilenet_v3_small", 10) == "mobilenet_\nv3_small"
    assert stacked("hf:meta-llama/Llama-3-8B", 12) == "hf:meta-\nllama/Llama-\n3-8B"
    assert stacked("resnet18", 5) == "resnet18"  # one piece stays whole
    monkeypatch.setenv("COLUMNS", "60")
    code, text = cli("compare", "resnet18", "mobilenet_v3_small", "efficientnet_b0", "--input", "3x64x64")
    assert code == 0
    pieces = {"resnet18", "mobilenet_", "v3_small", "efficientnet_", "b0", "mobilenet_v3_small", "efficientnet_b0"}
    headers = [line for line in text.splitlines() if "Params" not in line and "─" not in line]
    words = {word for line in headers[:4] for word in line.split()}
    assert words - {"3", "models", "·", "batch", "1", "ratios", "to"} <= pieces
    assert all(len(line) <= 60 for line in text.splitlines())


# -- context limits -------------------------------------------------------------------------------
LONG_LLAMA = {**TINY_LLAMA, "max_position_embeddings": 131_072}


def test_a_prompt_past_the_context_is_refused_naming_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    model = str(_write(tmp_path / "llama", LONG_LLAMA))
    code, _ = cli(model, "--prompt", "10000000", "--new-tokens", "16")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "reads at most 131,072 tokens (max_position_embeddings in its config)" in err
    assert "10,000,016 in all" in err and "--ignore-context-limit" in err
    # the prompt and new tokens together: 131,060 + 13 is one past the limit, + 12 is at it
    assert cli(model, "--prompt", "131060", "--new-tokens", "13")[0] == 2
    capsys.readouterr()
    monkeypatch.setattr("nncost.stages.generation.generation", lambda *args: pytest.skip("the check passed"))
    with pytest.raises(pytest.skip.Exception):
        cli(model, "--prompt", "131060", "--new-tokens", "12")


def test_gpt2_refuses_a_seq_past_its_1024_positions(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    code, _ = cli("hf:gpt2", "--seq", "4096", "--config", "n_layer=1")
    err = capsys.readouterr().err
    assert code == 2
    assert "reads at most 1,024 tokens (n_positions in its config), and --seq 4,096 is past that" in err
    assert cli("hf:gpt2", "--seq", "1024", "--config", "n_layer=1")[0] == 0


def test_the_default_seq_is_checked_and_the_limit_can_be_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    model = str(_write(tmp_path / "short", {**TINY_LLAMA, "max_position_embeddings": 64}))
    code, _ = cli(model)
    assert code == 2 and "the default --seq of 128 is past that" in capsys.readouterr().err
    code, text = cli(model, "--seq", "256", "--ignore-context-limit", "--format", "json")
    assert code == 0 and json.loads(text)["layers"][0]["input_shapes"] == [[1, 256]]


def test_a_request_may_ignore_the_limit() -> None:
    pytest.importorskip("transformers")
    import transformers

    import nncost
    from nncost.errors import BadRequest
    from nncost.request import Generation, Inputs, Request

    module = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        k: v for k, v in TINY_LLAMA.items() if k != "model_type"} | {"max_position_embeddings": 16}))
    with pytest.raises(BadRequest, match="LlamaForCausalLM reads at most 16 tokens"):
        nncost.run(Request(module, Inputs(), generation=Generation(12, 8)))
    result = nncost.run(Request(module, Inputs(), generation=Generation(12, 8), ignore_context_limit=True))
    assert result.generation is not None and result.generation.new_tokens == 8


@pytest.mark.parametrize("rope, mpe, tokens, source", [
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32_768}, 32_768, 131_072,
     "rope_scaling yarn: factor 4 × original_max_position_embeddings 32,768"),
    # DeepSeek-V3's: the stretched context is the position field itself
    ({"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096}, 163_840, 163_840,
     "max_position_embeddings in its config"),
    ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0}, 131_072, 131_072, "max_position_embeddings in its config"),
    ({"rope_type": "linear", "factor": 4.0}, 2048, 8192,
     "rope_scaling linear: factor 4 × max_position_embeddings 2,048"),
])
def test_the_context_of_a_rope_scaled_config(rope: dict[str, object], mpe: int, tokens: int, source: str) -> None:
    transformers = pytest.importorskip("transformers")
    from nncost.sources.configs import context_limit

    config = transformers.LlamaConfig(max_position_embeddings=mpe, rope_scaling=rope)
    assert context_limit(config) == (tokens, source)


def test_configs_without_absolute_positions_have_no_limit() -> None:
    transformers = pytest.importorskip("transformers")
    from nncost.sources.configs import context_limit

    assert context_limit(transformers.T5Config()) is None
    assert context_limit(None) is None
    assert context_limit(transformers.BertConfig()) == (512, "max_position_embeddings in its config")


def test_a_plot_of_no_simulated_step_is_refused_before_the_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr("nncost.pipeline.run", _no_run)
    code, _ = cli("hf:gpt2", "--prompt", "8", "--new-tokens", "2", "--plot", str(tmp_path / "x.png"))
    assert code == 2 and "--plot draws the step one GPU simulates" in capsys.readouterr().err
