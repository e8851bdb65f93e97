"""Size and opening time of ``--html`` reports for big models, in headless Chromium.

    PYTHONPATH=src python bench/html_report.py

For each model the CLI writes the report (with the memory timeline of a training step); the page
is then opened in ``chromium --headless --dump-dom`` with a probe appended that records, after
the report's own script ran, ``performance.now()`` and the load event's start (milliseconds from
navigation start), the median of five openings (the machine is shared: single runs vary 2x).
Without ``chromium`` on PATH the pages are only written, and the output says why those columns are nan.
Also used as a model source: ``bench/html_report.py:deep_mlp`` (250 blocks of Linear + GELU: 500
leaf layers, 751 module calls).
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch import nn

CASES = (
    ("resnet50", ["resnet50", "--batch", "8", "--train"]),
    ("mobilenet_v3_large", ["mobilenet_v3_large", "--batch", "8", "--train"]),
    ("hf:gpt2", ["hf:gpt2", "--seq", "128", "--train"]),
    ("deep_mlp (500 leaves)", [f"{__file__}:deep_mlp", "--input", "64", "--train"]),
)
PROBE = ('<script>window.addEventListener("load",function(){var n=performance.getEntriesByType("navigation")[0];'
         'document.body.setAttribute("data-load",n.loadEventStart.toFixed(0));});'
         'document.body.setAttribute("data-script",performance.now().toFixed(0));</script>')


def deep_mlp() -> nn.Module:
    return nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.GELU()) for _ in range(250)])


def open_in_chromium(browser: str, page: Path, work: Path, repeats: int = 5) -> tuple[float, float, float]:
    probe = page.with_suffix(".probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={work / 'profile'}", "--dump-dom", probe.as_uri()]
    scripts, loads, walls = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
        walls.append(time.perf_counter() - start)
        scripts.append(float(re.search(r'data-script="(\d+)"', dom).group(1)))  # type: ignore[union-attr]
        loads.append(float(re.search(r'data-load="(\d+)"', dom).group(1)))  # type: ignore[union-attr]
    return statistics.median(scripts), statistics.median(loads), statistics.median(walls)


def main() -> None:
    from nncost.cli import run

    browser = shutil.which("chromium")
    if browser is None:
        print("no chromium on PATH: the pages are written but not opened (their opening times will be nan)",
              file=sys.stderr)
    rows = ["| model | module calls | HTML size | write (CLI, s) | script done (ms) | load event (ms) |"
            " chromium wall (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, argv in CASES:
            page = work / "report.html"
            chunks: list[str] = []
            start = time.perf_counter()
            if run([*argv, "--html", str(page)], out=chunks.append) != 0:
                sys.exit(f"{label}: the CLI failed")
            elapsed = time.perf_counter() - start
            calls = page.read_text().count("<tr class=\"d")
            nan = float("nan")
            script, load, wall = open_in_chromium(browser, page, work) if browser else (nan, nan, nan)
            rows.append(f"| {label} | {calls} | {page.stat().st_size / 1024:.0f} KiB | {elapsed:.1f} | {script:.0f} | "
                        f"{load:.0f} | {wall:.2f} |")
    if browser is None:
        rows.append("\nThe columns of the opening times (script done, load event, chromium wall) are nan: no "
                    "`chromium` on PATH, so the pages were written but not opened.")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
