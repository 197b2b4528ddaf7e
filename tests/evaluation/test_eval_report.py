"""``report``: figures (valid PNGs) with their data as CSV, Markdown and self-contained HTML."""

import csv
import json
import math
import os
import re

import pytest

from eval_setup import MODALITIES, OK_METHODS, PNG_SIGNATURE
from pase.evaluation.report import report

FIGURES = ["trajectories", "shapley_test", "probes", "effect_probes", "robustness_noise", "robustness_missing"]


@pytest.fixture(scope="module")
def written(comparison):
    return comparison[0], report(comparison[0])


def test_figures_are_valid_pngs_with_csv_data(written):
    out, files = written
    for stem in FIGURES:
        png, data = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.csv"
        assert files[f"{stem}.png"] == png and png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 2000
        rows = list(csv.DictReader(open(data)))
        assert rows and {"method", "mean", "sd", "n"} <= set(rows[0]), stem
        assert list(rows[0])[:2] == ["dataset", "protocol"] and {r["protocol"] for r in rows} == {"mosi"}, stem
        assert {r["method"] for r in rows} == set(OK_METHODS), stem  # the failed method has no data


def test_trajectory_data_is_the_mean_over_seeds(written):
    out, _ = written
    rows = list(csv.DictReader(open(out / "figures" / "trajectories.csv")))
    assert {(r["method"], r["modality"]) for r in rows} == {(m, x) for m in OK_METHODS for x in MODALITIES}
    logs = [list(csv.DictReader(open(out / "runs" / "agm" / f"seed{s}" / "trajectory.csv"))) for s in (1111, 1112)]
    for r in (r for r in rows if r["method"] == "agm"):
        e = int(r["epoch"])
        expect = sum(float(log[e][f"diag/share_{r['modality']}"]) for log in logs) / 2
        assert float(r["mean"]) == pytest.approx(expect, abs=1e-12) and r["n"] == "2"
        assert r["switch_epoch"] == ""  # no phase switch outside PaSE


def test_effect_probe_data_is_the_mean_over_seeds(written):
    out, _ = written
    rows = list(csv.DictReader(open(out / "figures" / "effect_probes.csv")))
    diags = [json.loads((out / "runs" / "agm" / f"seed{s}" / "diagnostics.json").read_text()) for s in (1111, 1112)]
    for r in (r for r in rows if r["method"] == "agm"):
        expect = sum(d["probes"][r["modality"]]["effect_r2"] for d in diags) / 2
        assert float(r["mean"]) == pytest.approx(expect, abs=1e-12) and r["metric"] == "effect_r2"


def test_markdown_and_html_mention_every_method_and_reference_the_figures(written):
    out, files = written
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for m in OK_METHODS:
        assert f"| {m} |" in md and f"<td>{m}</td>" in page
    assert "nope" in md and "unknown method" in md  # the failure is reported
    assert "protocol **mosi**" in md and "validation split only" in md and "protocol <b>mosi</b>" in page
    for stem in FIGURES:
        assert f"](figures/{stem}.png)" in md and f"src='figures/{stem}.png'" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # self-contained: no remote resources
    assert page.count("<table>") == sum(line.startswith("|---") for line in md.splitlines())  # the same tables


def _fake_run(root, method, seed, switch):
    """A run folder with only metrics.json and log.csv (no diagnostics), as a PaSE run writes them."""
    run = root / "runs" / method / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = {"Has0_acc_2": 0.7, "Has0_F1_score": 0.7, "Non0_acc_2": 0.7, "Non0_F1_score": 0.7, "Mult_acc_5": 0.3,
               "Mult_acc_7": 0.3, "MAE": 0.9, "Corr": 0.5}
    json.dump({"dataset": "synthetic", "protocol": "mosi", "protocol_description": "CMU-MOSI", "monitor": "MAE",
               "method": method, "seed": seed, "valid": metrics, "test": metrics, "elapsed_s": 1.0, "best_epoch": 3},
              open(run / "metrics.json", "w"))
    with open(run / "log.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "diag/share_text", "diag/share_audio", "diag/phase", "diag/switch_epoch"])
        for e in range(5):
            phase = 2 if e >= switch else 1
            w.writerow([e, 0.8 - 0.05 * e, 0.2 + 0.05 * e, phase, switch if phase == 2 else -1])


def test_phase_switch_is_marked_and_diagnostics_are_optional(tmp_path):
    _fake_run(tmp_path, "pase", 1, 2)
    _fake_run(tmp_path, "pase", 2, 4)
    stale = tmp_path / "figures" / "probes.png"  # an earlier report's figure of diagnoses this one lacks
    stale.parent.mkdir()
    stale.write_bytes(PNG_SIGNATURE)
    (tmp_path / "figures" / "probes.csv").write_text("method,mean\n")
    files = report(tmp_path)
    assert set(files) == {"report.md", "report.html", "summary.md", "summary.csv", "summary.json", "trajectories.png",
                          "trajectories.csv"}
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["trajectories.csv", "trajectories.png"]
    rows = list(csv.DictReader(open(files["trajectories.csv"])))
    assert {float(r["switch_epoch"]) for r in rows} == {3.0}  # mean switch epoch over the two seeds
    assert list(rows[0])[:2] == ["dataset", "protocol"] and (rows[0]["dataset"], rows[0]["protocol"]) == (
        "synthetic", "mosi")  # every figure's data names its protocol
    assert files["trajectories.png"].read_bytes()[:8] == PNG_SIGNATURE


def test_a_switch_decided_at_the_last_epoch_is_not_a_switch(tmp_path):
    """A run whose switch was decided in its last epoch's validation (log.csv: switch_epoch 5 at epoch
    4, phase 1 throughout; metrics.json reads -1) trained nothing with SGM, yet it was averaged into
    the dashed line (11 / 3 here instead of 3.0; a review saw it on a real 3-epoch comparison)."""
    _fake_run(tmp_path, "pase", 1, 2)
    _fake_run(tmp_path, "pase", 2, 4)
    _fake_run(tmp_path, "pase", 3, 9)  # never switched
    log = tmp_path / "runs" / "pase" / "seed3" / "log.csv"
    lines = log.read_text().splitlines()
    lines[-1] = lines[-1].rsplit(",", 1)[0] + ",5"  # decided at epoch 4, the last: SGM would start at 5
    log.write_text("\n".join(lines) + "\n")
    rows = list(csv.DictReader(open(report(tmp_path)["trajectories.csv"])))
    assert {float(r["switch_epoch"]) for r in rows} == {3.0}


def test_every_figure_names_its_dataset_and_protocol(written, monkeypatch, tmp_path):
    """The PNGs named neither (PASE_SPEC section 6); a figure taken out of the report does now, as its
    CSV does. Redrawing from the CSV alone (results_tables.py --replot-trajectories) keeps the title."""
    import pase.evaluation.report as rep

    titles = {}
    save = rep._save

    def spy(fig, path, context=None):
        save(fig, path, context)
        titles[path.name] = fig._suptitle.get_text() if fig._suptitle is not None else None

    monkeypatch.setattr(rep, "_save", spy)
    out, _ = written
    report(out)
    assert set(titles) == {f"{stem}.png" for stem in FIGURES}
    assert set(titles.values()) == {"synthetic, protocol mosi"}, titles
    rows = list(csv.DictReader(open(out / "figures" / "trajectories.csv")))
    rep.plot_trajectories(rows, tmp_path / "again.png")
    assert titles["again.png"] == "synthetic, protocol mosi"


def test_report_of_a_folder_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no comparison"):
        report(tmp_path)


def test_report_of_a_comparison_without_a_finished_run_is_refused(tmp_path):
    """An empty runs/ folder, or one whose only run never finished, gives an error naming what it
    found, and writes no (empty) report.md or report.html."""
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no finished run to report \(runs/ is empty\)"):
        report(tmp_path)
    (tmp_path / "runs" / "pase" / "seed1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "pase" / "seed1" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"pase seed 1: unfinished .*pase compare --out"):
        report(tmp_path)
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.html").exists()


def test_wide_table_names_a_metric_averaged_over_fewer_seeds():
    """One seed's Corr is NaN (dropped by describe): its cell says n=3, the row's n stays 4."""
    from pase.evaluation.compare import describe
    from pase.evaluation.report import _metric_tables

    stats = {"pase": {"MAE": describe([0.9, 0.8, 0.85, 0.95]), "Corr": describe([0.6, float("nan"), 0.7, 0.5])}}
    s = {"reported": ["pase"], "metrics": ["MAE", "Corr"], "level": 0.95, "stats": stats,
         "higher_is_better": {"MAE": False, "Corr": True}}
    wide = _metric_tables(s)[0]
    assert wide["rows"] == [["pase", 4, "0.8750 ± 0.0645", "0.6000 ± 0.1000 (n=3)"]]


def test_one_pair_gives_no_verdict_rather_than_no():
    """With one seed per method the paired interval does not exist: the verdict is 'n/a', not 'no' (which
    reads as 'the interval includes 0'), in the paired-difference and the deficit-reduction tables."""
    from pase.evaluation.compare import describe, paired_difference
    from pase.evaluation.report import _metric_tables, _reduction_table

    s = {"reported": ["pase"], "metrics": ["MAE"], "level": 0.95, "reference": "late_fusion",
         "stats": {"pase": {"MAE": describe([0.9])}}, "higher_is_better": {"MAE": False},
         "paired": {"pase": {"MAE": paired_difference({1: 0.9}, {1: 1.0})}}}
    paired = _metric_tables(s)[2]
    assert paired["rows"] == [["pase", "MAE", 1, "-0.1000", "n/a", "n/a", "n/a"]]
    s["paired"]["pase"]["MAE"] = paired_difference({1: 0.9, 2: 0.89, 3: 0.88}, {1: 1.0, 2: 1.0, 3: 1.0})
    assert _metric_tables(s)[2]["rows"][0][-1] == "yes, better"  # d = -0.10, -0.11, -0.12: interval below 0
    s["paired"]["pase"]["MAE"] = paired_difference({1: 0.9, 2: 1.1}, {1: 1.0, 2: 1.0})
    assert _metric_tables(s)[2]["rows"][0][-1] == "no"
    block = {"alone": {"text": describe([0.5])}, "deficit_reduction": {"pase": {"text": describe([0.2])}}}
    assert _reduction_table(s, "acc2", block, lambda m, d: "x")[0]["rows"] == [["pase", "x n/a n/a"]]


def test_a_zero_spread_difference_gets_no_verdict():
    """Every seed's difference the same: the interval is a point, so the paired table says 'n/a (SD 0)'
    rather than 'yes', and the deficit-reduction table rather than 'increases' (review: 'pase -0.0333 ±
    0.0000 [-0.0333, -0.0333] increases'). Also for a summary written before paired_difference knew."""
    from pase.evaluation.compare import describe, paired_difference
    from pase.evaluation.report import _metric_tables, _reduction_table

    tied = paired_difference({1: 0.55, 2: 0.45}, {1: 0.50, 2: 0.40})
    s = {"reported": ["pase"], "metrics": ["Has0_acc_2"], "level": 0.95, "reference": "late_fusion",
         "stats": {"pase": {"Has0_acc_2": describe([0.55, 0.45])}}, "higher_is_better": {"Has0_acc_2": True},
         "paired": {"pase": {"Has0_acc_2": tied}}}
    assert _metric_tables(s)[2]["rows"][0][-1] == "n/a (SD 0)"
    old = dict(tied, excludes_zero=True)  # an older summary.json: no sd_zero, excludes_zero True
    del old["sd_zero"]
    s["paired"]["pase"]["Has0_acc_2"] = old
    assert _metric_tables(s)[2]["rows"][0][-1] == "n/a (SD 0)"
    point = describe([-4 / 120, -4 / 120])
    block = {"alone": {"text": describe([0.6, 0.6])},
             "deficit_reduction": {"pase": {"text": dict(point, excludes_zero=True)}}}
    cell = _reduction_table(s, "acc2", block, lambda m, d: "x")[0]["rows"][0][1]
    assert cell.endswith("n/a (SD 0)") and "increases" not in cell


def test_a_per_method_interval_of_tied_seeds_is_no_interval():
    """Two seeds with the same Mult_acc_7 gave '| pase | Mult_acc_7 | 2 | 0.3076 | 0.0000 | [0.3076, 0.3076] |':
    a zero-width 95% CI (a review). It reads 'n/a (SD 0)', as in the paired table; an untied metric keeps its
    interval, and one seed has none."""
    from pase.evaluation.compare import describe
    from pase.evaluation.report import _metric_tables

    s = {"reported": ["pase", "agm"], "metrics": ["Mult_acc_7", "MAE"], "level": 0.95,
         "stats": {"pase": {"Mult_acc_7": describe([0.30758017, 0.30758017]), "MAE": describe([0.9, 1.1])},
                   "agm": {"Mult_acc_7": describe([0.3]), "MAE": describe([1.0])}},
         "higher_is_better": {"Mult_acc_7": True, "MAE": False}}
    rows = {(r[0], r[1]): r[2:] for r in _metric_tables(s)[1]["rows"]}
    assert rows["pase", "Mult_acc_7"] == [2, "0.3076", "0.0000", "n/a (SD 0)"]
    half = 12.706204736 * math.sqrt(0.02) / math.sqrt(2)  # t(0.975, 1) · SD / √n
    assert rows["pase", "MAE"] == [2, "1.0000", "0.1414", f"[{1 - half:.4f}, {1 + half:.4f}]"]
    assert rows["agm", "Mult_acc_7"] == [1, "0.3000", "n/a", "n/a"]


def test_diagnostic_cells_over_fewer_seeds_than_the_runs_say_so():
    """A text probe NaN for one of 4 seeds showed '0.5469' with no n in the diagnostics tables,
    unlike the test-metric table (review)."""
    from pase.evaluation.compare import describe
    from pase.evaluation.report import _diagnostic_tables

    mods = ["text", "audio"]
    full, short = describe([0.5, 0.6, 0.55, 0.52]), describe([0.5, float("nan"), 0.55, 0.52])
    s = {"reported": ["pase"], "modalities": mods, "metrics": ["MAE"], "headline": "Has0_acc_2",
         "stats": {"pase": {"MAE": describe([0.9, 0.8, 0.85, 0.95])}},
         "shares": {"neg_loss": {"pase": {"text": full, "audio": full}}},
         "probes": {"metric": "acc2", "values": {"pase": {"text": short, "audio": full}}},
         "robustness": {"pase": {k: full for k in ("full", "missing_relative", "noise_relative")}},
         "conditions": {"pase": []}}
    probes = next(t for t in _diagnostic_tables(s) if t["title"].startswith("Linear probes"))
    assert probes["rows"] == [["pase", "0.5233 ± 0.0252 (n=3)", "0.5425 ± 0.0435"]]
    # the share-truth, deficit and deficit-reduction cells said nothing of their n either (a second review)
    s["share_truth"] = {"truth": {"text": 0.6, "audio": 0.4}, "error": {"pase": {"text": short, "audio": full}},
                        "max_abs_error": {"pase": 0.55}, "within_0.05": {"pase": False}}
    s["alone"] = {"text": full, "audio": full}
    s["deficit"] = {"pase": {"text": short, "audio": full}}
    s["deficit_reduction"] = {"pase": {"text": short, "audio": full}}
    s["reference"], s["level"] = "late_fusion", 0.95
    tables = {t["title"].split(" (")[0].split("?")[0]: t for t in _diagnostic_tables(s)}
    for title in ("Test-split shares against the generator's ground truth", "Probe deficit: unimodal alone minus joint",
                  "Does a method reduce the probe deficit of late_fusion"):
        row = tables[title]["rows"][0]
        assert "(n=3)" in row[1] and "(n=" not in row[2], (title, row)


def test_the_header_names_a_paired_reference_only_when_it_was_compared(comparison, comparison_copy):
    from pase.evaluation.report import summary_markdown

    s = dict(comparison[1])
    assert "paired per-seed differences against `late_fusion`" in summary_markdown(s)
    s["reference"] = "pmr"
    text = summary_markdown(s)
    assert "no paired differences (the reference `pmr` was not compared)" in text and "against `pmr`" not in text
    # a reference whose every run failed: no paired table of n/a rows under a header that pairs
    from pase.evaluation.compare import summarize

    copy = comparison_copy
    for seed in (1111, 1112):
        (copy / "runs" / "late_fusion" / f"seed{seed}" / "metrics.json").unlink()
    s = summarize(copy, reference="late_fusion")
    text = summary_markdown(s)
    assert s["paired"] == {} and "Paired differences" not in text
    assert "no paired differences (the reference `late_fusion` has no finished run)" in text


def test_a_method_keeps_its_colour_in_every_bar_figure():
    """A bar's colour is its method's place in the comparison, not in the figure: with the first
    method absent from one figure (no finished run with that diagnosis) the second keeps colour C1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from pase.evaluation.report import _grouped_bars

    for series in ({"late_fusion": [(0.5, 0.1)], "pase": [(0.6, 0.1)]}, {"pase": [(0.6, 0.1)]}):
        fig, ax = plt.subplots()
        _grouped_bars(ax, ["text"], series, "share", ["late_fusion", "pase"])
        colours = {c.get_label(): c.patches[0].get_facecolor() for c in ax.containers if hasattr(c, "patches")}
        assert colours["pase"] == to_rgba("C1")
        if "late_fusion" in series:
            assert colours["late_fusion"] == to_rgba("C0")
        plt.close(fig)


def test_trajectory_epochs_are_whole_numbers_on_the_axis(tmp_path, monkeypatch):
    """Two epochs put ticks at 0.0, 0.2, ..., 1.0 on the trajectory figure's epoch axis (a review)."""
    import pase.evaluation.report as rep

    drawn = {}
    monkeypatch.setattr(rep, "_save", lambda fig, path, context=None: drawn.update(fig=fig))
    for epochs, want in ((2, [0.0, 1.0]), (1, [0.0])):  # one epoch had ticks -0.045 ... 0.045 (a review)
        rows = [{"method": "pase", "epoch": str(e), "modality": mod, "mean": "0.5", "sd": "0.01", "n": "2",
                 "switch_epoch": ""} for e in range(epochs) for mod in ("text", "audio")]
        rep.plot_trajectories(rows, tmp_path / "t.png")
        drawn["fig"].canvas.draw()  # the ticks of the drawn view
        ax = drawn["fig"].axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == want, (epochs, ticks)


def test_report_of_a_training_run_says_what_it_reads(tmp_path):
    """pase report on a training run's folder advised 'run pase compare --out RUN first', which
    compare then refuses (the folder belongs to a run)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(run))} is the folder of one training run, not a "
                                                "comparison; pase report reads the --out folder of pase compare"):
        report(run)


def test_trajectory_epochs_some_seeds_did_not_reach_are_drawn_apart(tmp_path, monkeypatch):
    """Early stopping ends seeds at different epochs: the tail (n below the seed count) was drawn
    like the rest, down to a single seed with no band. It is now a dotted line from the last epoch
    every seed reached, without a band."""
    import pase.evaluation.report as rep

    drawn = {}
    monkeypatch.setattr(rep, "_save", lambda fig, path, context=None: drawn.update(fig=fig, path=path))
    rows = [{"method": "pase", "epoch": str(e), "modality": mod, "mean": str(0.1 * e + (0.5 if mod == "text" else 0)),
             "sd": "" if e > 2 else "0.01", "n": str(3 if e <= 2 else 1), "switch_epoch": "1.5"}
            for e in range(5) for mod in ("text", "audio")]  # as read back from the CSV: strings
    rep.plot_trajectories(rows, tmp_path / "t.png")
    ax = drawn["fig"].axes[0]
    solid = [list(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "-"]
    dotted = [list(line.get_xdata()) for line in ax.lines if line.get_linestyle() == ":"]
    assert solid == [[0, 1, 2], [0, 1, 2]] and dotted == [[2, 3, 4], [2, 3, 4]]
    assert len(ax.collections) == 2 and all(len(c.get_paths()[0].vertices) < 12 for c in ax.collections)
    assert ax.get_title() == "pase (3 seeds)" and "fewer than 3 seeds" in [t.get_text() for t in ax.get_legend().texts]


def test_report_command_names_the_runs_left_out(comparison_copy, capsys):
    """pase report wrote the report and said nothing of the failed runs on the console (pase
    compare does); they were only in the report's last table."""
    from pase.cli import main

    (comparison_copy / "runs" / "agm" / "seed1112" / "metrics.json").unlink()  # an unfinished run
    assert main(["report", str(comparison_copy)]) == 0
    captured = capsys.readouterr()
    assert "report written to" in captured.out
    line = next(x for x in captured.err.splitlines() if x.startswith("pase report: "))
    assert line.startswith("pase report: 3 run(s) left out of the tables (2 failed, 1 missing), for example "), line


def test_a_confidence_level_is_named_as_given_not_rounded_to_a_whole_percent(comparison):
    """summarize(level=0.975) printed '98% Student-t interval' and 't(0.5 + 98/200, n - 1)' beside the
    97.5 % interval it computed (a review); 0.999 read '100%'."""
    from scipy import stats

    from pase.evaluation.compare import summarize
    from pase.evaluation.report import summary_markdown

    for level, pct, q in ((0.975, "97.5", "0.9875"), (0.999, "99.9", "0.9995"), (0.95, "95", "0.975")):
        s = summarize(comparison[0], level=level)
        text = summary_markdown(s)
        assert f"{pct}% Student-t interval" in text and f"{pct}% t-intervals of the test metrics" in text
        assert f"t({q}, n - 1)" in text and f"{pct}% paired t-interval" in text
        assert "98%" not in text and "100%" not in text
        d = s["stats"]["late_fusion"]["Has0_acc_2"]
        lo, hi = stats.t.interval(level, d["n"] - 1, loc=d["mean"], scale=d["sd"] / d["n"] ** 0.5)
        assert [d["ci_low"], d["ci_high"]] == pytest.approx([lo, hi], abs=1e-6)


def test_a_long_variant_name_is_wrapped_to_fit_its_panel(tmp_path, monkeypatch):
    """A variant folder name such as pase_model.context-true_pase.gate-false with ' (5 seeds)' ran past
    its panel in a three-column trajectory figure and was cut (docs/results.md section 18's figure);
    the title is broken after an underscore, the seed count kept whole, and each line fits its panel."""
    import pase.evaluation.report as rep

    drawn = {}
    monkeypatch.setattr(rep, "_save", lambda fig, path, context=None: drawn.update(fig=fig))
    names = ["late_fusion_model.context-true", "pase_model.context-true_pase.gate-false", "pase"]
    rows = [{"method": m, "epoch": str(e), "modality": mod, "mean": "0.5", "sd": "0.01", "n": "5", "switch_epoch": ""}
            for m in names for e in range(3) for mod in ("text", "audio")]
    rep.plot_trajectories(rows, tmp_path / "t.png")
    fig = drawn["fig"]
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["late_fusion_model.context-true\n(5 seeds)", "pase_model.context-true_\npase.gate-false (5 seeds)",
                      "pase (5 seeds)"]
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    default = FontProperties(size=rcParams["axes.titlesize"]).get_size_in_points()
    assert fig.axes[2].title.get_fontsize() == default > 10  # an unwrapped title keeps the default size
    assert fig.axes[1].title.get_fontsize() == 10
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
    for ax in fig.axes[:3]:
        box, panel = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.width <= panel.width * 1.1, (ax.get_title(), box.width, panel.width)


def test_write_summary_expands_a_tilde(tmp_path, monkeypatch):
    """write_summary called from Python took a leading `~` literally, where compare / summarize / report
    expand it (pase.io.user_path): it wrote into a folder named ~ under the working directory (a review)."""
    from pase.evaluation.compare import summarize
    from pase.evaluation.report import write_summary

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    s = summarize(home / "cmp", ["late_fusion"], [1])  # one run, not trained
    write_summary(s, "~/cmp")
    assert sorted(p.name for p in (home / "cmp").iterdir()) == ["summary.csv", "summary.json", "summary.md"]
    assert [r["status"] for r in json.loads((home / "cmp" / "summary.json").read_text())["runs"]] == ["missing"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_metric_tables_name_each_metrics_direction_and_the_t_quantile():
    """The wide table's arrows follow higher_is_better (MAE lower is better), the interval table's
    note names the two-sided quantile t(0.975, n - 1) of a 95% interval (t(0.95) is a 90% one's),
    and one seed shows its mean without an SD (the SD of one value is undefined)."""
    from pase.evaluation.compare import describe
    from pase.evaluation.report import _metric_tables

    s = {"reported": ["pase"], "metrics": ["MAE", "Corr"], "level": 0.95, "higher_is_better": {"MAE": False, "Corr": True},
         "stats": {"pase": {"MAE": describe([0.9]), "Corr": describe([0.6])}}}
    wide, long = _metric_tables(s)[:2]
    assert wide["headers"] == ["method", "n", "MAE ↓", "Corr ↑"]
    assert wide["rows"] == [["pase", 1, "0.9000", "0.6000"]]
    assert "mean ± t(0.975, n - 1) · SD / √n" in long["note"]
    assert long["rows"][0] == ["pase", "MAE", 1, "0.9000", "n/a", "n/a"]


def test_deficit_reduction_verdict_follows_the_sign_of_the_interval():
    """reduction = probe(method) - probe(reference): an interval above 0 'reduces' the reference's
    deficit, one below 0 'increases' it. d = 0.10, 0.11, 0.09 and its negation (t_{0.975, 2} = 4.303:
    half-width 0.0248, so both intervals exclude 0)."""
    from pase.evaluation.compare import describe, paired_difference
    from pase.evaluation.report import _reduction_table

    up = paired_difference({1: 0.7, 2: 0.71, 3: 0.69}, {1: 0.6, 2: 0.6, 3: 0.6})
    down = paired_difference({1: 0.6, 2: 0.6, 3: 0.6}, {1: 0.7, 2: 0.71, 3: 0.69})
    block = {"alone": {"text": describe([0.8, 0.8, 0.8])}, "deficit_reduction": {"pase": {"text": up}, "agm": {"text": down}}}
    rows = _reduction_table({"reference": "late_fusion", "level": 0.95}, "acc2", block, lambda m, d: "x")[0]["rows"]
    assert [r[1].split()[-1] for r in rows] == ["reduces", "increases"]


def test_share_truth_verdict_says_yes_within_0_05():
    from pase.evaluation.compare import describe
    from pase.evaluation.report import _share_truth_table

    err = describe([0.01, 0.02])
    s = {"level": 0.95, "share_truth": {"truth": {"text": 0.6}, "error": {"a": {"text": err}, "b": {"text": err}},
                                         "max_abs_error": {"a": 0.015, "b": 0.2}, "within_0.05": {"a": True, "b": False}}}
    rows = _share_truth_table(s, ["a", "b"], ["text"], lambda m, d: "x")[0]["rows"]
    assert [r[-2:] for r in rows] == [["0.0150", "yes"], ["0.2000", "no"]]


def test_an_error_holding_a_pipe_keeps_the_failed_runs_table_intact():
    """A run's error line may hold '|' (a shell pipe, a KeyError of 'a|b'): written as is, it split
    the Markdown row into extra cells."""
    from pase.evaluation.report import summary_tables

    s = {"failed": [{"method": "pase", "seed": 1, "error": "RuntimeError: a | b"}], "runs": []}
    table = next(t for t in summary_tables(s) if t["title"] == "Failed or missing runs")
    assert table["rows"] == [["pase", 1, "RuntimeError: a / b"]]


def test_summary_csv_carries_each_runs_selected_epoch_and_robustness(tmp_path):
    """summary.csv's best_epoch is the epoch each run selected (metrics.json), and its robust_*
    columns are the run's missing-modality and noise ratios (diagnostics.json)."""
    from eval_setup import fake_comparison, mosi_metrics
    from pase.evaluation.compare import summarize
    from pase.evaluation.report import write_summary

    diag = {("pase", 1): {"modalities": ["text"], "robustness": {"full": 0.7, "missing_relative": 0.9,
                                                                 "noise_relative": 0.8}}}
    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2],
                          diagnostics=diag, best_epoch={("pase", 1): 7, ("pase", 2): 3})
    write_summary(summarize(out), out)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["best_epoch"] for r in rows] == ["7", "3"]
    assert (rows[0]["robust_missing_relative"], rows[0]["robust_noise_relative"]) == ("0.9", "0.8")


def test_summary_json_holds_null_for_every_non_finite_number(tmp_path):
    """summary.json is strict JSON: NaN, +inf and -inf (an overflowing ratio) are null wherever they
    sit, in dicts, lists and tuples; strict readers refuse the NaN / Infinity tokens."""
    from pase.evaluation.report import _finite_or_null
    from pase.io import atomic_write_json

    obj = {"a": float("inf"), "b": [float("-inf"), 1.5], "c": (float("nan"), 2), "d": {"e": (0.25, float("inf"))}}
    atomic_write_json(tmp_path / "s.json", _finite_or_null(obj))
    saved = json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert saved == {"a": None, "b": [None, 1.5], "c": [None, 2], "d": {"e": [0.25, None]}}


def test_report_rewrites_the_summary_from_the_numbers_it_reports(tmp_path):
    """pase report re-read the runs but left summary.md/.csv/.json of the last pase compare: after one
    seed's metrics.json changed (a run trained longer, an edit) report.md read MAE 0.7000 over the new
    numbers and summary.md 0.6000 over the old (a review). Both now hold the mean of 0.6 and 0.8."""
    from eval_setup import fake_comparison, mosi_metrics
    from pase.evaluation.compare import summarize
    from pase.evaluation.report import write_summary

    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(MAE=0.6), ("pase", 2): mosi_metrics(MAE=0.6)},
                          [1, 2])
    write_summary(summarize(out), out)  # what pase compare wrote
    path = out / "runs" / "pase" / "seed2" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "test": mosi_metrics(MAE=0.8)}))
    files = report(out)
    row = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| pase | MAE |"))
    assert row.startswith("| pase | MAE | 2 | 0.7000 |"), row
    assert row in (out / "summary.md").read_text().splitlines()
    assert json.loads((out / "summary.json").read_text())["stats"]["pase"]["MAE"]["mean"] == pytest.approx(0.7)
    assert [r["test_MAE"] for r in csv.DictReader(open(out / "summary.csv"))] == ["0.6", "0.8"]
    assert {files[name] for name in ("summary.md", "summary.csv", "summary.json")} <= set(out.iterdir())


def test_report_leaves_the_summary_of_a_running_comparison_and_of_a_callers_own_summary(tmp_path, capsys):
    """pase report rewrote summary.* without the comparison lock: a pase compare ending while the report drew
    its figures had its final summary replaced by the report's older one (a review). While another process
    holds the lock, the report is written and summary.* is left to the comparison (said on stdout); with the
    lock free it is rewritten, and the lock file is gone after. report(out, summary) with a caller's own
    summary (some seeds, another level) never replaces the folder's summary.*."""
    import fcntl

    from eval_setup import fake_comparison, mosi_metrics
    from pase.cli import main
    from pase.evaluation.compare import summarize

    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(MAE=0.6), ("pase", 2): mosi_metrics(MAE=0.8)},
                          [1, 2])
    (out / "summary.json").write_text('{"written by": "the running compare"}')
    fd = os.open(out / ".compare.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's compare (flock: per open file)
        assert main(["report", str(out)]) == 0
    finally:
        os.close(fd)
    assert "summary.* not rewritten: another pase command holds " in capsys.readouterr().out
    assert (out / "summary.json").read_text() == '{"written by": "the running compare"}' and (out / "report.md").is_file()
    (out / ".compare.lock").unlink()
    assert main(["report", str(out)]) == 0
    assert "summary.md, .csv and .json rewritten" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["stats"]["pase"]["MAE"]["mean"] == pytest.approx(0.7)
    assert not (out / ".compare.lock").exists()
    before = (out / "summary.json").read_bytes()
    files = report(out, summarize(out, seeds=[1], level=0.9))
    assert (out / "summary.json").read_bytes() == before and "summary.json" not in files


def test_a_run_whose_monitor_was_never_finite_is_flagged_not_called_validation_selected(tmp_path, capsys):
    """A run whose valid monitor was NaN in every epoch kept Lightning's first checkpoint, and summary.md
    said every run kept "the epoch with the best valid/MAE" (a review). Its metrics.json's "selection"
    is named in summary.md, report.md, summary.json and on stderr; a metrics.json without the field
    (older files) stays a validation selection."""
    from eval_setup import fake_comparison, mosi_metrics
    from pase.cli import main

    out = fake_comparison(tmp_path / "c", {("pase", 1): mosi_metrics(), ("pase", 2): mosi_metrics()}, [1, 2])
    path = out / "runs" / "pase" / "seed2" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "selection": "none: valid/MAE never finite"}))
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    flagged = "pase seed 2 (none: valid/MAE never finite, epoch 0 kept)"
    assert [line for line in err if "no validation selection" in line] == [
        f"pase report: warning: no validation selection in 1 run(s) of the tables: {flagged}; their valid and "
        "test numbers are of the checkpoint Lightning kept, which nothing selected"]
    for name in ("summary.md", "report.md"):
        said = [line for line in (out / name).read_text().splitlines() if "no validation selection" in line]
        assert len(said) == 1 and flagged in said[0] and "seed 1" not in said[0], name
    assert json.loads((out / "summary.json").read_text())["unselected"] == [
        {"method": "pase", "seed": 2, "selection": "none: valid/MAE never finite", "best_epoch": 0}]
