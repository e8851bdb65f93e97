"""The HTML report shows the records' figures as the other views format them, escapes every name,
needs no network, stays small, and leaves out what the report does not hold."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from torch import nn

import nncost
from html_fixtures import fill_roofline
from nncost.cli import run
from nncost.records.memory import CATEGORIES
from nncost.records.result import Result
from nncost.render import units
from nncost.render.formats import layer_cells, summary_lines
from nncost.render.html import TOP_LAYERS, html_page, to_html, write_html
from nncost.render.html_assets import STYLE
from nncost.render.memory import memory_lines
from nncost.render.svg import _downsample

torchvision = pytest.importorskip("torchvision")

VOID = {"input", "meta", "br", "img", "hr", "link"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self, skip: tuple[str, ...] = ()) -> str:
        return "".join(c if isinstance(c, str) else ("" if c.tag in skip else c.text(skip)) for c in self.children)

    def find(self, tag: str, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and all(attrs[k] in child.attrs.get(k.rstrip("_"), "").split() for k in attrs):
                    found.append(child)
                found.extend(child.find(tag, **attrs))
        return found


class _Tree(HTMLParser):
    """A DOM of the report, strict: every element the report opens must be closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    assert tree.stack == [tree.root], "unclosed elements"
    return tree.root


@pytest.fixture(scope="module")
def resnet18() -> tuple[nncost.Report, nncost.MemoryReport]:
    model = torchvision.models.resnet18()
    report = nncost.profile(model, (3, 224, 224), batch_size=2, name="resnet18")
    memory = nncost.memory(model, (3, 224, 224), batch_size=2, name="resnet18", optimizer="adamw")
    report = fill_roofline(report)
    return report, memory


@pytest.fixture(scope="module")
def dom(resnet18: tuple[nncost.Report, nncost.MemoryReport]) -> Node:
    report, memory = resnet18
    return parse(html_page(Result.of(report, memory), command="nncost resnet18 --batch 2 --train --optimizer adamw"))


def kv(table: Node) -> list[tuple[str, str]]:
    return [(row.find("th")[0].text(), row.find("td")[0].text()) for row in table.find("tr")]


def test_every_row_shows_the_layers_figures_as_the_table_formats_them(
        resnet18: tuple[nncost.Report, nncost.MemoryReport], dom: Node) -> None:
    report, _ = resnet18
    table = dom.find("table", class_="layers")[0]
    headers = [th.text() for th in table.find("th")]
    assert headers == ["#", "Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "Output", "%FLOPs",
                       "Est. time", "Bound", "Measured"]
    rows = table.find("tbody")[0].find("tr")
    assert len(rows) == len(report.layers)
    for row, layer in zip(rows, report.layers, strict=True):
        cells = [td.text(skip=("button",)) for td in row.find("td")]
        assert row.attrs["data-i"] == cells[0] == str(layer.index)
        assert row.attrs["data-p"] == ("" if layer.parent is None else str(layer.parent))
        assert tuple(cells[1:9]) == layer_cells(layer)
        assert layer.estimated_seconds is not None and layer.measured_seconds is not None
        assert cells[9:] == [units.seconds(layer.estimated_seconds), layer.bound,
                             units.seconds(layer.measured_seconds)]
        numbers = [float(td.attrs["data-v"]) for td in row.find("td") if "data-v" in td.attrs]
        assert numbers[1:6] == pytest.approx([layer.params, layer.macs, layer.flops, layer.output_bytes,
                                              layer.flops_share], rel=1e-5)


def test_totals_memory_and_command_are_the_other_views_lines(
        resnet18: tuple[nncost.Report, nncost.MemoryReport], dom: Node) -> None:
    report, memory = resnet18
    tables = dom.find("table", class_="kv")
    assert kv(tables[0]) == summary_lines(report)
    assert ("Params", "11,689,512 (11.69 M): 11,689,512 trainable, 0 frozen") in kv(tables[0])  # torchvision's count
    assert [(label.strip(), value) for label, value in memory_lines(memory)] in [kv(t) for t in tables]
    assert dom.find("div", class_="cmd")[0].text() == "$ nncost resnet18 --batch 2 --train --optimizer adamw"


def test_bar_charts_rank_the_leaf_layers(resnet18: tuple[nncost.Report, nncost.MemoryReport], dom: Node) -> None:
    report, _ = resnet18
    figures = {f.find("figcaption")[0].text().split(":")[0]: f for f in dom.find("figure") if f.find("figcaption")}
    leaves = [layer for layer in report.layers if layer.is_leaf]
    expected = sorted((la for la in leaves if la.params), key=lambda la: -la.params)[:TOP_LAYERS]
    bars = [g.find("title")[0].text() for g in figures["Parameters"].find("g")]
    assert bars == [f"{la.label}: {units.count(la.params)}" for la in expected]
    for name in ("MACs", "FLOPs", "Output memory", "Estimated time", "Measured time"):
        assert len(figures[name].find("rect")) == TOP_LAYERS, name


def _roof_y(points: list[tuple[float, float]], x: float) -> float:
    for (x0, y0), (x1, y1) in pairwise(points):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError(f"x={x} is off the roof")


def test_roofline_puts_each_estimate_on_its_roof(resnet18: tuple[nncost.Report, nncost.MemoryReport],
                                                 dom: Node) -> None:
    report, _ = resnet18
    chart = next(svg for svg in dom.find("svg") if svg.attrs["aria-label"] == "roofline")
    roof = next(p for p in chart.find("polyline") if p.attrs["class"] == "roof")
    corners = [(float(x), float(y)) for x, y in (pair.split(",") for pair in roof.attrs["points"].split())]
    assert len(chart.find("polyline", class_="datasheet")) == 1  # efficiency 0.7: the datasheet roof too
    [group] = chart.find("g", class_="pts")  # one roof: every point in its colour
    assert group.attrs["fill"] in roof.attrs["style"]
    points = group.find("circle", class_="pt")
    leaves = [la for la in report.layers if la.is_leaf and la.flops > 0]
    rings = [c for c in chart.find("circle", class_="ring") if c.find("title")]  # not the legend's
    assert len(points) == len(leaves) == len(rings)
    for circle, layer in zip(points, leaves, strict=True):
        assert circle.find("title")[0].text().startswith(f"{layer.label}: ")
        # estimated = max(flops/peak, bytes/bw), so FLOPs/estimate is the roof at that intensity
        assert float(circle.attrs["cy"]) == pytest.approx(_roof_y(corners, float(circle.attrs["cx"])), abs=0.15)


def test_memory_timeline_marks_the_peak_at_the_top_of_the_stack(
        resnet18: tuple[nncost.Report, nncost.MemoryReport], dom: Node) -> None:
    _, memory = resnet18
    chart = next(svg for svg in dom.find("svg") if svg.attrs["aria-label"] == "memory timeline")
    paths = chart.find("path")
    seen = {c.replace("_", " ") for k, c in enumerate(CATEGORIES) if any(live[k] for _, live in memory.timeline)}
    assert {p.find("title")[0].text() for p in paths} == seen
    tops = [float(v) for p in paths for v in re.findall(r"V([\d.]+)", p.attrs["d"])]
    peak = chart.find("circle", class_="peak")[0]
    assert min(tops) == pytest.approx(float(peak.attrs["cy"]), abs=0.05)
    label = chart.find("text", class_="peak")[0].text()
    assert label == f"peak {units.nbytes(memory.peak_bytes)} at op {memory.peak_op}: {memory.peak_at}"
    assert max(sum(live) for _, live in memory.timeline) == memory.peak_bytes


def test_downsampling_keeps_the_peak() -> None:
    timeline = [(op, (1000, (op * 7919) % 1009, 0, 0, 0, 0)) for op in range(20_000)]
    kept = _downsample(timeline, 20_000, 500)
    assert len(kept) <= 500
    assert max(sum(live) for _, live in kept) == max(sum(live) for _, live in timeline)
    assert [op for op, _ in kept] == sorted(op for op, _ in kept)


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module("<script>alert(1)</script>&amp;", nn.Linear(4, 4))
        self.add_module('x"onmouseover="boom', nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


def test_names_are_escaped_everywhere() -> None:
    report = nncost.profile(Odd(), (4,), name="a<b>&c")
    html = to_html(report, command="nncost 'a<b>&c' --input 4")
    assert "<script>alert" not in html and 'x"onmouseover' not in html and "<b>" not in html
    dom = parse(html)
    names = [td.text(skip=("button",)) for td in dom.find("td", class_="nm")]
    assert names == ["(model)", "<script>alert(1)</script>&amp;", 'x"onmouseover="boom']
    assert dom.find("h2")[0].text() == "a<b>&c · batch 1"
    assert dom.find("div", class_="cmd")[0].text() == "$ nncost 'a<b>&c' --input 4"
    bar_titles = [t.text() for t in dom.find("title")]
    assert "<script>alert(1)</script>&amp;: 20" in bar_titles  # 4×4 weights + 4 biases
    assert len(dom.find("script")) == 1


def test_the_page_needs_no_network(dom: Node, resnet18: tuple[nncost.Report, nncost.MemoryReport]) -> None:
    report, memory = resnet18
    html = html_page(Result.of(report, memory))
    urls = re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]*", html, flags=re.IGNORECASE)
    assert set(urls) == {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched
    assert not re.search(r"\b(src|href|action|srcset)\s*=|@import|url\(|//cdn|fetch\(|XMLHttpRequest", html)
    assert not dom.find("link") and not dom.find("img") and not dom.find("iframe")


def test_size_stays_small(tmp_path: Path) -> None:
    model = torchvision.models.resnet50()
    report = nncost.profile(model, (3, 224, 224), batch_size=8, name="resnet50")
    memory = nncost.memory(model, (3, 224, 224), batch_size=8, name="resnet50")
    report = fill_roofline(report)
    path = tmp_path / "resnet50.html"
    write_html(path, Result.of(report, memory))
    assert path.stat().st_size < 300_000  # 199 KB when written
    wide = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.GELU()) for _ in range(250)])  # 751 calls
    deep = nncost.profile(wide, (8,))
    deep = fill_roofline(deep)
    assert len(deep.layers) == 751
    assert len(html_page(deep).encode()) < 700 * len(deep.layers)


def test_what_the_report_lacks_is_left_out() -> None:
    report = nncost.profile(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (3, 8, 8))
    dom = parse(to_html(report))
    headers = [th.text() for th in dom.find("th")]
    assert "Est. time" not in headers and "Bound" not in headers and "Measured" not in headers
    labels = [svg.attrs["aria-label"] for svg in dom.find("svg")]
    assert "roofline" not in labels and "memory timeline" not in labels
    captions = [f.text() for f in dom.find("figcaption")]
    assert not any("time" in c for c in captions)
    assert not any("Roofline" in c or "Memory" in c for c in (h.text() for h in dom.find("h3")))
    assert not dom.find("div", class_="cmd")


def test_estimates_without_measurements_show_only_the_estimates() -> None:
    report = nncost.profile(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (64,), batch_size=4)
    report = fill_roofline(report, efficiency=1.0, measured_factor=None)
    dom = parse(to_html(report))
    headers = [th.text() for th in dom.find("th")]
    assert "Est. time" in headers and "Measured" not in headers
    chart = next(svg for svg in dom.find("svg") if svg.attrs["aria-label"] == "roofline")
    assert not chart.find("circle", class_="ring") and not chart.find("polyline", class_="datasheet")


def test_a_roofline_without_roofs_keeps_its_table_and_drops_the_chart() -> None:
    report = nncost.profile(nn.Sequential(nn.Linear(8, 8)), (8,))
    report = fill_roofline(report)
    assert report.roofline is not None
    report = replace(report, roofline=replace(report.roofline, bandwidth=0.0))
    dom = parse(to_html(report))
    assert "roofline" not in [svg.attrs["aria-label"] for svg in dom.find("svg")]
    assert ("Hardware", "h100-sxm, bfloat16") in kv(dom.find("table", class_="kv")[1])


def test_notebook_view_is_scoped_and_unique() -> None:
    report = nncost.profile(nn.Sequential(nn.Linear(4, 4)), (4,))
    first, second = report._repr_html_(), report._repr_html_()
    ids = [re.search(r'id="([^"]+)"', html).group(1) for html in (first, second)]  # type: ignore[union-attr]
    assert ids[0] != ids[1]
    for html, uid in zip((first, second), ids, strict=True):
        assert "<html" not in html and "<body" not in html
        assert f'document.getElementById("{uid}")' in html
        assert html.count(' id="') == 1  # no other id to clash with a second report
        parse(html)
    rules = re.findall(r"([^{}]+)\{[^{}]*\}", STYLE)
    selectors = [s.strip() for rule in rules for s in rule.split(",")]
    assert selectors and all(s.startswith(".nncost-report") for s in selectors), selectors


def test_cli_writes_the_page_and_still_prints_the_table(tmp_path: Path) -> None:
    chunks: list[str] = []
    target = tmp_path / "r.html"
    assert run(["resnet18", "--train", "--batch", "2", "--html", str(target)], out=chunks.append) == 0
    text = "".join(chunks)
    assert "11,689,512" in text and "Peak" in text  # the normal output: table, totals, memory
    page = target.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'aria-label="memory timeline"' in page
    assert f"$ nncost resnet18 --train --batch 2 --html {target}" in page


def test_cli_refuses_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope" / "r.html"
    assert run(["resnet18", "--html", str(missing)], out=lambda _: None) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "does not exist" in error and str(missing.parent) in error
    assert not missing.parent.exists()


def test_a_calibrated_cpu_also_draws_its_fastest_cache_roof() -> None:
    from nncost.records.roofline import Roofline
    from nncost.render.svg import Point, Roof, roofline_chart

    plain = Roofline(hardware="cpu", dtype="float32", peak_flops=1e11, bandwidth=1e10)
    cached = Roofline(hardware="cpu", dtype="float32", peak_flops=1e11, bandwidth=1e10,
                      bandwidth_curve=[(1 << 15, 3e10), (1 << 20, 8e10), (1 << 27, 1e10)])
    roof = Roof("fp32", 1e11)
    points = [Point("a", 0.5, 4e9, "memory", roof)]
    assert "fastest cache" not in roofline_chart(plain, points, [roof])
    svg = roofline_chart(cached, points, [roof])
    assert f"<title>the fastest cache's roof: {units.bandwidth(8e10)}" in svg


def test_roofline_draws_every_roof_a_layer_was_costed_against() -> None:
    """resnet50 in fp32 on an H100: convolutions on the TF32 roof (cuDNN's default), the rest on
    fp32; two roofs, each point in its roof's colour and on or under it."""
    model = torchvision.models.resnet50()
    report = nncost.profile(model, (3, 224, 224), batch_size=8, hardware="h100-sxm")
    assert report.roofline is not None and report.roofline.family_dtype["conv"] == "tf32"
    chart = next(svg for svg in parse(to_html(report)).find("svg") if svg.attrs["aria-label"] == "roofline")
    roofs = {p.attrs["data-roof"]: p for p in chart.find("polyline") if p.attrs["class"] == "roof"}
    assert sorted(roofs) == ["fp32", "tf32"]
    peaks = report.roofline.family_peak_flops
    for column, family in (("tf32", "conv"), ("fp32", "elementwise")):
        assert units.rate(peaks[family]) in roofs[column].find("title")[0].text()
    leaves = {la.label: la for la in report.layers if la.is_leaf and la.flops > 0}
    groups = chart.find("g", class_="pts")
    assert sorted(g.attrs["data-roof"] for g in groups) == ["fp32", "tf32"]
    drawn = 0
    for group in groups:
        roof = roofs[group.attrs["data-roof"]]
        assert group.attrs["fill"] in roof.attrs["style"]
        corners = [(float(x), float(y)) for x, y in (pair.split(",") for pair in roof.attrs["points"].split())]
        for circle in group.find("circle", class_="pt"):
            layer = leaves[circle.find("title")[0].text().split(": ")[0]]
            assert group.attrs["data-roof"] == ("tf32" if layer.type == "Conv2d" else "fp32"), layer.label
            x, y = float(circle.attrs["cx"]), float(circle.attrs["cy"])
            assert y >= _roof_y(corners, x) - 0.15, f"{layer.label} lies above its roof"  # SVG y grows downwards
            drawn += 1
    assert drawn == sum(1 for la in report.layers if la.is_leaf and la.flops > 0)
