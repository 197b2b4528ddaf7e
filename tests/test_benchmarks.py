"""The benchmark entry point still runs: its quick Shapley sweep, end to end in a subprocess.

Speed is not asserted (timings belong in benchmarks/, not in timed tests); what is asserted is
what the sweep counts: 2^M coalitions and one encoder call per modality per batch for M = 2 to 8
over whole PaSE phase-2 steps, and a rendered report that names the targets.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_shapley_sweep_counts_one_encoder_call_per_batch(tmp_path):
    out, raw = tmp_path / "B.md", tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--threads", "1",
                           "--only", "shapley", "--out", str(out), "--json", str(raw)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = json.loads(raw.read_text())["shapley"]["sweep"]
    assert sorted(map(int, sweep)) == list(range(2, 9))
    for m, row in sweep.items():
        assert row["coalitions"] == 2 ** int(m)
        assert len(row["encoder_calls_per_batch"]) == int(m)
        assert set(row["encoder_calls_per_batch"].values()) == {1.0}, (m, row["encoder_calls_per_batch"])
        assert row["head_calls_per_batch"] == 1.0
        ratio = row["ratio_shapley_sgm_plain"]["median"]
        assert math.isfinite(ratio) and ratio > 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| encoders run once per batch up to M = 8")]
    assert len(rows) == 1 and rows[0].endswith("| max 1 call per batch | **met** |"), rows
