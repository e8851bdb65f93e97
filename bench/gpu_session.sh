#!/usr/bin/env bash
# Every CUDA check of the open issues in one call, for a session that is lent a GPU (well under 10 minutes):
#
#     bash bench/gpu_session.sh          # on the device machine, from the repository root
#
# Each step has its own time limit, so that one slow step cannot take the others' time; the outputs go
# to $OUT (the device tool's folder that comes back), else to /tmp/nncost-gpu.
#   1. bench/cuda_check.py     core report on CUDA: MACs equal meta's, the model left untouched
#   2. bench/memory_cuda.py    issue 3: simulated step peak against max_memory_allocated/reserved
#   3. bench/cuda_learn.py     issue 3: the workspaces, attention and LSTM buffers the simulator lacks
#   4. bench/roofline_cuda.py  issue 5: roofline against CUDA-event latency (--write-docs: docs/roofline_cuda.md)
set -u
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/nncost-gpu}"
mkdir -p "$out"
export PYTHONPATH=src
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/device.txt"
run() {
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    echo "   exit $? ; $(tail -1 "$out/$name.txt")"
}
run 90 cuda_check python3 bench/cuda_check.py
run 120 memory_cuda python3 bench/memory_cuda.py
run 150 cuda_learn python3 bench/cuda_learn.py --top 10
run 180 roofline_cuda python3 bench/roofline_cuda.py --write-docs
cp docs/roofline_cuda.md "$out/" 2>/dev/null || true
