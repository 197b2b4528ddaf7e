#!/usr/bin/env bash
# The PaSE benchmark (issue 6) on a CUDA machine, with bf16 autocast: the same measurements as the
# CPU run (epoch times, Lightning runs, Shapley + SGM cost, inference and memory incl. CUDA peaks,
# MMSA load, profile with host-sync counts), written to benchmarks/cuda/BENCHMARKS[-N].md and
# benchmarks/cuda/results[-N].json (the next free N: earlier runs are kept). It gives the GPU figure of
# the MulT comparison (MulT: 12.9 s / epoch on an H100).
#
#   bash benchmarks/gpu.sh            # full run: 20 to 30 min at worst (below), more than one 600 s device call
#   bash benchmarks/gpu.sh --quick    # subsets, no compiled variants, a few minutes
#   PYTHON=/path/to/venv/bin/python bash benchmarks/gpu.sh
#   bash benchmarks/gpu.sh --out DIR/B.md --json DIR/r.json   # elsewhere: the defaults are not passed then
#
# The full run's length: run 3's measurements up to graphs/real_mosi took 6.5 min on an H200
# (benchmarks/cuda/README.md); the inference rows, the real-MOSI and MOSEI-shaped memory rows (a ~4 GB
# bundle each) and the MMSA write and load of a ~3.8 GB file add several minutes; the compiled CUDA-only
# keys are capped (run.py's timeout_s): graphs/real_mosi 180 s, graphs/mosi_shaped 240 s,
# compile/mosi_shaped 420 s, 14 min at worst. On a lent machine split it with --only (the README's
# recipe: --only graphs, 7 min at worst, and --only compile, 7 min, are one 600 s device call each); the
# report (--out) and the raw results (--json) are rewritten after every measurement, so a run cut short
# leaves both, with what finished.
#
# Exits 2, before doing anything, when no CUDA device is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! command -v "$PY" >/dev/null; then  # else the CUDA check below blamed torch for a missing interpreter
    echo "benchmarks/gpu.sh: no python interpreter '$PY' (PYTHON=$PY); set PYTHON to the python that has torch" >&2
    exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False;" \
         "CUDA build: $("$PY" -c 'import torch; print(torch.version.cuda)' 2>/dev/null || echo '?'))." \
         "Run it on a GPU machine with a CUDA build of torch, or run 'python benchmarks/run.py' on CPU." >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
# an --out / --json of the caller's (the README's recipe) is where run.py writes: the defaults below are
# passed, and announced, only for what the caller left out (this said the default names whatever was given,
# and the recorded command carried both pairs)
out="" json="" prev=""
for arg in "$@"; do
    case "$prev" in --out) out="$arg" ;; --json) json="$arg" ;; esac
    case "$arg" in --out=*) out="${arg#--out=}" ;; --json=*) json="${arg#--json=}" ;; esac
    prev="$arg"
done
defaults=()
if [ -z "$out" ] || [ -z "$json" ]; then
    mkdir -p benchmarks/cuda
    # a new pair of files per run: the earlier runs' files (cited in benchmarks/findings.md) are kept
    n=""; i=1
    while [ -e "benchmarks/cuda/results${n}.json" ] || [ -e "benchmarks/cuda/BENCHMARKS${n}.md" ]; do
        i=$((i + 1)); n="-$i"
    done
    [ -n "$out" ] || { out="benchmarks/cuda/BENCHMARKS${n}.md"; defaults+=(--out "$out"); }
    [ -n "$json" ] || { json="benchmarks/cuda/results${n}.json"; defaults+=(--json "$json"); }
fi
echo "benchmarks/gpu.sh: writing $out and $json" >&2
"$PY" benchmarks/run.py --device cuda --bf16 ${defaults[@]+"${defaults[@]}"} "$@"
