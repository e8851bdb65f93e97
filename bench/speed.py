"""The seed's core path against the peers people use for it: resnet50 at batch 1 and at batch 64.

    python bench/speed.py                  # nncost, thop, fvcore, torchinfo, FlopCounterMode
    python bench/speed.py --write-docs     # and its section of docs/benchmarks.md
    python bench/speed.py --json out.json  # any option of bench/peers.py may follow

Each (tool, case) runs in its own process, alternating, through bench/peers.py, which prints the
table, the speed ratios (peer time / nncost time) and the verdict against the goals: nncost at
least 3 times the fastest peer at batch 1 and 50 times at batch 64, on a quiet machine (the
table says when other processes loaded it).  Install the peers by hand:
``pip install thop fvcore torchinfo``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import main

CASES = "resnet50@224 b1,resnet50@224 b64"
TOOLS = "nncost,thop,fvcore,torchinfo,FlopCounterMode"
SECTION = "## Speed of the core path"

if __name__ == "__main__":
    sys.exit(main(["--cases", CASES, "--tools", TOOLS, "--section", SECTION, *sys.argv[1:]]))
