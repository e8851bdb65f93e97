"""Wall time and peak RSS of profiling mixture-of-experts default configs on meta, in float32.

    PYTHONPATH=src python bench/moe_meta.py

Each case is one fresh ``python -m nncost ...`` process (imports and the model's construction on
meta included), timed from outside; its peak resident set is the child's ``ru_maxrss`` from
``resource.getrusage(RUSAGE_CHILDREN)``, read after each run (one child at a time, so the high
mark is that run's once it exceeds the earlier ones: the cases go from small to large).  The
execution and the two parameter counts are read back from the JSON document.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

CASES = (
    ("hf:qwen3_moe", ["hf:qwen3_moe"]),
    ("hf:mixtral", ["hf:mixtral"]),
    ("hf:mixtral --seq 2048", ["hf:mixtral", "--seq", "2048"]),
    ("hf:deepseek_v3", ["hf:deepseek_v3"]),
)


def main() -> None:
    print("| command | wall s | peak RSS MiB | execution | params | active params |")
    print("|---|---|---|---|---|---|")
    for label, argv in CASES:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nncost", *argv, "--format", "json"], capture_output=True,
                              text=True, check=True)
        wall = time.perf_counter() - start
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        data = json.loads(done.stdout)
        totals = data["totals"]
        print(f"| `nncost {label}` | {wall:.1f} | {rss_mib:.0f} | {data['execution']} | {totals['params']:,} |"
              f" {totals['active_params']:,} |")


if __name__ == "__main__":
    main()
