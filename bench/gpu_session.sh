#!/usr/bin/env bash
# Every CUDA check in one call, for a session that is lent a GPU (7 minutes at most):
#
#     bash bench/gpu_session.sh          # on the device machine, from the repository root
#
# Each step has its own time limit, so that one slow step cannot take the others' time; each appends
# its output to a file in $OUT (the device tool's folder that comes back; else /tmp/nncost-gpu), at
# most 8 files, as the tool brings back.  Python's output is unbuffered, so a step stopped at its
# limit still leaves what it printed.
#   1. summary.txt          the GPU, driver, CUDA, cuDNN, torch and transformers versions, then each
#                           step's exit status, time and last line
#   2. memory_cuda.txt      bench/cuda_learn.py: the workspaces, attention and LSTM buffers by op (item 1),
#   3.                      then bench/memory_cuda.py: simulated step peak against max_memory_allocated/reserved
#   4. roofline_cuda.txt    bench/roofline_cuda.py: roofline against kernel times (item 2), table printed,
#      roofline_cuda.json   and every row and leaf, for the operator-by-operator analysis
#   5. generation_cuda.txt  bench/generation_cuda.py: TTFT and tokens/s against the real generate (item 3)
#   6. cuda_check.txt       bench/cuda_check.py: core report on CUDA, MACs equal meta's, model untouched
#   7. engine_cuda.txt      bench/engine_cuda.py: the launch constants of src/nncost/hardware/engines.py
#      engine_cuda.json     measured, and a paged decode step against --engine vllm; the constants as JSON
set -u
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/nncost-gpu}"
mkdir -p "$out"
rm -f "$out"/{summary,memory_cuda,roofline_cuda,generation_cuda,cuda_check,engine_cuda}.txt "$out"/{roofline,engine}_cuda.json
export PYTHONPATH=src PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    python3 -c "import torch, transformers; print('torch', torch.__version__, '| CUDA', torch.version.cuda,
'| cuDNN', torch.backends.cudnn.version(), '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
} > "$out/summary.txt" 2>&1
cat "$out/summary.txt"
run() {  # run LIMIT FILE COMMAND...: COMMAND's output appended to $out/FILE.txt
    local limit=$1 file=$2
    shift 2
    local start=$SECONDS
    echo "== $* (limit ${limit}s)" >> "$out/$file.txt"
    timeout "$limit" "$@" >> "$out/$file.txt" 2>&1
    local status=$?
    echo "$2: exit $status in $((SECONDS - start)) s (limit ${limit}s); $(tail -1 "$out/$file.txt")" | tee -a "$out/summary.txt"
}
run 90 memory_cuda python3 bench/cuda_learn.py --top 10
run 60 memory_cuda python3 bench/memory_cuda.py
run 110 roofline_cuda python3 bench/roofline_cuda.py --json "$out/roofline_cuda.json"
run 70 generation_cuda python3 bench/generation_cuda.py
run 45 cuda_check python3 bench/cuda_check.py
run 45 engine_cuda python3 bench/engine_cuda.py --json "$out/engine_cuda.json"
