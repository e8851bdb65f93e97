"""nncost's generation beside published serving measurements: the held-out error of docs/validation.md.

    PYTHONPATH=src python bench/validation.py               # the table, on stdout
    PYTHONPATH=src python bench/validation.py --write-docs  # and docs/validation.md

The rows live in bench/validation_rows.json: each a published measurement (its source named
there) of a fixed batch, or of a fixed concurrency of requests of one length, with the model,
GPU, GPU count, dtype, prompt and output lengths, and the output tokens per second (and the
mean time to first token where published).  Each model's config is written from its published
values into a temporary directory and costed on meta, with ``--engine vllm`` and with
``hf-generate`` for contrast.  nncost's output tokens per second is the batch's tokens over one
request's time, ``batch × new_tokens / (TTFT + decode time)``, the figure each source reports.
None of these rows sets a constant: the constants come from the sources docs/validation.md names.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROWS_FILE = ROOT / "bench" / "validation_rows.json"
DOC = ROOT / "docs" / "validation.md"
ENGINES = ("vllm", "hf-generate")
ROW_FIELDS = ("source", "model", "hardware", "tensor_parallel", "dtype", "prompt", "new_tokens", "batch",
              "batch_meaning", "output_tokens_per_second", "ttft_ms")


@dataclass(frozen=True)
class Row:
    """One published measurement: ``batch`` sequences (or that many concurrent requests) of
    ``prompt`` tokens generating ``new_tokens`` each, on ``tensor_parallel`` GPUs."""

    source: str
    model: str
    hardware: str
    tensor_parallel: int
    dtype: str
    prompt: int
    new_tokens: int
    batch: int
    batch_meaning: str
    output_tokens_per_second: float
    ttft_ms: float | None

    def options(self, engine: str) -> dict[str, Any]:
        """nncost.cost's keywords for this row."""
        return {"prompt": self.prompt, "new_tokens": self.new_tokens, "batch": self.batch,
                "hardware": self.hardware, "dtype": self.dtype, "tensor_parallel": self.tensor_parallel,
                "engine": engine}

    def command(self, engine: str) -> str:
        """The same run as a command line (the config written to /tmp/MODEL)."""
        tp = f" --tensor-parallel {self.tensor_parallel}" if self.tensor_parallel > 1 else ""
        return (f"nncost /tmp/{self.model} --prompt {self.prompt} --new-tokens {self.new_tokens} "
                f"--batch {self.batch} --hardware {self.hardware} --dtype {self.dtype}{tp} --engine {engine}")


@dataclass(frozen=True)
class Estimate:
    """nncost's figures for one row and engine."""

    output_tokens_per_second: float
    ttft_ms: float
    wall_seconds: float


def load() -> dict[str, Any]:
    """bench/validation_rows.json, its rows as :class:`Row`."""
    data = json.loads(ROWS_FILE.read_text())
    data["rows"] = [Row(**{name: row[name] for name in ROW_FIELDS}) for row in data["rows"]]
    return data


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """A model directory holding ``config`` as its config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory


def estimate(config_dir: Path, row: Row, engine: str) -> Estimate:
    """nncost's output tokens/s and time to first token for ``row`` with ``engine``."""
    import nncost

    start = time.perf_counter()
    generation = nncost.cost(str(config_dir), **row.options(engine)).generation
    wall = time.perf_counter() - start
    assert generation is not None and generation.time_to_first_token_seconds is not None
    ttft = generation.time_to_first_token_seconds
    # the decode phase's time with the engine's overhead and the GPUs' communication in it
    decode = generation.decode_seconds or 0.0
    request_seconds = ttft + decode
    return Estimate(row.batch * row.new_tokens / request_seconds, ttft * 1e3, wall)


def run(data: dict[str, Any], say: Any = print) -> list[tuple[Row, dict[str, Estimate]]]:
    """Every row costed with every engine, the configs in a temporary directory."""
    results = []
    with tempfile.TemporaryDirectory(prefix="nncost-validation-") as tmp:
        for row in data["rows"]:
            config_dir = write_config(Path(tmp) / row.model, data["models"][row.model]["config"])
            estimates = {engine: estimate(config_dir, row, engine) for engine in ENGINES}
            results.append((row, estimates))
            say(f"{row.model:16} B={row.batch:<3} P={row.prompt:<5} M={row.new_tokens:<5} "
                + "  ".join(f"{e}: {estimates[e].output_tokens_per_second:9.1f} tok/s "
                            f"({estimates[e].output_tokens_per_second / row.output_tokens_per_second:.2f}x, "
                            f"{estimates[e].wall_seconds:.1f} s)" for e in ENGINES)
                + f"  measured {row.output_tokens_per_second}")
    return results


def errors(results: list[tuple[Row, dict[str, Estimate]]], engine: str) -> list[float]:
    """|nncost / measured − 1| of the output tokens/s, row by row."""
    return [abs(est[engine].output_tokens_per_second / row.output_tokens_per_second - 1) for row, est in results]


def ttft_ratios(results: list[tuple[Row, dict[str, Estimate]]], engine: str) -> list[float]:
    """nncost / measured of the time to first token, where one is published."""
    return [est[engine].ttft_ms / row.ttft_ms for row, est in results if row.ttft_ms]


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(results: list[tuple[Row, dict[str, Estimate]]]) -> str:
    """The Markdown table of the rows: source, command, measured, both engines' figures and ratios."""
    lines = ["| # | source | model, GPUs | P / M, batch | measured tok/s | `vllm` tok/s (ratio) | "
             "`hf-generate` tok/s (ratio) | TTFT measured / `vllm` |",
             "|---|---|---|---|---|---|---|---|"]
    for index, (row, est) in enumerate(results, 1):
        ttft = f"{row.ttft_ms:.0f} / {est['vllm'].ttft_ms:.0f} ms" if row.ttft_ms else "—"
        cells = [str(index), f"`{row.source}`", f"{row.model}, {row.tensor_parallel} × {row.hardware}",
                 f"{row.prompt} / {row.new_tokens}, {row.batch}"
                 + (" concurrent" if row.batch_meaning != "batch" else ""),
                 _number(row.output_tokens_per_second)]
        for engine in ENGINES:
            value = est[engine].output_tokens_per_second
            cells.append(f"{_number(value)} ({value / row.output_tokens_per_second:.2f}×)")
        cells.append(ttft)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results: list[tuple[Row, dict[str, Estimate]]]) -> str:
    """The median and maximum |error| of each engine, and the TTFT ratios."""
    lines = ["| engine | median \\|error\\| | maximum \\|error\\| | rows within 15% | TTFT ratio, median (range) |",
             "|---|---|---|---|---|"]
    for engine in ENGINES:
        errs = errors(results, engine)
        ttft = ttft_ratios(results, engine)
        lines.append(f"| `{engine}` | {statistics.median(errs):.0%} | {max(errs):.0%} | "
                     f"{sum(e <= 0.15 for e in errs)} of {len(errs)} | "
                     f"{statistics.median(ttft):.2f}× ({min(ttft):.2f}–{max(ttft):.2f}×) |")
    return "\n".join(lines)


def commands(results: list[tuple[Row, dict[str, Estimate]]]) -> str:
    """Each row's nncost command (vllm; hf-generate is the same with --engine hf-generate)."""
    return "\n".join(f"{index:2}. {row.command('vllm')}" for index, (row, _) in enumerate(results, 1))


def document(data: dict[str, Any], results: list[tuple[Row, dict[str, Estimate]]], wall: float) -> str:
    """docs/validation.md."""
    sources = "\n".join(f"- `{key}`: {text}" for key, text in data["sources"].items())
    models = "\n".join(f"- `{name}`: {model['params'] / 1e9:.2f} B parameters; {model['params_source']}."
                       for name, model in data["models"].items())
    template = (ROOT / "bench" / "validation_doc.md").read_text()
    return template.format(table=table(results), summary=summary(results), commands=commands(results),
                           sources=sources, models=models, wall=f"{wall:.0f}", rows=len(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/validation.md")
    args = parser.parse_args(argv)
    data = load()
    start = time.perf_counter()
    results = run(data)
    wall = time.perf_counter() - start
    print(table(results))
    print(summary(results))
    print(f"wall time: {wall:.0f} s")
    if args.write_docs:
        DOC.write_text(document(data, results, wall))
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
