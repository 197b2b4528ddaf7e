"""What a metadata read of a large checkpoint costs, read whole against memory-mapped.

    python benchmarks/ckpt_load.py [--mib 400] [--repeats 3]

Writes a checkpoint of ``--mib`` MiB of float32 weights (plus ``epoch`` and ``pase_state``) to a
temporary folder, then, each in a fresh process so that peaks are their own, reads ``epoch`` and
``pase_state`` with ``safe_load_checkpoint(path)`` and with ``safe_load_checkpoint(path, mmap=True)``
(what ``pase compare`` / ``pase crossval``'s checks of an interrupted run and a resume's look at
``best.ckpt`` use), interleaved; prints the median milliseconds, the resident memory (VmRSS) the read added
while the state is held, and the time ratio. Linux (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys, time
sys.path.insert(0, sys.argv[3])
from pase.training.checkpoint import safe_load_checkpoint
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
base = rss()
t0 = time.perf_counter()
state = safe_load_checkpoint(sys.argv[1], mmap=sys.argv[2] == "mmap")
ms = (time.perf_counter() - t0) * 1e3
assert state["epoch"] == 3 and state["pase_state"] == {"data": {"n": 7}}
print(ms, rss() - base)
"""

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=400, help="weights in the checkpoint, MiB (default 400)")
    ap.add_argument("--repeats", type=int, default=3, help="reads of each kind (default 3)")
    a = ap.parse_args(argv)
    if a.mib < 1 or a.repeats < 1:
        ap.error("--mib and --repeats must be positive")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.ckpt"
        n = a.mib * 2**20 // 4
        torch.save({"state_dict": {"w": torch.rand(n)}, "epoch": 3, "pase_state": {"data": {"n": 7}}}, path)
        got = {"read": [], "mmap": []}
        for _ in range(a.repeats):
            for kind in got:
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), kind, str(ROOT / "src")],
                                     capture_output=True, text=True, check=True).stdout.split()
                got[kind].append((float(out[0]), float(out[1])))
    med = {k: (statistics.median(v[0] for v in r), statistics.median(v[1] for v in r)) for k, r in got.items()}
    print(f"checkpoint {a.mib} MiB, {a.repeats} reads each, torch {torch.__version__}")
    for k, (ms, mib) in med.items():
        print(f"  {k:5s} {ms:8.1f} ms  RSS +{mib:.0f} MiB")
    print(f"  mmap / read: time {med['mmap'][0] / med['read'][0]:.3f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
