#!/usr/bin/env bash
# Issue 5's GPU part in one run (each step capped, 9 minutes in all; a few on one H100/H200): the CUDA tests,
# then the circuit (N up to 26), peak-memory (CUDA max allocated) and training-step
# (with the host-synchronisation check) benchmarks on the GPU. Everything printed is also
# written to $OUT/gpu_suite.txt (./gpu_out/ when OUT is unset), with the results as JSON and one PNG
# of them (benchmarks/plot.py, when matplotlib is there), to be copied into RESULTS.md.
#
#     bash benchmarks/gpu_suite.sh                                  # on the GPU machine (timeout_s 600)
#     DEVICE=cpu NS="10 12" MEM_NS="12" bash benchmarks/gpu_suite.sh  # a dry run of the flow
#
# Needs only python3 with torch (and numpy, safetensors, pytest): qtrain runs from src/.
set -o pipefail
out=${OUT:-gpu_out}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 1  # absolute: the suite runs from the repository root
py=${PYTHON:-python3}
case $py in */*) py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py") ;; esac
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
ns=${NS:-16 20 22 24 26}
mem_ns=${MEM_NS:-22 24 26}
status=0
run() {  # a step that fails or runs out of time is reported and the suite goes on
    echo "== $*"
    timeout "$limit" "$@" || { echo "== exit $? (limit ${limit}s): $*"; status=1; }
}
main() {
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
    if [ "$device" = cuda ]; then
        limit=90 run $py -m pytest -q -p no:cacheprovider tests/test_cuda.py
    fi
    limit=150 run $py benchmarks/bench_circuits.py --device "$device" --n $ns --depth 10 \
        --ansatz ry-cnot-ring u3-cu3-ring --pennylane-max 0 --autograd-max 0 --repeats 5 --json "$out/circuits.json"
    limit=180 run $py benchmarks/bench_memory.py --device "$device" --n $mem_ns --ansatz ry-cnot-ring u3-cu3-ring \
        --what adjoint generator --json "$out/memory.json"
    limit=120 run $py benchmarks/bench_step.py --device "$device" --batch 64 128 --repeats 21 --interleave 11 --json "$out/step.json"
    [ -f "$out/circuits.json" ] && $py benchmarks/plot.py "$out"/*.json --out "$out/gpu_suite.png"
    echo "== suite exit $status"
    return "$status"
}
main 2>&1 | tee "$out/gpu_suite.txt"
exit "${PIPESTATUS[0]}"
