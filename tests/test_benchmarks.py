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

import numpy as np
import pytest

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


def _script(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_op_count_counts_every_variants_calls_by_stage_and_the_shapley_estimate(capsys):
    """benchmarks/op_count.py: PaSE dispatches more aten calls per step than late fusion, which
    dispatches more than the plain step (its Shapley tracking); the stages (forward and losses,
    backward, SGM, optimizer) add up to the step less zero_grad's few calls, only PaSE has SGM calls,
    and Adam's three implementations are counted. In process (the script's main, benchmarks/ on sys.path)."""
    import importlib
    import re

    import torch

    threads = torch.get_num_threads()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        assert importlib.import_module("op_count").main(["--dataset", "sweep3", "--top", "3"]) == 0
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    n = {v: int(re.search(rf"^  {v} +(\d+) ", out, re.M).group(1)) for v in ("plain", "late_fusion", "pase")}
    assert n["plain"] < n["late_fusion"] < n["pase"], n
    st = {v: [int(x) for x in re.search(rf"^  {v} +(\d+) / +(\d+) / +(\d+) / +(\d+)$", out, re.M).groups()]
          for v in n}
    for v, per in st.items():
        assert 0 <= n[v] - sum(per) <= 5, (v, per, n[v])  # zero_grad(set_to_none=True) dispatches next to nothing
    assert st["plain"][2] == st["late_fusion"][2] == 0 < st["pase"][2]
    assert st["plain"][1:] == st["late_fusion"][1:]  # late fusion's tracking is forward-only, without grad
    impl = dict((k, int(v)) for k, v in re.findall(r"(for-loop|foreach|fused) (\d+)", out))
    assert impl["foreach"] == st["late_fusion"][3] and impl["fused"] < impl["foreach"] < impl["for-loop"], impl  # the training's Adam
    shap = int(re.search(r"one exact Shapley estimate \+ SGM: (\d+)", out).group(1))
    assert 0 < shap < n["plain"]
    assert "backward/optimizer" in out


def test_an_only_prefix_that_matches_nothing_is_refused_and_nothing_is_written(tmp_path):
    """It ran nothing, exited 0 and wrote an all-"not run" BENCHMARKS.md over the committed one (review)."""
    before = (ROOT / "BENCHMARKS.md").read_bytes()
    proc = _script(ROOT / "benchmarks" / "run.py", "--quick", "--only", "epoch_typo", "--json", tmp_path / "r.json")
    assert proc.returncode == 2 and "--only 'epoch_typo' matches no measurement; valid keys" in proc.stderr
    assert (ROOT / "BENCHMARKS.md").read_bytes() == before and not (tmp_path / "r.json").exists()


def test_variants_and_tables_pair_by_seed_and_refuse_a_mixed_folder(tmp_path):
    """variants.py trains into runs/<variant>/seed<s>/ and refuses to reuse a folder of another
    configuration (its name leaves out the trailing KEY=VALUE); results_tables.py pairs by seed
    and names a missing reference instead of printing an empty table."""
    tiny = ["data.options.sizes=[192,64,64]", "train.max_epochs=1", "model.d_model=16", "model.hidden=32",
            "model.head_hidden=16"]
    out = tmp_path / "v"
    proc = _script(ROOT / "benchmarks" / "variants.py", "-", out, "late_fusion,pase:pase.sgm=false", "1111,1112", *tiny)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _script(ROOT / "benchmarks" / "variants.py", "-", out, "late_fusion", "1111", *tiny, "train.lr=0.5")
    assert proc.returncode != 0 and "holds runs of other shared settings (train.lr: 0.001 there, 0.5 now" in proc.stderr
    # a new variant with other shared settings would land in a new folder: refused by the record too
    proc = _script(ROOT / "benchmarks" / "variants.py", "-", out, "agm", "1111", *tiny, "train.lr=0.5")
    assert proc.returncode != 0 and "holds runs of other shared settings" in proc.stderr
    assert not (out / "runs" / "agm").exists()
    # a typo in a later variant stops the script before the first one trains
    proc = _script(ROOT / "benchmarks" / "variants.py", "-", out, "agm,pase:pase.sgmm=false", "1111", *tiny)
    assert proc.returncode != 0 and "variant 'pase:pase.sgmm=false': unknown config key 'pase.sgmm'" in proc.stderr
    assert not (out / "runs" / "agm").exists()
    proc = _script(ROOT / "benchmarks" / "variants.py", "-", out, "agm,late_fusoin", "1111", *tiny)
    assert proc.returncode != 0 and "variant 'late_fusoin': unknown method 'late_fusoin'; did you mean 'late_fusion'" \
        in proc.stderr and "(nothing was trained)" in proc.stderr, proc.stderr
    assert not (out / "runs" / "agm").exists()
    # a failed run is recorded in its folder, the script exits 1, and the other runs are kept
    proc = _script(ROOT / "benchmarks" / "variants.py", "-", out, "late_fusion:train.monitor=nope", "1111", *tiny)
    failed = out / "runs" / "late_fusion_train.monitor-nope" / "seed1111" / "FAILED.txt"
    assert proc.returncode == 1 and failed.is_file() and "train.monitor='nope'" in failed.read_text(), proc.stderr
    proc = _script(ROOT / "benchmarks" / "results_tables.py", "--ablation", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"left out {failed.parent} (failed: FAILED.txt)" in proc.stderr, proc.stderr
    runs = {v: {s: json.loads((out / "runs" / v / f"seed{s}" / "metrics.json").read_text())["test"]
                for s in (1111, 1112)} for v in ("late_fusion", "pase_pase.sgm-false")}
    d = [runs["pase_pase.sgm-false"][s]["MAE"] - runs["late_fusion"][s]["MAE"] for s in (1111, 1112)]
    mean, se = sum(d) / 2, abs(d[0] - d[1]) / 2  # the SE of a 2-sample mean: |d1 - d2| / 2
    row = next(r for r in proc.stdout.splitlines() if r.startswith("| pase_pase.sgm-false | 2 | MAE |"))
    assert f"{mean:+.4f} ± {se:.4f}" in row, row
    proc = _script(ROOT / "benchmarks" / "results_tables.py", "--ablation", out, "--ref", "agm")
    assert proc.returncode != 0 and "no runs of the reference 'agm'" in proc.stderr
    proc = _script(ROOT / "benchmarks" / "results_tables.py", "--compare", out, "--ref", "pase:pase.sgm=false")
    assert proc.returncode == 0 and "Paired difference against pase_pase.sgm-false" in proc.stdout, proc.stderr


def test_results_tables_read_finished_runs_of_any_modalities(tmp_path, capsys):
    """The shares tables took every log.csv, a failed or interrupted run's included, while the
    metric table dropped it silently; and they assumed text, audio and vision."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import results_tables as rt
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    header = "epoch,diag/phase,diag/share_audio,diag/share_text\n"
    for seed, log, done in ((1111, "0,1.0,0.2,0.8\n1,2.0,0.3,0.7\n2,2.0,0.4,0.6\n", True),
                            (1112, "0,1.0,0.1,0.9\n", False)):
        run = tmp_path / "runs" / "pase" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "log.csv").write_text(header + log)
        if done:
            (run / "metrics.json").write_text(json.dumps({"dataset": "fake", "protocol": "mosi", "monitor": "MAE",
                                                          "test": {"MAE": 1.0}}))
            (run / "diagnostics.json").write_text(json.dumps({
                "method": "pase", "seed": seed, "modalities": ["text", "audio"],
                "shapley": {"neg_loss": {"shares": {"text": 0.75, "audio": 0.25}}}}))
        else:
            (run / "FAILED.txt").write_text("Traceback ...\n")
    ref = tmp_path / "alone" / "text" / "seed1111"  # a unimodal reference (--alone): not a fused run
    ref.mkdir(parents=True)
    (ref / "log.csv").write_text("epoch,diag/share_text\n0,1.0\n")
    (ref / "metrics.json").write_text(json.dumps({"test": {"MAE": 1.2}}))
    assert rt.shares_table(str(tmp_path)) == rt.shares_table(str(tmp_path / "runs"))
    table = rt.shares_table(str(tmp_path / "runs")).splitlines()
    assert table[0].startswith("| method | seed | switch epoch | text share (epoch before switch) | audio share")
    assert table[2:] == ["| pase | seed1111 | 1 | 0.800 | 0.200 | 0.600 | 0.400 |"]
    assert rt.test_shares_table(str(tmp_path)).splitlines()[2:] == ["| pase | 1111 | 0.750 | 0.250 |"]
    assert list(rt._runs(str(tmp_path))["pase"]) == [1111]
    err = capsys.readouterr().err
    assert f"left out {tmp_path / 'runs' / 'pase' / 'seed1112'} (failed: FAILED.txt)" in err, err


def test_results_tables_compare_takes_the_runs_pase_report_takes(tmp_path, monkeypatch, capsys):
    """--compare globbed every runs/*/seed*/metrics.json: a seed trained longer with pase train --resume
    (another configuration than config.yaml) and a seed outside compare.json entered the docs' table
    though summary.md left them out (a review). Its rows are now summary.md's, and each run left out is
    named on stderr."""
    import statistics

    from pase.config import Config, apply_overrides, save_config
    from pase.evaluation.compare import summarize

    out = tmp_path / "c"
    out.mkdir()
    base = apply_overrides(Config(), ["train.max_epochs=3"])
    save_config(base, out / "config.yaml")
    (out / "compare.json").write_text(json.dumps({"methods": ["late_fusion", "pase"], "seeds": [1, 2]}))
    keys = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"]
    for i, (method, seed, epochs) in enumerate([("late_fusion", 1, 3), ("late_fusion", 2, 3), ("late_fusion", 3, 3),
                                                ("pase", 1, 3), ("pase", 2, 6)]):  # seed 3: outside compare.json
        run = out / "runs" / method / f"seed{seed}"
        run.mkdir(parents=True)
        save_config(apply_overrides(base, [f"method={method}", f"train.seed={seed}",
                                           f"train.max_epochs={epochs}"]), run / "config.yaml")
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "fake", "protocol": "mosi", "monitor": "MAE", "best_epoch": 0, "code_sha256": "same",
            "test": {k: 0.5 + 0.1 * i + 0.01 * j for j, k in enumerate(keys)}}))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import results_tables as rt
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["results_tables.py", "--compare", str(out)])
    rt.main()
    printed = capsys.readouterr()
    stats = summarize(out)["stats"]  # what summary.md and report.md print
    main = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]
    for method, runs in (("late_fusion", [0, 1]), ("pase", [3])):
        assert all(stats[method][k]["n"] == len(runs) for k in main)
        cells = [f"{stats[method][k]['mean']:.4f}" + (f" ± {stats[method][k]['sd']:.4f}" if len(runs) > 1 else "")
                 for k in main]
        assert cells[0] == f"{statistics.mean(0.5 + 0.1 * i for i in runs):.4f}" + (" ± 0.0707" if len(runs) > 1 else "")
        assert f"| {method} | {len(runs)} | " + " | ".join(cells) + " |" in printed.out.splitlines(), printed.out
    said = [line for line in printed.err.splitlines() if line.startswith("results_tables.py: left out ")]
    assert sorted(said) == [
        f"results_tables.py: left out {out / 'runs' / 'late_fusion' / 'seed3'} (not one of the methods and seeds "
        "of compare.json; pase report leaves it out too)",
        f"results_tables.py: left out {out / 'runs' / 'pase' / 'seed2'} (other configuration: trained with another "
        f"configuration than the comparison's {out / 'config.yaml'} (train.max_epochs: 6 in this run, 3 in the "
        "comparison: trained longer with pase train --resume, or edited?); left out of every table: move the run "
        "folder out of runs/ and rerun pase compare to retrain it)"], said


def test_results_tables_leave_out_a_nan_metric_and_say_so():
    """A seed whose Corr is NaN (a constant prediction; metrics.json holds NaN) crashed the table
    (statistics.stdev on NaN); it is left out, with n, as pase report does (review)."""
    import statistics

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import results_tables as rt
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    keys = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]
    lf = {s: {"test": {k: 0.5 + 0.01 * i for k in keys}} for i, s in enumerate((1, 2, 3))}
    pmr = {s: {"test": {**{k: 0.6 + 0.02 * i for k in keys}, "Corr": (float("nan") if s == 2 else 0.7 + 0.01 * s)}}
           for i, s in enumerate((1, 2, 3))}
    table = rt.method_table({"late_fusion": lf, "pmr": pmr})
    row = next(line for line in table.splitlines() if line.startswith("| pmr | 3 |"))
    assert row.endswith(f"| {statistics.mean([0.71, 0.73]):.4f} ± {statistics.stdev([0.71, 0.73]):.4f} (n=2) |")
    d = [0.71 - 0.5, 0.73 - 0.52]
    se = statistics.stdev(d) / math.sqrt(2)
    assert f"| pmr | 2 | Corr | {statistics.mean(d):+.4f} ± {se:.4f} |" in table


def test_results_tables_ci_is_scipys_paired_t_interval():
    """--ci prints the paired difference's 95% t-interval (docs/results.md section 16), from the
    full-precision values (that table was first computed from 4-digit rounded ones)."""
    from scipy import stats

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import results_tables as rt
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    keys = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]
    rng = np.random.default_rng(0)
    lf = {s: {"test": {k: float(rng.uniform(0.5, 1)) for k in keys}} for s in range(5)}
    other = {s: {"test": {k: v + float(rng.normal(0.01, 0.003)) for k, v in lf[s]["test"].items()}} for s in range(5)}
    table = rt.method_table({"late_fusion": lf, "pmr": other}, ci=True)
    d = [other[s]["test"]["MAE"] - lf[s]["test"]["MAE"] for s in range(5)]
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(d), scale=stats.sem(d))
    assert f"| pmr | 5 | MAE | {np.mean(d):+.4f} | [{lo:+.4f}, {hi:+.4f}] |" in table


def test_results_tables_ci_applies_to_compare_and_competition(tmp_path, monkeypatch, capsys):
    """--ci was passed to --ablation's table only: --compare and --competition printed mean ± SE and
    mean / SE under --ci, silently (a review). Both folder layouts, through the script's main."""
    from scipy import stats

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import results_tables as rt
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    keys = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]
    rng = np.random.default_rng(1)
    seeds = (1111, 1112, 1113)
    lf = {s: {k: float(rng.uniform(0.5, 1)) for k in keys} for s in seeds}
    pase = {s: {k: v + float(rng.normal(0.01, 0.003)) for k, v in lf[s].items()} for s in seeds}
    for meth, by_seed in (("late_fusion", lf), ("pase", pase)):
        for s, test in by_seed.items():
            for run in (tmp_path / "cmp" / "runs" / meth / f"seed{s}", tmp_path / "comp" / f"{meth}-{s}" / "joint"):
                run.mkdir(parents=True)
                (run / "metrics.json").write_text(json.dumps({"dataset": "fake", "protocol": "mosi", "monitor": "MAE",
                                                              "test": test}))
    d = [pase[s]["MAE"] - lf[s]["MAE"] for s in seeds]
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=stats.sem(d))
    for flag in ("--compare", "--competition"):
        monkeypatch.setattr(sys, "argv", ["results_tables.py", flag, str(tmp_path / ("cmp" if flag == "--compare"
                                                                                     else "comp")), "--ci"])
        rt.main()
        out = capsys.readouterr().out
        assert "Paired difference against late_fusion (same seeds), mean and 95% paired t-interval:" in out, flag
        assert f"| pase | 3 | MAE | {np.mean(d):+.4f} | [{lo:+.4f}, {hi:+.4f}] |" in out, (flag, out)

def test_flat_memory_check_flags_a_leak_of_a_few_mib_per_epoch():
    """The memory target's flatness check (benchmarks/report.py): a trimmed RSS series that holds
    its value passes, one that grows 6 MiB every epoch (below the old 24 MiB threshold) fails, and
    on a GPU the CUDA-allocated series decides, not RSS."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    flat = [700.0, 760.0, 760.1, 760.0, 760.2, 760.1, 760.0, 760.1]
    leak = [700.0] + [760.0 + 6.0 * i for i in range(7)]
    assert math.isclose(report.rss_slope(leak), 6.0)
    assert report._flat({"rss_after_epoch_mb": flat}) is True
    assert report._flat({"rss_after_epoch_mb": leak}) is False
    assert report._flat({"rss_after_epoch_mb": flat, "cuda_allocated_after_epoch_mb": leak}) is False


def test_an_interrupted_runs_partial_results_render():
    """run.py rewrites its JSON after every measurement so an interrupted run keeps what finished;
    rendering that file raised KeyError 'total_wall_s' (review)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    res = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    for key in ("total_wall_s", "mmsa"):
        res.pop(key, None)
    res["machine"].pop("load_avg_end", None)
    first = [k for k in res if "/" in k][0]
    res = {k: v for k, v in res.items() if "/" not in k or k == first}
    text = report.render(res, Path("results.json"))
    assert "interrupted before its end (the measurements that finished)" in text
    # --render of such a file writes BENCHMARKS-partial.md, never over the committed BENCHMARKS.md (review)
    before = (ROOT / "BENCHMARKS.md").read_bytes()
    partial = ROOT / "BENCHMARKS-partial.md"
    raw = ROOT / "benchmarks" / "results-partial-test.json"
    try:
        raw.write_text(json.dumps(res))
        proc = _script(ROOT / "benchmarks" / "run.py", "--render", raw)
        assert proc.returncode == 0 and partial.is_file(), proc.stderr[-2000:]
        assert (ROOT / "BENCHMARKS.md").read_bytes() == before
    finally:
        raw.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def test_a_workers_peak_memory_is_its_own_not_its_parents(tmp_path):
    """A worker started by a parent holding 600 MiB reads its own peak (VmHWM), not the parent's:
    ``ru_maxrss`` carries the parent's high-water mark across exec, which put a floor of about
    400 MiB (the driver's) under every worker's peak and flipped small MMSA-load verdicts."""
    if not Path("/proc/self/status").exists():
        import pytest
        pytest.skip("no /proc/self/status on this system: peak_rss_mb falls back to ru_maxrss there")
    child = ("import sys, resource; sys.path.insert(0, sys.argv[1]); import workloads as W; "
             "print(W.peak_rss_mb(), W.rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    parent = ("import subprocess, sys; x = bytearray(600 * 2 ** 20); x[::4096] = b'\\x01' * len(x[::4096]); "
              f"print(subprocess.run([sys.executable, '-c', {child!r}, {str(ROOT / 'benchmarks')!r}], "
              "capture_output=True, text=True, check=True).stdout)")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True).stdout
    peak, rss, ru_maxrss = map(float, out.split())
    assert ru_maxrss > 600  # the inherited mark the old reading returned
    assert rss <= peak < 600 and peak < ru_maxrss - 100


def _bench(name):
    """The benchmark script ``benchmarks/<name>.py`` as a module (benchmarks/ on sys.path while importing)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_a_count_below_one_is_refused_in_one_line_before_any_measurement(capsys, monkeypatch):
    """run.py --threads -2 started the run, every worker died in torch.set_num_threads with a
    traceback and the run exited 0 with a report of errors; parts.py --repeats 0 / --threads 0 and
    dropout_probe.py's counts ended in tracebacks (median of nothing, set_num_threads(0)) (review);
    so did adam_probe.py, compile_train.py, fused_ot_probe.py (--calls 0: a division by zero) and
    log_probe.py (--epochs 1 timed nothing), and op_count.py --top -2 printed a "top -2" list (a later review)."""
    import pytest
    import torch

    workloads = _bench("workloads")

    def measured(*a, **k):  # the old code measured before failing: fail fast here instead
        raise AssertionError("measurement started")

    monkeypatch.setattr(workloads, "load_dataset", measured)
    run, parts, dropout, attention = _bench("run"), _bench("parts"), _bench("dropout_probe"), _bench("attention_probe")
    adam, compile_train, fused, log, ops = (_bench(n) for n in ("adam_probe", "compile_train", "fused_ot_probe",
                                                                "log_probe", "op_count"))
    threads = torch.get_num_threads()
    try:
        for main, arg in ((run.main, "--threads"), (parts.main, "--threads"), (parts.main, "--repeats"),
                          (dropout.main, "--threads"), (dropout.main, "--repeats"), (dropout.main, "--train"),
                          (attention.main, "--threads"), (attention.main, "--repeats"), (attention.main, "--train"),
                          (adam.main, "--threads"), (adam.main, "--repeats"), (compile_train.main, "--threads"),
                          (fused.main, "--reps"), (fused.main, "--calls"), (log.main, "--reps"), (ops.main, "--top")):
            for bad in ("0", "-2", "two"):
                with pytest.raises(SystemExit) as e:
                    main([arg, bad, *(["--only", "no_such_key"] if main is run.main else [])])
                err = capsys.readouterr().err
                assert e.value.code == 2 and err.startswith("usage: ") and "Traceback" not in err, err
                assert err.strip().splitlines()[-1].endswith(
                    f"error: argument {arg}: must be a positive integer, got '{bad}'"), err  # argparse's one line
        for epochs in ("1", "0", "-3"):  # its first epoch is not timed
            with pytest.raises(SystemExit) as e:
                log.main(["--epochs", epochs])
            err = capsys.readouterr().err
            assert e.value.code == 2 and err.strip().splitlines()[-1].endswith(
                f"error: --epochs must be at least 2: the first epoch is not timed, got {epochs}"), err
    finally:
        torch.set_num_threads(threads)
    assert run._args(["--threads", "3"]).threads == 3 and run._args([]).threads is None  # valid ones pass


def test_parts_creates_the_out_folder_before_measuring_and_writes_the_table_there(tmp_path, monkeypatch, capsys):
    """parts.py --out in a missing folder measured every variant, printed the table, then died in
    a FileNotFoundError (review): the folder is made up front, the table lands in the file."""
    import torch

    parts = _bench("parts")

    class Run:  # a step that takes no time: the file handling is under test, not the timing
        def __init__(self, *a, **k):
            pass

        def step(self, batch, ac):
            pass

    monkeypatch.setattr(parts.W, "load_dataset", lambda *a: object())
    monkeypatch.setattr(parts.W, "Run", Run)
    monkeypatch.setattr(parts, "_batches", lambda *a: ([0, 1, 2], None, None))
    out = tmp_path / "no" / "such" / "parts.md"
    threads = torch.get_num_threads()
    try:
        assert parts.main(["--dataset", "mosi_shaped", "--repeats", "2", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert "3 batches of 64, 1 thread(s), median of 2 epochs" in text
    # the commit it measured, as run.py records it (BENCHMARKS.md pastes this table below another run's header)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(parts.__file__).parents[1],
                          capture_output=True, text=True).stdout.strip()
    if head:  # a git checkout (CI clones one)
        assert f", commit `{head}`" in text
    assert [r.split(" | ")[0] for r in text.splitlines() if r.startswith("| ") and "---" not in r][1:] == \
        ["| " + k for k in parts.VARIANTS]
    # a folder that cannot be made is refused in one line, before anything is measured
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(parts.W, "Run", None)
    assert parts.main(["--out", str(tmp_path / "file" / "parts.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"benchmarks/parts.py: --out {tmp_path / 'file' / 'parts.md'}: cannot create its folder")
    assert err.count("\n") == 1


def test_compile_probe_times_the_similarities_and_gate_scores_pases_forward_computes():
    """compile_probe.py's forward_extras re-derived a two-term gate score (representation and
    confidence) where PaSE's default gate (pase.gate_inputs=confidence) has the confidence term
    only: its "PaSE extras" and --step's pase_compiled timed another model (max score difference
    0.25 on scores of at most 0.12) (review). Now they equal the model's own, on a warm PaSE."""
    import contextlib

    import torch

    cp, W, workers = _bench("compile_probe"), _bench("workloads"), _bench("workers")
    cpu = torch.device("cpu")
    bundle = W.sweep_bundle(3, train_size=128)
    r = W.Run("pase", bundle, "sweep3", cpu)
    batches = workers._batches(bundle, "train", 2, 0, cpu)[0]
    for b in batches:
        r.step(b, contextlib.nullcontext())
    m = r.model
    assert r.cfg.pase.gate_inputs == m.gate.inputs == "confidence"
    with torch.no_grad():
        out = m(batches[0])
        protos, init = m.bank_snapshot()
        assert bool(init.all())  # the confidences are in play
        z, scores = cp.forward_extras(out.stacked.transpose(0, 1), protos, init, m.gate, m.tau)
    torch.testing.assert_close(z, out.proto_stacked, rtol=0, atol=0)
    torch.testing.assert_close(scores, out.gate_scores, rtol=0, atol=0)


def test_compile_probe_refuses_an_unknown_argument_and_answers_help(capsys):
    """compile_probe.py read sys.argv by hand: --help printed nothing and a typo (--stpe) ran the
    default probe and exited 0, the misspelt part silently skipped (review)."""
    import pytest

    cp = _bench("compile_probe")
    with pytest.raises(SystemExit) as e:
        cp.main(["--stpe"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("error: unrecognized arguments: --stpe"), err
    with pytest.raises(SystemExit) as e:
        cp.main(["--help", "--step"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: ")
    assert all(f in out for f in ("--step", "--whole", "--encoders")), out


def test_gpu_sh_passes_and_announces_only_the_files_run_py_writes(tmp_path):
    """gpu.sh announced benchmarks/cuda/BENCHMARKS-N.md whatever --out / --json said (the README's
    recipe passes both), and passed its own pair before them, so the recorded command held two
    pairs; a missing PYTHON was reported as torch.cuda.is_available() being False (review).
    A stand-in python passes the CUDA check and prints run.py's arguments (bash only, no imports)."""
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\nif [ "$1" = "-c" ]; then exit 0; fi\necho "ARGS $*"\n')
    fake.chmod(0o755)
    env = {**__import__("os").environ, "PYTHON": str(fake)}

    def gpu(*args, python=None):
        proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), *map(str, args)], capture_output=True,
                              text=True, timeout=60, env={**env, **({"PYTHON": python} if python else {})})
        said = [ln for ln in proc.stderr.splitlines() if ln.startswith("benchmarks/gpu.sh: ")]
        argv = next((ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("ARGS ")), None)
        return proc.returncode, said, argv

    md, js = tmp_path / "o" / "BENCHMARKS-3.md", tmp_path / "o" / "results-3.json"
    rc, said, argv = gpu("--only", "epoch", "--out", md, "--json", js)
    assert rc == 0 and said == [f"benchmarks/gpu.sh: writing {md} and {js}"], said
    assert argv == ["benchmarks/run.py", "--device", "cuda", "--bf16", "--only", "epoch", "--out", str(md),
                    "--json", str(js)]
    rc, said, argv = gpu(f"--json={js}")  # argparse's --opt=value form too; the missing --out gets the default
    out = argv[argv.index("--out") + 1]
    assert rc == 0 and said == [f"benchmarks/gpu.sh: writing {out} and {js}"] and argv.count("--out") == 1
    assert out.startswith("benchmarks/cuda/BENCHMARKS") and out.endswith(".md") and "--json" not in argv
    assert not (ROOT / out).exists()  # the next free name: earlier runs' reports are kept
    rc, said, argv = gpu(python=str(tmp_path / "nope"))
    assert rc == 2 and argv is None and said == [
        f"benchmarks/gpu.sh: no python interpreter '{tmp_path / 'nope'}' (PYTHON={tmp_path / 'nope'}); set PYTHON "
        "to the python that has torch"], said


def _run_py(monkeypatch, root):
    """benchmarks/run.py as a module whose project root (default report paths) is ``root``."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # main() imports report / workloads when it runs
    run = _bench("run")
    monkeypatch.setattr(run, "ROOT", root)
    return run


def test_render_of_an_only_results_file_writes_a_partial_report_never_benchmarks_md(tmp_path, monkeypatch):
    """An --only run writes total_wall_s, so --render of its file (benchmarks/results-mmsa.json)
    took it for a full run: it overwrote the committed BENCHMARKS.md with an all-"not run" report
    whose header said "full" (review). Now BENCHMARKS-partial.md, "partial: --only ..." in the
    header; a full file still renders to BENCHMARKS.md, as committed."""
    run = _run_py(monkeypatch, tmp_path)
    for name, sel in (("results-mmsa.json", "mmsa"),
                      ("results-threads2.json", "epoch/mosi_shaped,lightning/mosi_shaped")):
        assert run.main(["--render", str(ROOT / "benchmarks" / name)]) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["BENCHMARKS-partial.md"]
        text = (tmp_path / "BENCHMARKS-partial.md").read_text()
        assert f"` (partial: --only {sel}, device cpu, float32), started " in text, name
        (tmp_path / "BENCHMARKS-partial.md").unlink()
    assert run.main(["--render", str(ROOT / "benchmarks" / "results.json")]) == 0
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "` (full, device cpu, float32), started " in text
    notes = (ROOT / "benchmarks" / "findings.md").read_text().splitlines()[0]  # hand-written, edited between renders
    assert text.replace(str(ROOT) + "/", "").split(notes)[0] == (ROOT / "BENCHMARKS.md").read_text().split(notes)[0]


def test_a_measuring_only_run_records_its_selection_and_says_partial(tmp_path, monkeypatch):
    """The results of an --only run record it ("only"), so a later --render knows (review); the
    measurements are stubbed: what is written is under test."""
    run = _run_py(monkeypatch, tmp_path)
    machine = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda threads: dict(machine))
    monkeypatch.setattr(run, "_run_worker", lambda name, spec, timeout=1800: {"error": "stub"})
    out, raw = tmp_path / "B.md", tmp_path / "r.json"
    assert run.main(["--only", "shapley", "--out", str(out), "--json", str(raw)]) == 0
    res = json.loads(raw.read_text())
    assert res["only"] == ["shapley"] and res["shapley"] == {"error": "stub"} and "total_wall_s" in res
    assert "(partial: --only shapley, device cpu, float32)" in out.read_text()
    assert run.main(["--render", str(raw)]) == 0 and (tmp_path / "BENCHMARKS-partial.md").is_file()
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_render_of_a_missing_or_non_results_file_is_one_line(tmp_path, monkeypatch, capsys):
    """--render of a missing file ended in a FileNotFoundError traceback, of another JSON in a
    KeyError one (review): one line naming the file and what is missing, exit 2, nothing written."""
    run = _run_py(monkeypatch, tmp_path)
    good = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    bad = tmp_path / "bad.json"
    tail = "; give a results file of benchmarks/run.py (benchmarks/results*.json)"
    for content, why in ((None, "cannot read it ([Errno 2] No such file or directory"),
                         ("{not json", "not JSON (Expecting property name"),
                         ('{"a": 1}', "not a benchmarks/run.py results file: no 'machine' key" + tail),
                         ("[1, 2]", "not a benchmarks/run.py results file: no 'machine' key" + tail),
                         (json.dumps({k: v for k, v in good.items() if k != "started"}),
                          "not a benchmarks/run.py results file: no 'started' key" + tail),
                         (json.dumps({**good, "machine": {"cpu": "x"}}),
                          "not a benchmarks/run.py results file: no 'machine.cores' key" + tail)):
        bad.unlink(missing_ok=True)
        if content is not None:
            bad.write_text(content)
        assert run.main(["--render", str(bad), "--out", str(tmp_path / "out" / "B.md")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"benchmarks/run.py: --render {bad}: {why}") and err.count("\n") == 1, err
        assert err.rstrip().endswith(tail) and not (tmp_path / "out").exists()


def test_the_competition_shares_table_names_the_seed_not_the_run_folder(tmp_path):
    """In competition.py's layout (<method>-<seed>/joint/) the shares table's seed column held the
    folder name, "late_fusion-1" (review); the method column already split it."""
    rt = _bench("results_tables")
    for folder in ("late_fusion-1", "pase_x-1112"):
        run = tmp_path / folder / "joint"
        run.mkdir(parents=True)
        (run / "log.csv").write_text("epoch,diag/share_audio,diag/share_text\n0,0.25,0.75\n")
        (run / "metrics.json").write_text(json.dumps({"test": {"MAE": 1.0}}))
    assert rt.shares_table(str(tmp_path)).splitlines()[2:] == [
        "| late_fusion | 1 | None | 0.750 | 0.250 | 0.750 | 0.250 |",
        "| pase_x | 1112 | None | 0.750 | 0.250 | 0.750 | 0.250 |"]


def test_competition_table_says_n_a_for_the_sd_of_one_seed(tmp_path, monkeypatch, capsys):
    """With one seed the deficit column read '+12.0 ± nan' (a review); it reads '± n/a', as
    folds_summary.md, and two seeds give the sample SD. probe_deficit faked: the table is under test."""
    import statistics

    comp = _bench("competition")

    def fake(cfg, modalities, out):
        deficit = {1111: 0.12, 1112: 0.08}[cfg.train.seed]
        return {"audio": {"by_metric": {"acc2": {"joint": 0.5, "alone": 0.5 + deficit, "deficit": deficit}}},
                "__fused__": {"Has0_acc_2": 0.7}}

    monkeypatch.setattr(comp, "probe_deficit", fake)
    assert comp.main(["--seeds", "1111", "--modalities", "audio", "--out", str(tmp_path / "one")]) == 0
    md = (tmp_path / "one" / "competition.md").read_text()
    assert "| late_fusion | audio | acc2 | 0.500 | 0.620 | +12.0 ± n/a | 1 / 1 | 0.700 |" in md, md
    assert "nan" not in md
    # main(argv) in process: the command line is argv's, not the host process's (it named pytest's arguments)
    assert f"command: python benchmarks/competition.py --seeds 1111 --modalities audio --out {tmp_path / 'one'}\n" in md
    assert comp.main(["--seeds", "1111", "1112", "--modalities", "audio", "--out", str(tmp_path / "two")]) == 0
    md = (tmp_path / "two" / "competition.md").read_text()
    sd = statistics.stdev([12.0, 8.0])
    assert f"| late_fusion | audio | acc2 | 0.500 | 0.600 | +10.0 ± {sd:.1f} | 2 / 2 | 0.700 |" in md, md


def test_competition_tables_cover_every_finished_run_in_out(tmp_path, capsys):
    """A rerun into the same OUT with fewer --modalities (or seeds, or methods) rewrote competition.md / .csv
    from its own rows only, silently dropping the earlier finished runs' (a review): the tables cover every
    finished run in OUT, earlier ones probed again (never retrained), and an earlier run of another
    configuration stops the call before anything trains."""
    import csv

    from tiny import TINY

    comp = _bench("competition")
    sets = [x for s in TINY + ["train.max_epochs=1"] for x in ("--set", s)]
    out = tmp_path / "comp"

    def table():
        with open(out / "competition.csv", newline="") as fh:
            return [(r["method"], r["seed"], r["modality"], r["probe"], r["deficit"]) for r in csv.DictReader(fh)]

    assert comp.main(["--seeds", "1111", "--modalities", "audio", "vision", "--out", str(out), *sets]) == 0
    first = table()
    assert {(r[1], r[2]) for r in first} == {("1111", "audio"), ("1111", "vision")}
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")}
    assert len(stamps) == 3
    assert comp.main(["--seeds", "1111", "--modalities", "audio", "--out", str(out), *sets]) == 0
    assert table() == first  # the vision rows are kept, with the same probes
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")} == stamps  # nothing retrained
    assert comp.main(["--seeds", "1112", "--modalities", "audio", "--out", str(out), *sets]) == 0
    third = table()
    assert [r for r in third if r[1] == "1111"] == first
    assert {(r[1], r[2]) for r in third} == {("1111", "audio"), ("1111", "vision"), ("1112", "audio")}
    md = (out / "competition.md").read_text()
    assert "seeds [1111, 1112];" in md
    assert sum(line.startswith("| late_fusion | audio | acc2 |") and " / 2 | " in line for line in md.splitlines()) == 1, md
    assert sum(line.startswith("| late_fusion | vision | acc2 |") and "± n/a | " in line and " / 1 | " in line
               for line in md.splitlines()) == 1, md
    capsys.readouterr()
    assert comp.main(["--seeds", "1113", "--modalities", "audio", "--out", str(out), *sets, "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"competition.py: error: {out / 'late_fusion-1111' / 'joint'} holds a finished run of another "
                          "configuration (train.lr: ") and "it is an earlier call's run" in err and err.count("\n") == 1, err
    assert not (out / "late_fusion-1113").exists() and table() == third


def test_competition_refuses_a_named_earlier_run_of_another_configuration_before_anything_trains(tmp_path, capsys):
    """An earlier finished run that this call also names was checked only at its turn (in probe_deficit),
    after the plan's runs before it had trained, under an error that said "nothing was changed" (a review):
    every finished run the call uses is checked before any trains."""
    from tiny import TINY

    comp = _bench("competition")
    sets = [x for s in TINY + ["train.max_epochs=1"] for x in ("--set", s)]
    out = tmp_path / "comp"
    assert comp.main(["--seeds", "1112", "--modalities", "audio", "--out", str(out), *sets]) == 0
    assert sorted(p.parent.name for p in out.glob("late_fusion-1112/*/metrics.json")) == ["alone_audio", "joint"]
    capsys.readouterr()
    # seed 1111 comes first in the plan and is new; seed 1112's finished runs are of another configuration
    assert comp.main(["--seeds", "1111", "1112", "--modalities", "audio", "--out", str(out), *sets,
                      "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert err == (f"competition.py: error: {out / 'late_fusion-1112' / 'joint'} holds a finished run of another "
                   "configuration (train.lr: 0.001 there, 0.5 now); pass another output folder (nothing was "
                   "changed)\n"), err
    assert not (out / "late_fusion-1111").exists()  # nothing trained
    # an alone_<m> run of another configuration too (its joint run agrees)
    alone = out / "late_fusion-1112" / "alone_audio" / "config.yaml"
    assert "\n  dropout: 0.2\n" in alone.read_text()
    alone.write_text(alone.read_text().replace("\n  dropout: 0.2\n", "\n  dropout: 0.3\n"))
    assert comp.main(["--seeds", "1111", "1112", "--modalities", "audio", "--out", str(out), *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"competition.py: error: {out / 'late_fusion-1112' / 'alone_audio'} holds a finished "
                          "run of another configuration (model.dropout: 0.3 there, 0.2 now)"), err
    assert not (out / "late_fusion-1111").exists()


def test_results_tables_name_pairs_without_spread_instead_of_printing_nan():
    """A variant identical to the reference run for run (PaSE without SGM where no run reaches its
    switch) read '+nan' in the mean / SE column; it reads 'identical', and a constant nonzero
    difference 'n/a (SE 0)'."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import results_tables as rt
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    keys = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]
    ref = {s: {"test": {k: 0.5 + 0.01 * s for k in keys}} for s in range(3)}
    same = {s: {"test": dict(v["test"])} for s, v in ref.items()}
    shifted = {s: {"test": {k: x + 0.25 for k, x in v["test"].items()}} for s, v in ref.items()}
    table = rt.method_table({"late_fusion": ref, "same": same, "shifted": shifted})
    assert "| same | 3 | MAE | +0.0000 ± 0.0000 | identical |" in table
    assert "| shifted | 3 | MAE | +0.2500 ± 0.0000 | n/a (SE 0) |" in table
    assert "nan" not in table


def test_a_cuda_runs_compiled_and_cuda_graph_rows_render_with_their_failures():
    """The CUDA run 3 (benchmarks/cuda/results-3.json): its graphs/* keys get a section of their own,
    a variant that failed is named with its error, the paired ratio of the eager pair is the JSON's,
    and a profile with no host sync says 0 without a dangling "at"."""
    report = _bench("report")
    res = json.loads((ROOT / "benchmarks" / "cuda" / "results-3.json").read_text())
    text = report.render(res, Path("results-3.json"))
    section = text.split("## Compiled steps and CUDA graphs (CUDA)")[1].split("\n## ")[0]
    g = res["graphs/mosi_shaped"]
    assert g["compile_errors"]["pase+graphs"] == "AssertionError: "  # an exception without a message
    assert "| mosi_shaped | pase+graphs | failed: AssertionError (no message) |" in section
    q = g["ratio_pase_late_fusion"]
    assert f"| mosi_shaped | {q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f}) | n/a | n/a |" in section
    assert "host syncs / step 0 |" in text and "host syncs / step 0 at" not in text
    targets = text.split("## Targets")[1].split("\n## ")[0]
    row = [ln for ln in targets.splitlines() if "CUDA graphs of the compiled" in ln and "MOSI-shaped" in ln][0]
    assert ("not measured: late_fusion+graphs failed: RuntimeError: Error: accessing tensor output of CUDAGraphs" in row
            and row.endswith("; pase+graphs failed: AssertionError (no message) | n/a |"))  # both variants' errors
    # a pair that both ran gives the target its ratio and a verdict
    ok = json.loads(json.dumps(res))
    ok["graphs/real_mosi"]["ratio_pase_graphs_late_fusion_graphs"] = {"median": 1.1, "min": 1.0, "max": 1.2, "n": 3}
    row = [ln for ln in report.render(ok, Path("r.json")).splitlines()
           if "CUDA graphs of the compiled" in ln and "real MOSI" in ln][0]
    assert row.endswith("| 1.10 (1.00-1.20) x | **met** |")


def test_a_variant_suffix_is_compile_or_graphs():
    """``+graphs`` compiles with mode="reduce-overhead" (CUDA graphs on a GPU); another suffix is refused."""
    import pytest

    W = _bench("workloads")
    bundle = W.sweep_bundle(2)
    with pytest.raises(ValueError, match=r"unknown variant suffix \+graph \(\+compile or \+graphs\)"):
        W.Run("pase+graph", bundle, "sweep2", W.torch.device("cpu"))
    r = W.Run("late_fusion+graphs", bundle, "sweep2", W.torch.device("cpu"))
    assert r.compiled and r.graphs and r.variant == "late_fusion"
    assert not W.Run("pase", bundle, "sweep2", W.torch.device("cpu")).compiled


def test_results_tables_and_pase_compare_share_one_sd_zero_rule():
    """pase compare called an SD up to 1e-9 relative to max(1, |mean|) "SD 0", results_tables.py an SE
    up to an absolute 1e-12: a spread of 1e-10 on metrics near 0.7 was "SD 0" in one and a mean / SE of
    ~1e8 in the other. One rule (compare.spread_is_zero): 1e-10 is SD 0 in both, 1e-6 in neither."""
    from pase.evaluation.compare import paired_difference

    rt = _bench("results_tables")
    keys = ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"]
    ref = {s: {"test": {k: 0.7 + 0.001 * s for k in keys}} for s in range(3)}
    runs = {"late_fusion": ref}
    for name, spread in (("tight", 1e-10), ("loose", 1e-6)):  # d_s = 0.01 + s * spread: sample SD = spread
        runs[name] = {s: {"test": {k: x + 0.01 + s * spread for k, x in v["test"].items()}} for s, v in ref.items()}
        d = paired_difference({s: m["test"]["MAE"] for s, m in runs[name].items()},
                              {s: m["test"]["MAE"] for s, m in ref.items()})
        assert d["sd"] == pytest.approx(spread, rel=1e-3) and d["sd_zero"] is (name == "tight"), d
    rows = {line.split(" | ")[0][2:]: line for line in rt.method_table(runs).splitlines()
            if line.startswith(("| tight | 3 | MAE |", "| loose | 3 | MAE |"))}
    assert rows["tight"].endswith("| n/a (SE 0) |"), rows
    ratio = rows["loose"].rstrip(" |").rsplit("| ", 1)[1]
    assert float(ratio) == pytest.approx(0.01 / (1e-6 / math.sqrt(3)), rel=1e-3), rows
    # --ci: the same rule; such pairs have no interval (it printed a zero-width [+0.0100, +0.0100]: a review)
    rows = {line.split(" | ")[0][2:]: line for line in rt.method_table(runs, ci=True).splitlines()
            if line.startswith(("| tight | 3 | MAE |", "| loose | 3 | MAE |"))}
    assert rows["tight"].endswith("| +0.0100 | n/a (SE 0) |"), rows
    lo, hi = (float(x) for x in rows["loose"].rstrip(" |]").rsplit("[", 1)[1].split(", "))
    assert lo <= 0.01 <= hi, rows  # an interval (of width 2.5e-6: equal at 4 decimals), not "n/a"


def test_the_cuda_only_compiled_keys_are_capped_and_a_worker_past_its_cap_is_an_error_not_the_end():
    """On a lent GPU machine graphs/mosi_shaped compiled for minutes and the device call's limit ended the whole
    run there: the compiled keys carry their own cap (timeout_s), a worker past it is killed and recorded as an
    error, and the run goes on; --quick and CPU plans have no such keys."""
    run = _bench("run")
    caps = {k: s.get("timeout_s") for k, _, s in run.plan(False, "cuda", True, None)}
    assert {k for k, c in caps.items() if c} == {"graphs/real_mosi", "graphs/mosi_shaped", "compile/mosi_shaped"}
    assert all(c <= 420 for c in caps.values() if c)
    assert not any(k.startswith(("graphs/", "compile/")) for q in (True, False)
                   for k, _, _ in run.plan(q, "cpu", False, None))
    assert not any(k.startswith(("graphs/", "compile/")) for k, _, _ in run.plan(True, "cuda", True, None))
    got = run._run_worker("epoch", {"dataset": "mosi_shaped", "repeats": 1}, timeout=1)  # importing torch takes longer
    assert got["error"] == "timed out after 1 s"


def test_inference_is_timed_paired_and_repeated_in_one_worker_and_rendered_with_its_ratio(monkeypatch):
    """Inference throughput was one unrepeated pass of the test split per method, in separate processes (PaSE's
    read 8,000 to 38,000 samples/s between identical runs; review): the inference worker runs both methods'
    models over the same test batches, interleaved, for several repeats, and pairs the ratio per repeat; the
    report renders it in a table of its own (an earlier run's results render as before, without it)."""
    W, workers, report, run = _bench("workloads"), _bench("workers"), _bench("report"), _bench("run")
    seen = []  # (method, batch) of every forward pass

    class Run(W.Run):
        def __init__(self, variant, *a, **k):
            super().__init__(variant, *a, **k)
            self.model.register_forward_pre_hook(lambda mod, args, v=variant: seen.append((v, id(args[0]))))

    monkeypatch.setattr(workers.W, "Run", Run)
    monkeypatch.setattr(workers.W, "BATCH_SIZE", 8)  # two test batches of 8 and 4
    res = workers.inference({"dataset": "mosi_shaped", "sizes": [8, 8, 12], "repeats": 3, "min_repeat_s": 0})
    assert (res["samples"], res["of"], res["batches"], res["passes_per_repeat"], res["repeats"]) == (12, 12, 2, 1, 3)
    by = {m: [b for v, b in seen if v == m] for m in ("late_fusion", "pase")}
    assert by["late_fusion"] == by["pase"] and len(by["pase"]) == 1 + 2 * (1 + 3)  # warm-up, sizing pass, repeats
    assert [v for v, _ in seen[2:]].count("pase") == 8 and {seen[2][0], seen[4][0]} == {"late_fusion", "pase"}
    raw = res["raw_repeat_s"]
    assert res["ratio_pase_late_fusion"] == W.quantiles([p / q for p, q in zip(raw["pase"], raw["late_fusion"])])
    assert res["samples_per_s"]["pase"] == W.quantiles([12 / t for t in raw["pase"]])
    # the plans time it for both methods in one worker; the memory rows keep the peak
    for quick in (True, False):
        keys = {k: (w, s) for k, w, s in run.plan(quick, "cpu", False, None)}
        assert keys["inference/real_mosi"][0] == "inference" and keys["inference/real_mosi"][1]["repeats"] >= 5
        assert ("inference/mosei_shaped" in keys) is not quick
    # a run before the inference worker (CUDA run 3, kept as it is: benchmarks/results.json is rewritten by every
    # CPU run, and the rerun after this worker replaced the old one this test read, which turned it red)
    old = json.loads((ROOT / "benchmarks" / "cuda" / "results-3.json").read_text())
    assert not any(k.startswith("inference/") for k in old)
    text = report.render(old, Path("results-3.json"))
    assert "## Inference throughput (paired)" not in text and "| inference samples/s |" in text
    new = {**old, "inference/mosi_shaped": res}
    for k in [k for k in new if k.startswith("memory/")]:
        new[k] = {x: y for x, y in new[k].items() if x != "infer_samples_per_s"}
    text = report.render(new, Path("r.json"))
    section = text.split("## Inference throughput (paired)")[1].split("\n## ")[0]
    q = res["ratio_pase_late_fusion"]
    row = [ln for ln in section.splitlines() if ln.startswith("| mosi_shaped |")]
    assert row == [f"| mosi_shaped | {report._q(res['samples_per_s']['late_fusion'], 0)} | "
                   f"{report._q(res['samples_per_s']['pase'], 0)} | {q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f}) | "
                   "12 test samples, 1 pass(es) x 3 repeats |"], section
    memory = text.split("## Peak memory")[1].split("\n## ")[0]
    assert "| data | method | data RSS MiB | inference peak MiB | training peak MiB |" in memory


def test_the_mmsa_load_workers_baseline_does_not_import_lightning(tmp_path):
    """workloads.py imported pase.training.lightning_module at its top, so every worker, the MMSA load's
    included, had Lightning (~180 MiB) in the RSS its docstring calls torch and pase.data only (review):
    importing the workers leaves Lightning out, and the load asserts it before reading its baseline."""
    child = ("import sys; sys.path.insert(0, sys.argv[1]); import workers, mmsa_file; "
             "print('lightning' in sys.modules); p = sys.argv[2]; "
             "mmsa_file.mmsa_write({'path': p, 'sizes': [8, 4, 4], 'steps': 5, 'dims': [6, 4, 3]}); "
             "r = mmsa_file.mmsa_load({'path': p}); print('lightning' in sys.modules, r['samples'])")
    out = subprocess.run([sys.executable, "-c", child, str(ROOT / "benchmarks"), str(tmp_path / "aligned_50.pkl")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["False", "False {'train': 8, 'valid': 4, 'test': 4}"], out.stdout


def test_a_run_with_an_edited_harness_is_not_recorded_as_a_clean_commit(tmp_path, monkeypatch):
    """machine() checked `git status src` only, so a run whose benchmarks/workers.py (its timing loop) was edited
    read "commit X", clean (review): src/ and benchmarks/ are checked, the diff stat is recorded and the header
    names it; an edit elsewhere (docs) or the harness's own outputs (results.json, parts.md) leave the run clean."""
    run = _run_py(monkeypatch, tmp_path)
    report = _bench("report")
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,  # noqa: E731
                                    check=True, capture_output=True, text=True)
    for f in ("src/pase/x.py", "benchmarks/workers.py", "docs/a.md"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    (tmp_path / "docs" / "a.md").write_text("edited\n")
    (tmp_path / "benchmarks" / "results.json").write_text("{}")  # the harness's own output is not code
    (tmp_path / "benchmarks" / "parts.md").write_text("")
    m = run.machine(1)
    assert m["git_dirty"] is False and "git_diff_stat" not in m
    clean = m
    with open(tmp_path / "benchmarks" / "workers.py", "a") as fh:
        fh.write("# local edit\n")
    (tmp_path / "benchmarks" / "new.py").write_text("")
    m = run.machine(1)
    assert m["git_dirty"] is True and m["git_dirty_paths"] == ["src", "benchmarks"]
    assert "benchmarks/workers.py | 1 +" in m["git_diff_stat"] and "benchmarks/new.py (untracked)" in m["git_diff_stat"]
    assert report._dirty(clean) == ""
    assert report._dirty(m).startswith(" with uncommitted changes in src/ or benchmarks/ (benchmarks/workers.py | 1 +;")
    assert report._dirty({"git_dirty": True}) == " with uncommitted changes in src/"  # a run before the check


def test_the_slow_compiled_variants_time_out_alone_and_the_report_is_written_after_every_measurement(
        tmp_path, monkeypatch):
    """graphs/mosi_shaped ran its four compiled variants with the eager and CUDA-graph ones, so its timeout lost all
    six; the report was written only at the end; gpu.sh's header said "about 10 min" (review): the +compile
    variants are a worker of their own, the report is rewritten after every measurement as the JSON is, the
    split keys render, and gpu.sh states each cap of the plan and their sum."""
    import re

    run, report = _run_py(monkeypatch, tmp_path), _bench("report")
    p = {k: s for k, _, s in run.plan(False, "cuda", True, None)}
    assert not any(v.endswith("+compile") for v in p["graphs/mosi_shaped"]["variants"])
    assert {"late_fusion", "late_fusion+compile", "pase+compile"} <= set(p["compile/mosi_shaped"]["variants"])
    assert list(p)[-1] == "compile/mosi_shaped"  # last: the slowest, so its timeout costs nothing after it
    header = (ROOT / "benchmarks" / "gpu.sh").read_text().split("\nset -euo")[0].replace("\n# ", " ")
    caps = {k: s["timeout_s"] for k, s in p.items() if "timeout_s" in s}
    assert all(f"{k} {c} s" in header for k, c in caps.items()), header
    assert f"{round(sum(caps.values()) / 60)} min at worst" in header and "about 10 min" not in header
    # the report after each measurement
    machine = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda threads: dict(machine))
    out, raw, seen = tmp_path / "B.md", tmp_path / "r.json", []

    def worker(name, spec, timeout=1800):
        seen.append(out.read_text() if out.exists() else None)
        return {"error": f"stub {name}"}

    monkeypatch.setattr(run, "_run_worker", worker)
    assert run.main(["--only", "shapley,profile/real_mosi", "--out", str(out), "--json", str(raw)]) == 0
    assert seen[0] is None and "interrupted before its end" in seen[1] and "not measured: stub shapley" in seen[1]
    # the split keys render: a compile worker that timed out loses its rows only
    res = json.loads((ROOT / "benchmarks" / "cuda" / "results-3.json").read_text())
    res["compile/mosi_shaped"] = {"error": "timed out after 420 s"}
    section = report.render(res, Path("r.json")).split("## Compiled steps and CUDA graphs (CUDA)")[1].split("\n## ")[0]
    assert "| mosi_shaped (compile worker) | - | timed out after 420 s | | |" in section
    assert re.search(r"^\| mosi_shaped \| late_fusion \| [0-9.]+ \(", section, re.M), section
    both = {"median": 1.3, "min": 1.2, "max": 1.4, "n": 3}
    res["compile/mosi_shaped"] = {**res["graphs/mosi_shaped"], "compile_errors": {},
                                         "ratio_pase_compile_late_fusion_compile": both}
    section = report.render(res, Path("r.json")).split("## Compiled steps and CUDA graphs (CUDA)")[1].split("\n## ")[0]
    assert re.search(r"^\| mosi_shaped \| [0-9.]+ \([0-9.-]+\) \| 1.30 \(1.20-1.40\) \| n/a \|$", section, re.M), section
    assert "| mosi_shaped (compile worker) | late_fusion |" in section


def test_quick_leaves_out_the_compiled_variants_and_its_help_says_so(capsys):
    """--quick, advertised as "< 2 min", kept epoch/real_mosi's two +compile variants, each about 2 minutes of
    compiling on a cold cache (review): a quick plan has no compiled variant on either device, a full one keeps
    them, and --help says what --quick leaves out."""
    run = _bench("run")
    for device in ("cpu", "cuda"):
        variants = {k: s.get("variants", []) for k, _, s in run.plan(True, device, device == "cuda", None)}
        assert not [(k, v) for k, vs in variants.items() for v in vs if "+" in v], variants
        assert variants["epoch/real_mosi"] == ["plain", "late_fusion", "pase"]
    full = {k: s.get("variants", []) for k, _, s in run.plan(False, "cpu", False, None)}
    assert {"late_fusion+compile", "pase+compile"} <= set(full["epoch/real_mosi"])
    with pytest.raises(SystemExit):
        run._args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--quick subsets of batches and smaller files, no compiled (+compile, CUDA-graph) variants" in help_text
    assert "< 2 min" not in help_text


def test_a_timed_out_worker_keeps_its_spec_and_wall_time_and_is_logged_as_timed_out(tmp_path, monkeypatch, capsys):
    """A worker past its cap returned {"error": ...} only, so results held no spec or wall time for it and the log
    read "key: 0.0 s" (review): the result carries spec and driver_wall_s, the log says "timed out after N s"."""
    run = _run_py(monkeypatch, tmp_path)
    spec = {"dataset": "mosi_shaped", "repeats": 1}
    got = run._run_worker("epoch", spec, timeout=1)  # importing torch alone takes longer
    assert got["error"] == "timed out after 1 s" and got["spec"] == spec and got["driver_wall_s"] >= 1
    machine = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda threads: dict(machine))
    monkeypatch.setattr(run, "_run_worker", lambda name, spec, timeout=1800: {**got, "spec": spec})
    capsys.readouterr()
    assert run.main(["--only", "shapley", "--out", str(tmp_path / "B.md"), "--json", str(tmp_path / "r.json")]) == 0
    log = [ln.split("] ", 1)[1] for ln in capsys.readouterr().err.splitlines() if ln.startswith("[bench ")]
    assert "shapley: timed out after 1 s" in log and not any(ln.endswith(" 0.0 s") for ln in log), log
    assert json.loads((tmp_path / "r.json").read_text())["shapley"]["spec"]["Ms"] == list(range(2, 9))


def test_a_full_run_cut_short_leaves_benchmarks_md_and_results_json_as_they_were(tmp_path, monkeypatch, capsys):
    """A full run saved its report to BENCHMARKS.md (and its raw results to benchmarks/results.json) after every
    measurement, so a Ctrl-C in the second one left a one-row "interrupted" report over the committed files
    (review): while measuring, the default names' -partial files are written and the log says so; only the last
    save of a run that completes writes BENCHMARKS.md and results.json (and removes its -partial files)."""
    run = _run_py(monkeypatch, tmp_path)
    monkeypatch.setattr(run, "HERE", tmp_path / "benchmarks")
    (tmp_path / "benchmarks").mkdir()
    committed = {tmp_path / "BENCHMARKS.md": "the committed report\n", tmp_path / "benchmarks" / "results.json": "{}"}
    for p, text in committed.items():
        p.write_text(text)
    machine = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda threads: dict(machine))
    monkeypatch.setattr(run, "_mmsa", lambda quick, threads: {"error": "stub mmsa"})
    partial = tmp_path / "BENCHMARKS-partial.md", tmp_path / "benchmarks" / "results-partial.json"
    calls = []

    def worker(name, spec, timeout=1800, cut=None):
        calls.append(name)
        if len(calls) == cut:
            raise KeyboardInterrupt
        return {"error": f"stub {name}"}

    monkeypatch.setattr(run, "_run_worker", lambda *a, **k: worker(*a, **k, cut=2))
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        run.main(["--threads", "1"])
    assert calls == ["epoch", "epoch"]
    assert {p: p.read_text() for p in committed} == committed
    assert "interrupted before its end" in partial[0].read_text() and "epoch/real_mosi" in partial[1].read_text()
    log = capsys.readouterr().err
    assert f"after each measurement: {partial[0]} and {partial[1]}; {tmp_path / 'BENCHMARKS.md'} and " \
           f"{tmp_path / 'benchmarks' / 'results.json'} only when the run completes" in log, log
    # a run that completes: the default names, and no -partial files left behind
    monkeypatch.setattr(run, "_run_worker", lambda *a, **k: worker(*a, **k))
    assert run.main(["--threads", "1"]) == 0
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "` (full, device cpu, float32), started " in text and "interrupted" not in text.split("## ")[1]
    assert json.loads((tmp_path / "benchmarks" / "results.json").read_text())["mmsa"] == {"error": "stub mmsa"}
    assert not any(p.exists() for p in partial)


def test_a_report_that_cannot_be_rendered_at_the_end_is_an_error_not_wrote(tmp_path, monkeypatch, capsys):
    """The last save went through the after-each-measurement save's tolerant except: a renderer error at the end
    logged a warning, then "wrote B.md", and the run exited 0 with no B.md (or a stale one) (review): the last
    save is strict (exit 1, a line saying the report was NOT written and the --render command that retries it
    from the raw results, which are written); a save after a measurement still warns and the run goes on."""
    run, report = _run_py(monkeypatch, tmp_path), _bench("report")
    machine = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda threads: dict(machine))
    monkeypatch.setattr(run, "_run_worker", lambda name, spec, timeout=1800: {"error": f"stub {name}"})
    render = report.render
    out, raw = tmp_path / "B.md", tmp_path / "r.json"
    for always in (False, True):
        out.unlink(missing_ok=True)

        def boom(res, *a, always=always):
            if always or "total_wall_s" in res:
                raise KeyError("epoch_s")
            return render(res, *a)

        monkeypatch.setattr(report, "render", boom)
        capsys.readouterr()
        assert run.main(["--only", "shapley,profile/real_mosi", "--out", str(out), "--json", str(raw)]) == 1
        log = [ln.split("] ", 1)[1] for ln in capsys.readouterr().err.splitlines() if ln.startswith("[bench ")]
        assert f"error: could not render the report (KeyError: 'epoch_s'): {out} was NOT written" in log[-1], log
        assert log[-1].endswith(f"run `python benchmarks/run.py --render {raw} --out {out}`"), log
        assert not any(ln.startswith("wrote ") for ln in log), log
        assert "total_wall_s" in json.loads(raw.read_text())  # the raw results are complete
        assert [ln.split(":")[0] for ln in log if ln.startswith(("shapley:", "profile/real_mosi:"))] == \
            ["shapley", "profile/real_mosi"]  # an error while measuring did not stop the run
        if always:
            assert not out.exists() and sum(ln.startswith("warning: could not render") for ln in log) == 2, log
        else:  # the file there is the save after the last measurement, which says it is not the run's end
            assert "interrupted before its end" in out.read_text()
    monkeypatch.setattr(report, "render", render)
    assert run.main(["--render", str(raw), "--out", str(out)]) == 0 and "(partial: --only shapley,profile/real_mosi" \
        in out.read_text()


def test_only_runs_each_compiled_cuda_key_alone_and_the_readmes_calls_fit_a_device_call(tmp_path, monkeypatch):
    """--only selects by prefix and the compile worker's key was graphs/mosi_shaped/compile, so --only
    graphs/mosi_shaped and --only graphs also ran it: 840 s of caps, more than one 600 s device call, where the
    README offered "the graphs keys alone" (review). Now compile/mosi_shaped: no key of the CPU or CUDA plan extends
    another but epoch/mosi_shaped/threads2 (a CPU run's 2-thread line, which findings.md reruns with
    --only epoch/mosi_shaped; no cap, no device), --only runs each compiled key alone, and every --only call of
    cuda/README.md's next-run recipe that selects capped keys only fits a 600 s device call by their caps."""
    import re

    import torch

    run = _run_py(monkeypatch, tmp_path)
    monkeypatch.setattr(run.os, "cpu_count", lambda: 16)  # the CPU plan's 2-thread key
    plans = {d: [k for k, _, _ in run.plan(False, d, d == "cuda", None)] + ["mmsa"] for d in ("cpu", "cuda")}
    assert "epoch/mosi_shaped/threads2" in plans["cpu"] and "graphs/mosi_shaped" in plans["cuda"]
    extends = [(d, a, b) for d, keys in plans.items() for a in keys for b in keys if a != b and b.startswith(a)]
    assert extends == [("cpu", "epoch/mosi_shaped", "epoch/mosi_shaped/threads2")], extends
    # through main: the keys an --only call measures on CUDA
    machine = json.loads((ROOT / "benchmarks" / "results.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda threads: dict(machine))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(run, "_run_worker", lambda name, spec, timeout=1800: {"error": f"stub {name}"})
    caps = {k: s.get("timeout_s") for k, _, s in run.plan(False, "cuda", True, None)}
    meta = {"machine", "quick", "device", "bf16", "command", "started", "only", "total_wall_s"}

    def measured(sel):
        raw = tmp_path / "r.json"
        assert run.main(["--device", "cuda", "--bf16", "--only", sel, "--out", str(tmp_path / "B.md"),
                         "--json", str(raw)]) == 0
        return sorted(set(json.loads(raw.read_text())) - meta)

    capped = sorted(k for k, c in caps.items() if c)
    assert len(capped) == 3
    for key in capped:
        assert measured(key) == [key]
    readme = (ROOT / "benchmarks" / "cuda" / "README.md").read_text().split("**Next run.**")[1]
    calls = {m: measured(m) for m in re.findall(r"--only ([^\s`]+)", readme)}
    fits = {m: sum(caps[k] for k in keys) for m, keys in calls.items() if keys and all(caps.get(k) for k in keys)}
    assert all(c <= 600 - 60 for c in fits.values()), fits  # a minute for starting the run and its workers
    assert {k for m in fits for k in calls[m]} == set(capped), (calls, fits)  # each capped key in such a call


def test_attention_probe_runs_the_same_layers_as_torchs_class():
    """attention_probe.py's twin runs torch's nn.TransformerEncoderLayer code on the same module:
    every batch-first layer is swapped, and the twin computes what the encoder computes."""
    import copy

    import torch
    from torch import nn

    from pase.models.encoders import BatchFirstEncoderLayer, create_encoder

    attention = _bench("attention_probe")
    enc = create_encoder("transformer", d_in=5, d_model=8, hidden=16, heads=2, layers=3, dropout=0.0).train()
    twin = copy.deepcopy(enc)
    assert attention.torch_layers(twin) == 3
    assert all(type(m) is nn.TransformerEncoderLayer for m in twin.body.layers)
    assert all(type(m) is BatchFirstEncoderLayer for m in enc.body.layers)
    x, lengths = torch.randn(4, 6, 5), torch.tensor([6, 3, 1, 6])
    torch.testing.assert_close(twin(x, lengths), enc(x, lengths), rtol=1e-6, atol=1e-6)
