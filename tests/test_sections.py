"""A result's sections through every renderer: each shows the sections it knows, names the ones
it does not, and the JSON holds any section by its fields; the HTML page shows every section."""

from __future__ import annotations

import ast
import json
import warnings
from dataclasses import FrozenInstanceError, asdict, dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from torch import nn

import nncost
from nncost.analyses.compare import build_comparison
from nncost.errors import BadRequest
from nncost.records.comparison import Comparison
from nncost.records.result import Result
from nncost.render import formats, html, text
from nncost.render.output import PLOT_NEEDS_A_STEP, Output, check, render
from nncost.request import Inputs, Request, Run, Step

SRC = Path(__file__).resolve().parents[1] / "src" / "nncost"
PROTOCOLS = {"__str__", "__repr__", "__rich_console__", "__rich__", "_repr_html_", "_repr_markdown_", "__format__"}


@dataclass(frozen=True)
class ServingReport:
    """A section no renderer knows yet."""

    requests_per_second: float
    replicas: int


@dataclass(frozen=True)
class Queue:
    SECTION: ClassVar[str] = "serving"

    depth: int


@pytest.fixture(scope="module")
def small() -> nncost.Report:
    return nncost.profile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (4,), name="small")


@pytest.fixture(scope="module")
def comparison(small: nncost.Report) -> Comparison:
    wide = nncost.profile(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), (4,), name="wide")
    return build_comparison([("small", small, None), ("wide", wide, None)], train=False)


def test_every_renderer_names_a_section_it_does_not_know(small: nncost.Report) -> None:
    result = Result.of(small, ServingReport(12.5, 3))
    line = "serving_report: not shown"
    assert f"{line} as text; see --format json" in text.to_text(result, width=120)
    assert f"{line} in CSV; see --format json" in formats.to_csv(result)
    assert f"{line} in Markdown; see --format json" in formats.to_markdown(result)
    assert f"{line} in HTML; see --format json" in html.html_page(result)
    assert "small" in text.to_text(result, width=120)  # the known section is still shown


def test_the_json_holds_any_section_under_its_name(small: nncost.Report) -> None:
    data = formats.to_dict(Result.of(small, ServingReport(12.5, 3), Queue(4)))
    assert data["serving_report"] == asdict(ServingReport(12.5, 3)) and data["serving"] == {"depth": 4}
    alone = formats.to_dict(Result.of(small))
    assert list(data)[:-2] == list(alone)  # after the document's own keys
    assert formats.to_json(small) == formats.to_json(Result.of(small))  # a report alone is its result


def test_the_document_has_a_comparison_key(small: nncost.Report, comparison: Comparison) -> None:
    assert formats.to_dict(Result.of(small))["comparison"] is None
    data = json.loads(Result.of(comparison).to_json())
    assert data["schema"] == "nncost.report/2" and "model" not in data
    assert [m["model"] for m in data["comparison"]["models"]] == ["small", "wide"]
    assert data["comparison"]["ratios"][1]["params"] == comparison.ratios[1]["params"]
    assert [k for k, v in data.items() if v is not None] == ["schema", "comparison"]


def test_a_comparison_is_a_section_of_every_view(comparison: Comparison) -> None:
    result = Result.of(comparison)
    assert result.table(width=120) == str(comparison)
    assert formats.to_markdown(result).startswith("**2 models")
    assert formats.to_csv(result).splitlines()[0].startswith("model,batch_size,params,macs")
    page = html.html_page(result)
    assert "2 models · batch 1 · ratios to small" in page and "small vs wide" in page


def test_comparison_records_are_frozen(comparison: Comparison) -> None:
    with pytest.raises(FrozenInstanceError):
        comparison.stage_depth = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        comparison.models[0].model = "other"  # type: ignore[misc]
    assert isinstance(comparison.models, tuple) and isinstance(comparison.stages, tuple)


def test_a_result_reads_the_old_comparison_attributes_with_a_warning(comparison: Comparison) -> None:
    result = Result.of(comparison)
    with pytest.warns(DeprecationWarning, match=r"result.models is now result.comparison.models"):
        assert result.models == comparison.models
    with pytest.warns(DeprecationWarning, match="result.comparison.stage_depth"):
        assert result.stage_depth == comparison.stage_depth
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert result.comparison is comparison
        with pytest.raises(AttributeError):
            _ = Result().models  # no comparison: nothing to forward


def _imports_outside_protocols(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in PROTOCOLS:
            skipped |= {id(n) for n in ast.walk(node)}
    return [node.module or "" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and id(node) not in skipped]


def test_the_comparison_record_imports_no_renderer() -> None:
    imported = _imports_outside_protocols(SRC / "records" / "comparison.py")
    assert imported and not [name for name in imported if name.startswith("nncost.render")]


# -- the HTML page shows every section ----------------------------------------------------------
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 100, "max_position_embeddings": 256, "tie_word_embeddings": False, "torch_dtype": "float32"}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Result:
    folder = tmp_path_factory.mktemp("llama")
    (folder / "config.json").write_text(json.dumps(LLAMA))
    request = Request(str(folder), Inputs(batch_size=2, seq=16), hardware="h100-sxm", depth=0,
                      step=Step(allocator="cpu", gpus=4, plan=True), run=Run(10**9, price_per_gpu_hour=2.0))
    return nncost.run(request)


def test_the_page_shows_a_plan_and_a_training_run(planned: Result) -> None:
    assert planned.plan is not None and planned.training_run is not None
    page = html.html_page(planned)
    assert "<h3>Plan</h3>" in page and "fastest per token first" in page and "Step time" in page
    assert page.count("<tr><td>1</td>") == 1 and "memory of each pipeline stage" in page  # the best's stages
    assert "<h3>Training run</h3>" in page and "GPU-hours" in page and "at 2 a GPU-hour" in page
    assert "Layer tree" in page


def test_the_page_shows_a_comparison(comparison: Comparison) -> None:
    page = html.to_html(Result.of(comparison))
    for row in ("Params", "MACs", "FLOPs", "Uncounted ops"):
        assert f"<td>{row}</td>" in page
    assert "Layers of the same name at depth 1" in page and "Layer tree" not in page


# -- one output for every command ---------------------------------------------------------------
def test_check_refuses_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="--explain shows one layer's formulas as text"):
        check(Output("csv", explain="0"))
    with pytest.raises(BadRequest, match=r"cannot write the HTML report to .*does not exist"):
        check(Output(html=tmp_path / "missing" / "page.html"))
    with pytest.raises(BadRequest, match="cannot write the memory plot"):
        check(Output(plot=tmp_path))
    with pytest.raises(BadRequest, match="unknown format"):
        check(Output("yaml"))
    check(Output("json", explain="0", html=tmp_path / "page.html"))


def test_render_prints_the_format_and_writes_the_page(small: nncost.Report, tmp_path: Path) -> None:
    result = Result.of(small)
    assert render(result, Output("json")) == result.to_json()
    assert render(result, Output("csv")) == result.to_csv()
    assert render(result, Output("markdown")) == result.to_markdown()
    assert render(result, Output("text")) == render(result, Output("table")) == str(result)
    page = tmp_path / "page.html"
    render(result, Output(html=page, command="nncost small"))
    assert "$ nncost small" in page.read_text()
    explained = json.loads(render(result, Output("json", explain="0")))
    assert explained["name"] == "0" and explained["totals"]["macs"] == 4 * 8
    assert render(result, Output(explain="0")).startswith("0 (Linear)")
    with pytest.raises(BadRequest, match=PLOT_NEEDS_A_STEP.split(":")[0]):
        render(result, Output(plot=tmp_path / "memory.png"))


def test_explain_needs_a_forward(comparison: Comparison) -> None:
    with pytest.raises(BadRequest, match="this request has none"):
        render(Result.of(comparison), Output(explain="0"))


