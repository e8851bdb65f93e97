"""The HTML report in a real headless Chromium: it loads without console errors, shows the totals,
its tree folds and its columns sort, and it paints a screenshot.

Skipped when no Chromium is installed, unless NNCOST_REQUIRE_BROWSER=1 (as .ci/run sets), where
a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import nncost
from html_fixtures import fill_roofline
from nncost.records.result import Result
from nncost.render.formats import summary_lines
from nncost.render.html import write_html
from nncost.render.memory import memory_lines

torchvision = pytest.importorskip("torchvision")

BROWSER = next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                if (found := shutil.which(name))), None)
CONSOLE = re.compile(r":CONSOLE[:(]")

# Appended to a copy of the page, after the report's own script: it drives the page through its
# buttons and headers, as a person would, and writes what it saw into the DOM for --dump-dom.
SELF_TEST = """<script>(function(){
var root=document.querySelector(".nncost-report"),tbody=root.querySelector("table.layers tbody");
function shown(){return Array.prototype.filter.call(tbody.rows,function(r){return !r.hidden;})
.map(function(r){return +r.getAttribute("data-i");});}
function head(text){return Array.prototype.filter.call(root.querySelectorAll("table.layers th"),
function(th){return th.textContent===text;})[0];}
var out={ready:root.getAttribute("data-ready"),initial:shown()};
root.querySelector(".collapse-all").click();out.collapsed=shown();
root.querySelector(".expand-all").click();out.expanded=shown();
var layer1=tbody.querySelector('tr[data-i="'+FOLD+'"] .tg');layer1.click();out.folded=shown();
out.folded_aria=layer1.getAttribute("aria-expanded");layer1.click();
head("MACs").click();out.macs_desc=shown();out.macs_aria=head("MACs").getAttribute("aria-sort");
head("MACs").click();out.macs_asc=shown();
head("Layer").click();out.by_name=shown();
var flat=root.querySelector(".flat-list");flat.checked=true;flat.dispatchEvent(new Event("change"));
head("FLOPs").click();out.flat_flops_desc=shown();
flat.checked=false;flat.dispatchEvent(new Event("change"));head("#").click();head("#").click();
out.restored=shown();
out.totals_text=root.querySelector(".totals").innerText;
out.totals_height=root.querySelector(".totals").getBoundingClientRect().height;
out.svgs=root.querySelectorAll("svg.chart").length;
var pre=document.createElement("pre");pre.id="selftest";pre.textContent=JSON.stringify(out);
document.body.appendChild(pre);})();</script>"""


def _browser() -> str:
    if BROWSER is None:
        if os.environ.get("NNCOST_REQUIRE_BROWSER") == "1":
            pytest.fail("NNCOST_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed")
    return BROWSER


def _chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
               "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _console(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if CONSOLE.search(line)]


class _Pre(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inside, self.text = False, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = tag == "pre" and ("id", "selftest") in attrs

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nncost.Report, nncost.MemoryReport]:
    model = torchvision.models.resnet18()
    report = nncost.profile(model, (3, 224, 224), batch_size=2, name="resnet18")
    memory = nncost.memory(model, (3, 224, 224), batch_size=2, name="resnet18")
    report = fill_roofline(report)
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html(path, Result.of(report, memory), command="nncost resnet18 --batch 2 --train --html report.html")
    return path, report, memory


def test_page_loads_clean_and_shows_the_totals(page: tuple[Path, nncost.Report, nncost.MemoryReport],
                                               tmp_path: Path) -> None:
    browser = _browser()
    path, report, memory = page
    result = _chromium(browser, tmp_path, "--dump-dom", path.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console(result) == [], "the page wrote to the console"
    dom = result.stdout
    assert 'data-ready="1"' in dom, "the report's script did not run"
    for label, value in summary_lines(report) + memory_lines(memory):
        assert value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom, label


def test_tree_folds_and_columns_sort(page: tuple[Path, nncost.Report, nncost.MemoryReport], tmp_path: Path) -> None:
    browser = _browser()
    path, report, _ = page
    fold = report.layer("layer1")
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", SELF_TEST.replace("FOLD", str(fold.index)) + "</body>"))
    result = _chromium(browser, tmp_path, "--window-size=1280,1000", "--dump-dom", probe.as_uri())
    assert _console(result) == [], "the page or the probe wrote to the console"
    parser = _Pre()
    parser.feed(result.stdout)
    seen = json.loads(parser.text)

    layers = {layer.index: layer for layer in report.layers}
    order = [layer.index for layer in report.layers]
    children: dict[int | None, list[int]] = {}
    for layer in report.layers:
        children.setdefault(layer.parent, []).append(layer.index)

    def below(index: int) -> set[int]:
        found = set(children.get(index, []))
        for child in list(found):
            found |= below(child)
        return found

    assert seen["ready"] == "1"
    assert seen["initial"] == order  # 76 calls: all open, model order
    assert seen["collapsed"] == [0]
    assert seen["expanded"] == order
    assert seen["folded"] == [i for i in order if i not in below(fold.index)]
    assert seen["folded_aria"] == "false"

    def is_tree_sorted(shown: list[int], key: str, descending: bool) -> bool:
        position = {index: n for n, index in enumerate(shown)}
        for parent, kids in children.items():
            values = [getattr(layers[k], key) for k in sorted(kids, key=position.__getitem__)]
            if values != sorted(values, reverse=descending):
                return False
            if parent is not None and any(position[k] < position[parent] for k in kids):
                return False
        return True

    assert sorted(seen["macs_desc"]) == sorted(order) and seen["macs_desc"] != order
    assert is_tree_sorted(seen["macs_desc"], "macs", descending=True)
    assert seen["macs_aria"] == "descending"
    assert is_tree_sorted(seen["macs_asc"], "macs", descending=False)
    assert is_tree_sorted(seen["by_name"], "label", descending=False)
    leaves = [layer for layer in report.layers if layer.is_leaf]
    assert [layers[i].flops for i in seen["flat_flops_desc"]] == sorted((la.flops for la in leaves), reverse=True)
    assert sorted(seen["flat_flops_desc"]) == sorted(la.index for la in leaves)
    assert seen["restored"] == order
    assert "11,689,512" in seen["totals_text"]  # torchvision's published num_params for resnet18
    assert seen["totals_height"] > 100
    assert seen["svgs"] >= 8  # 6 bar charts, the memory timeline, the roofline


def test_screenshot_is_a_painted_page(page: tuple[Path, nncost.Report, nncost.MemoryReport], tmp_path: Path) -> None:
    browser = _browser()
    image_module = pytest.importorskip("PIL.Image")
    path, _, _ = page
    shot = tmp_path / "report.png"
    result = _chromium(browser, tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", path.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert _console(result) == []
    with image_module.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 1600)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50, "a blank or nearly blank page"
        white = max((count for count, colour in colours if colour == (255, 255, 255)), default=0)
        assert white < 0.97 * 1280 * 1600, "almost all white"


TWO_PROBE = """<script>(function(){
var roots=document.querySelectorAll(".nncost-report");
function shown(root){return Array.prototype.filter.call(root.querySelector("table.layers tbody").rows,
function(r){return !r.hidden;}).length;}
roots[1].querySelector(".collapse-all").click();
var pre=document.createElement("pre");pre.id="selftest";
pre.textContent=JSON.stringify({ready:[roots[0].getAttribute("data-ready"),roots[1].getAttribute("data-ready")],
first:shown(roots[0]),second:shown(roots[1])});document.body.appendChild(pre);})();</script>"""


def test_two_notebook_views_on_one_page_work_apart(tmp_path: Path) -> None:
    browser = _browser()
    from torch import nn

    first = nncost.profile(nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2))), (4,))
    second = nncost.profile(nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU())), (4,))
    page = tmp_path / "notebook.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
                    f"<div class='cell'>{first._repr_html_()}</div><div class='cell'>{second._repr_html_()}</div>"
                    f"{TWO_PROBE}</body></html>")
    result = _chromium(browser, tmp_path, "--dump-dom", page.as_uri())
    assert _console(result) == []
    parser = _Pre()
    parser.feed(result.stdout)
    seen = json.loads(parser.text)
    assert seen == {"ready": ["1", "1"], "first": len(first.layers), "second": 1}
