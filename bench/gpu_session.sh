#!/usr/bin/env bash
# Every CUDA check of issue 14 in one call, for a session that is lent a GPU (about 6½ minutes at most):
#
#     bash bench/gpu_session.sh          # on the device machine, from the repository root
#
# Each step has its own time limit, so that one slow step cannot take the others' time; each writes
# its output to a file of its own in $OUT (the device tool's folder that comes back; else
# /tmp/nncost-gpu), at most 8 files, as the tool brings back.  Python's output is unbuffered, so a
# step stopped at its limit still leaves what it printed.
#   1. device.txt           the GPU, driver, CUDA, cuDNN, torch and transformers versions
#   2. cuda_learn.txt       bench/cuda_learn.py: the workspaces, attention and LSTM buffers by op (item 1)
#   3. memory_cuda.txt      bench/memory_cuda.py: simulated step peak against max_memory_allocated/reserved
#   4. roofline_cuda.txt    bench/roofline_cuda.py: roofline against kernel times (item 2), table printed,
#      roofline_cuda.json   and every row and leaf, for the operator-by-operator analysis
#   5. generation_cuda.txt  bench/generation_cuda.py: TTFT and tokens/s against the real generate (item 3)
#   6. cuda_check.txt       bench/cuda_check.py: core report on CUDA, MACs equal meta's, model untouched
#   7. summary.txt          each step's exit status and last line
set -u
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/nncost-gpu}"
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    python3 -c "import torch, transformers; print('torch', torch.__version__, '| CUDA', torch.version.cuda,
'| cuDNN', torch.backends.cudnn.version(), '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"
run() {
    local limit=$1 name=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local status=$?
    echo "$name: exit $status in $((SECONDS - start)) s (limit ${limit}s); $(tail -1 "$out/$name.txt")" | tee -a "$out/summary.txt"
}
run 90 cuda_learn python3 bench/cuda_learn.py --top 10
run 60 memory_cuda python3 bench/memory_cuda.py
run 120 roofline_cuda python3 bench/roofline_cuda.py --json "$out/roofline_cuda.json"
run 75 generation_cuda python3 bench/generation_cuda.py
run 45 cuda_check python3 bench/cuda_check.py
