#!/usr/bin/env bash
# The PaSE benchmark (issue 6) on a CUDA machine, with bf16 autocast: the same measurements as the
# CPU run (epoch times, Lightning runs, Shapley + SGM cost, inference and memory incl. CUDA peaks,
# MMSA load, profile with host-sync counts), written to benchmarks/cuda/BENCHMARKS[-N].md and
# benchmarks/cuda/results[-N].json (the next free N: earlier runs are kept). It gives the GPU figure of
# the MulT comparison (MulT: 12.9 s / epoch on an H100).
#
#   bash benchmarks/gpu.sh            # full run (about 10 min on one H100)
#   bash benchmarks/gpu.sh --quick    # subsets, a few minutes
#   PYTHON=/path/to/venv/bin/python bash benchmarks/gpu.sh
#
# Exits 2, before doing anything, when no CUDA device is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False;" \
         "CUDA build: $("$PY" -c 'import torch; print(torch.version.cuda)' 2>/dev/null || echo '?'))." \
         "Run it on a GPU machine with a CUDA build of torch, or run 'python benchmarks/run.py' on CPU." >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
mkdir -p benchmarks/cuda
# a new pair of files per run: the earlier runs' files (cited in benchmarks/findings.md) are kept
n=""; i=1
while [ -e "benchmarks/cuda/results${n}.json" ] || [ -e "benchmarks/cuda/BENCHMARKS${n}.md" ]; do
    i=$((i + 1)); n="-$i"
done
echo "benchmarks/gpu.sh: writing benchmarks/cuda/BENCHMARKS${n}.md and benchmarks/cuda/results${n}.json" >&2
"$PY" benchmarks/run.py --device cuda --bf16 --out "benchmarks/cuda/BENCHMARKS${n}.md" \
    --json "benchmarks/cuda/results${n}.json" "$@"
