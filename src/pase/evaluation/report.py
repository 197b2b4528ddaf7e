"""Comparison summaries and reports: tables, plots, Markdown and self-contained HTML.

``write_summary(summary, out_dir)`` writes ``summary.csv`` (one row per run), ``summary.md``
(the comparison tables) and ``summary.json`` for a ``pase.evaluation.compare.summarize`` result.
``report(out_dir)`` re-reads a comparison folder, rewrites its summary files from what it read and
writes ``report.md`` and ``report.html`` with PNG figures in ``figures/`` (each with the CSV of its
data, same stem):

* ``trajectories``: share of each modality vs epoch (training-batch Shapley shares from the
  per-epoch log), one panel per method, mean over seeds, the PaSE phase switch as a vertical line;
* ``shapley_test``: test-split Shapley shares per method and modality;
* ``probes``: linear-probe score of each frozen encoder, bars per method (error bars: sample SD);
* ``robustness_noise``: headline metric vs noise level, one panel per noisy modality;
* ``robustness_missing``: headline metric under every missing-modality condition.

Plots use matplotlib's object API (``Figure``, Agg rendering); the global backend is untouched.
"""

from __future__ import annotations

import html
import io
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import ConfigError
from ..data.contract import sort_modalities
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, user_path
from .compare import describe, sd_is_zero, summarize
from .shapley_report import read_csv, write_csv

__all__ = ["summary_tables", "summary_markdown", "write_summary", "report"]

Table = Dict[str, Any]  # {"title", "note", "headers", "rows"}


# ---------------------------------------------------------------------------- formatting

def _pct(level: float) -> str:
    """A confidence level as a percentage, as given: 95, 97.5, 99.9 (rounding to a whole percent
    labelled a 97.5 % interval "98%")."""
    return f"{100 * float(level):.10g}"


def _f(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _pm(d: Dict[str, float]) -> str:
    if not d or d.get("n", 0) == 0:
        return "n/a"
    return _f(d["mean"]) + (f" ± {_f(d['sd'])}" if math.isfinite(d["sd"]) else "")


def _ci(d: Dict[str, float]) -> str:
    return f"[{_f(d['ci_low'])}, {_f(d['ci_high'])}]" if _has_ci(d) else "n/a"


def _md_table(t: Table) -> str:
    lines = [f"## {t['title']}", ""]
    if t.get("note"):
        lines += [t["note"], ""]
    lines.append("| " + " | ".join(t["headers"]) + " |")
    lines.append("|" + "---|" * len(t["headers"]))
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- tables
def _metric_tables(s: Dict[str, Any]) -> List[Table]:
    methods, metrics, level = s["reported"], s["metrics"], _pct(s["level"])

    def row(m: str) -> List[Any]:  # a metric over fewer seeds than the row's n (NaN dropped) says so
        n = max(s["stats"][m][k]["n"] for k in metrics)
        return [m, n] + [_pm(d) + (f" (n={d['n']})" if d["n"] != n else "")
                         for d in (s["stats"][m][k] for k in metrics)]

    wide = {"title": "Test metrics (mean ± sample SD over seeds)",
            "note": "Arrows: ↑ higher is better, ↓ lower is better. n: seeds; a metric that is NaN for some "
                    "seed (Corr of a constant prediction) gives its own n.",
            "headers": ["method", "n"] + [f"{k} {'↑' if s['higher_is_better'].get(k, True) else '↓'}"
                                          for k in metrics],
            "rows": [row(m) for m in methods]}
    long = {"title": f"{level}% t-intervals of the test metrics",
            "note": f"mean ± t({0.5 + s['level'] / 2:g}, n - 1) · SD / √n; SD with the n - 1 denominator; "
                    "'n/a (SD 0)' when every seed scored the same (the interval would be a point: no evidence "
                    "of precision from so few seeds).",
            "headers": ["method", "metric", "n", "mean", "SD", f"{level}% CI"],
            # a zero-width "95% CI" from two tied seeds read as a certain value (a review)
            "rows": [[m, k, d["n"], _f(d["mean"]), _f(d["sd"]), "n/a (SD 0)" if sd_is_zero(d) else _ci(d)]
                     for m in methods for k, d in s["stats"][m].items()]}
    tables = [wide, long]
    paired = s.get("paired") or {}
    rows = []
    for m, per in ((m, paired[m]) for m in methods if m in paired):
        for k, d in per.items():
            better = (d["mean"] > 0) == s["higher_is_better"].get(k, True)
            verdict = ("n/a" if not _has_ci(d)  # one pair: no interval, so no verdict either way
                       else "n/a (SD 0)" if sd_is_zero(d)  # every pair differs the same: the interval is a point
                       else ("yes, " + ("better" if better else "worse")) if d["excludes_zero"] else "no")
            rows.append([m, k, d["n"], _f(d["mean"]), _f(d["sd"]), _ci(d), verdict])
    if rows:  # no compared method with a finished run: no table of empty rows
        tables.append({"title": f"Paired differences against {s['reference']} (same seed)",
                       "note": f"d = metric(method) - metric({s['reference']}) per seed; {level}% paired t-interval. "
                               "'yes' when the interval excludes 0 (no multiplicity correction); 'n/a' with one "
                               "pair (no interval); 'n/a (SD 0)' when every pair differs by the same amount "
                               "(the interval is a point: no evidence).",
                       "headers": ["method", "metric", "pairs", "mean d", "SD d", f"{level}% CI", "excludes 0"],
                       "rows": rows})
    return tables


def _share_truth_table(s: Dict[str, Any], methods: List[str], mods: List[str], pm: Callable[..., str]) -> List[Table]:
    st = s.get("share_truth")
    if not st:
        return []
    truth = ", ".join(f"{mod} {_f(st['truth'][mod])}" for mod in mods)
    return [{"title": "Test-split shares against the generator's ground truth (r2 utility)",
             "note": f"Share - truth per modality, mean ± SD over seeds [{_pct(s['level'])}% CI]; "
                     f"truth: {truth}. "
                     "The r2 utility (explained variance of each coalition's predictions) measures what the "
                     "truth defines; 'within 0.05' when every modality's mean error is at most 0.05.",
             "headers": ["method"] + mods + ["max abs error", "within 0.05"],
             "rows": [[m] + [f"{pm(m, st['error'][m][mod])} {_ci(st['error'][m][mod])}" for mod in mods]
                      + [_f(st["max_abs_error"][m]), "yes" if st["within_0.05"][m] else "no"] for m in methods]}]


def _diagnostic_tables(s: Dict[str, Any]) -> List[Table]:
    methods, mods = s["reported"], s.get("modalities") or []
    if "shares" not in s:
        return []
    full = {m: max(s["stats"][m][k]["n"] for k in s["metrics"]) for m in methods}

    def pm(m: str, d: Dict[str, float]) -> str:  # a cell over fewer seeds than the method's runs says so
        return _pm(d) + (f" (n={d['n']})" if d and 0 < d.get("n", 0) < full[m] else "")

    tables = [{"title": "Test-split Shapley shares",
               "note": "Exact Shapley values over all 2^M coalitions of the fused head (absent modalities masked "
                       "at the fusion input), utility over the whole test split, normalised to shares.",
               "headers": ["method", "utility"] + mods,
               "rows": [[m, u] + [pm(m, s["shares"][u][m][mod]) for mod in mods]
                        for m in methods for u in s["shares"]]},
              *_share_truth_table(s, methods, mods, pm),
              {"title": f"Linear probes of the frozen encoders ({s['probes']['metric']}, test split)",
               "note": "A linear model fit on the train-split representation of one modality, scored on test.",
               "headers": ["method"] + mods,
               "rows": [[m] + [pm(m, s["probes"]["values"][m][mod]) for mod in mods] for m in methods]},
              {"title": f"Robustness ({s['headline']} relative to the complete, clean input)",
               "note": "missing: mean over proper non-empty modality subsets of metric(subset) / metric(all); "
                       "noise: mean over modalities and noise levels > 0 of metric(noisy) / metric(clean).",
               "headers": ["method", f"{s['headline']} (all)", "missing-modality ratio", "noise ratio"],
               "rows": [[m] + [pm(m, s["robustness"][m][k]) for k in ("full", "missing_relative", "noise_relative")]
                        for m in methods]}]
    conds = [c["condition"] for c in next((v for v in s["conditions"].values() if v), []) if c["kind"] == "missing"]
    if conds:
        look = {m: {c["condition"]: c for c in s["conditions"][m]} for m in methods}
        tables.append({"title": f"Missing-modality conditions ({s['headline']}, test split)",
                       "headers": ["method"] + conds,
                       "rows": [[m] + [pm(m, look[m].get(c, {})) for c in conds] for m in methods]})
    if s.get("deficit"):
        alone = s["alone"]
        tables.append({"title": f"Probe deficit: unimodal alone minus joint ({s['probes']['metric']})",
                       "note": "Positive: the encoder learned its modality worse when trained jointly (competition).",
                       "headers": ["method"] + [f"{mod} (alone {_pm(alone[mod])})" for mod in alone],
                       "rows": [[m] + [f"{pm(m, s['deficit'][m][mod])} {_ci(s['deficit'][m][mod])}" for mod in alone]
                                for m in methods]})
        tables += _reduction_table(s, s["probes"]["metric"], s, pm)
    eff = s.get("effect_probes")
    if eff:
        note = ("Ground truth of the built-in benchmark: R^2 of a ridge probe of the modality's own effect f_m "
                "(docs/synthetic.md) from its frozen encoder, test split.")
        tables.append({"title": "Effect probes of the frozen encoders (effect_r2, test split)", "note": note,
                       "headers": ["method"] + mods,
                       "rows": [[m] + [pm(m, eff["values"][m][mod]) for mod in mods] for m in methods]})
        if eff.get("deficit"):
            tables.append({"title": "Effect-probe deficit: unimodal alone minus joint (effect_r2)",
                           "note": "Positive: jointly trained, the encoder learned less of its own modality's effect.",
                           "headers": ["method"] + [f"{mod} (alone {_pm(eff['alone'][mod])})" for mod in eff["alone"]],
                           "rows": [[m] + [f"{pm(m, eff['deficit'][m][mod])} {_ci(eff['deficit'][m][mod])}"
                                           for mod in eff["alone"]] for m in methods]})
            tables += _reduction_table(s, "effect_r2", eff, pm)
    return tables


def _has_ci(d: Dict[str, Any]) -> bool:
    return math.isfinite(d.get("ci_low", math.nan))


def _verdict(d: Dict[str, Any]) -> str:
    if not _has_ci(d):  # one seed (or none): no interval to judge by
        return "n/a"
    if sd_is_zero(d):  # every seed's difference the same: the interval is a point, no evidence
        return "n/a (SD 0)"
    if not d.get("excludes_zero"):
        return "no evidence"
    return "reduces" if d["mean"] > 0 else "increases"


def _reduction_table(s: Dict[str, Any], metric: str, block: Dict[str, Any], pm: Callable[..., str]) -> List[Table]:
    """Which methods reduce the probe deficit of the reference, with paired 95% intervals."""
    red = block.get("deficit_reduction") or {}
    if not red:
        return []
    mods = list(block["alone"])
    level = _pct(s.get("level", 0.95))
    return [{"title": f"Does a method reduce the probe deficit of {s['reference']}? ({metric})",
             "note": f"deficit({s['reference']}) - deficit(method) = probe(method) - probe({s['reference']}), paired "
                     f"by seed, mean ± SD and {level}% t-interval; 'reduces' / 'increases' when the interval "
                     "excludes 0 (no multiplicity correction), 'n/a' with one seed (no interval), 'n/a (SD 0)' "
                     "when every seed's difference is the same (the interval is a point), else 'no evidence'.",
             "headers": ["method"] + mods,
             "rows": [[m] + [f"{pm(m, red[m][mod])} {_ci(red[m][mod])} {_verdict(red[m][mod])}" for mod in mods]
                      for m in red]}]


def summary_tables(s: Dict[str, Any]) -> List[Table]:
    """Every table of a summary (comparison statistics, diagnostics, failures)."""
    tables = _metric_tables(s) + _diagnostic_tables(s) if "stats" in s else []
    if s["failed"]:
        tables.append({"title": "Failed or missing runs", "headers": ["method", "seed", "error"],
                       "rows": [[f["method"], f["seed"], f["error"].replace("|", "/")] for f in s["failed"]]})
    if s.get("failed_alone"):
        tables.append({"title": "Failed unimodal references (--alone): their seeds are left out of the probe-deficit "
                                "tables", "headers": ["modality", "seed", "error"],
                       "rows": [[f["modality"], f["seed"], f["error"].replace("|", "/")] for f in s["failed_alone"]]})
    bad = [r for r in s["runs"] if r.get("diagnose_error")]
    if bad:  # their runs count in the test metrics but not in the diagnostic tables (shares, probes, robustness)
        tables.append({"title": "Failed diagnoses: these runs are left out of the diagnostic tables (shares, probes, "
                                "robustness), which then average over fewer seeds than the test metrics",
                       "headers": ["method", "seed", "error"],
                       "rows": [[r["method"], r["seed"], r["diagnose_error"].replace("|", "/")] for r in bad]})
    return tables


def unselected_line(s: Dict[str, Any]) -> str:
    """The runs of summary ``s`` whose validation monitor was never finite (``metrics.json``'s
    ``selection``), so that no epoch was selected: one sentence for the header and stderr."""
    runs = "; ".join(f"{u['method']} seed {u['seed']} ({u['selection']}, epoch {u['best_epoch']} kept)"
                     for u in s["unselected"])
    return (f"no validation selection in {len(s['unselected'])} run(s) of the tables: {runs}; their valid and test "
            "numbers are of the checkpoint Lightning kept, which nothing selected")


def _header(s: Dict[str, Any]) -> List[str]:
    """The header lines of summary.md, report.md and report.html (the code-version warning first)."""
    warn = [f"**Warning: {s['code_warning']}.**"] if s.get("code_warning") else []
    if "protocol" not in s:
        return warn + [f"No run finished in {s['out_dir']}."]
    level = _pct(s["level"])
    none = [f"**Warning: {unselected_line(s)}.**"] if s.get("unselected") else []
    return warn + [f"Dataset `{s['dataset']}`, metric protocol **{s['protocol']}**: {s['protocol_description']}.",
            f"Model selection: validation split only (each run keeps the epoch with the best valid/{s['monitor']}, "
            f"mode {s['mode']}); the test split is evaluated once, from that checkpoint.", *none,
            f"Seeds: {', '.join(map(str, s['seeds']))}. Statistics: mean, sample standard deviation (n - 1), "
            f"{level}% Student-t interval; " + (f"paired per-seed differences against `{s['reference']}`."
                                                 if s["reference"] in s["reported"] else
                                                 f"no paired differences (the reference `{s['reference']}` "
                                                 + ("has no finished run)." if s["reference"] in s["methods"]
                                                    else "was not compared)."))]


def summary_markdown(s: Dict[str, Any]) -> str:
    """``summary.md``: a header naming the protocol and the selection rule, then every table."""
    title = f"# Method comparison: {s.get('dataset', '')}, protocol {s.get('protocol', 'n/a')}"
    return "\n\n".join([title] + _header(s)) + "\n\n" + "\n".join(_md_table(t) for t in summary_tables(s))


def _csv_rows(s: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for r in s["runs"]:
        m = r.get("metrics") or {}
        row: Dict[str, Any] = {"method": r["method"], "seed": r["seed"], "status": r["status"], "error": r["error"],
                               "dataset": m.get("dataset", ""), "protocol": m.get("protocol", "")}  # what was scored
        row.update({f"valid_{k}": v for k, v in (m.get("valid") or {}).items()})
        row.update({f"test_{k}": v for k, v in (m.get("test") or {}).items()})
        row.update({"best_epoch": m.get("best_epoch", ""), "elapsed_s": m.get("elapsed_s", "")})
        d = r.get("diagnostics") or {}
        for mod, v in (d.get("shapley", {}).get("neg_loss", {}).get("shares") or {}).items():
            row[f"share_{mod}"] = v
        for mod, v in (d.get("probes") or {}).items():
            row.update({f"probe_{mod}_{k}": x for k, x in v.items()})
        for k in ("missing_relative", "noise_relative"):
            if k in d.get("robustness", {}):
                row[f"robust_{k}"] = d["robustness"][k]
        row["diagnose_error"] = r.get("diagnose_error", "")
        rows.append(row)
    return rows


def write_summary(s: Dict[str, Any], out_dir: str | Path) -> None:
    """Write ``summary.csv``, ``summary.md`` and ``summary.json`` into ``out_dir`` (a leading ``~``: the
    home folder, as ``compare`` and ``summarize`` take it)."""
    out = user_path(out_dir)
    rows = _csv_rows(s)
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    write_csv(out / "summary.csv", rows, fields)
    atomic_write_text(out / "summary.md", summary_markdown(s))
    slim = {k: v for k, v in s.items() if k != "runs"}
    slim["runs"] = [{k: v for k, v in r.items() if k not in ("robustness_rows",)} for r in s["runs"]]
    atomic_write_json(out / "summary.json", _finite_or_null(slim))  # NaN (one seed's SD) is not JSON


def _finite_or_null(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as None: strict JSON readers refuse the NaN literal."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------- plots
def _figure(ncols: int, nrows: int = 1, width: float = 4.2, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: Path, context: Optional[Dict[str, Any]] = None) -> None:
    """Write ``fig`` as a PNG; ``context`` (dataset, protocol) titles it, so a figure taken out of the
    report still names its protocol (PASE_SPEC section 6)."""
    if context and (context.get("dataset") or context.get("protocol")):
        fig.suptitle(f"{context.get('dataset', '')}, protocol {context.get('protocol') or 'n/a'}", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def _color(i: int) -> str:
    return f"C{i % 10}"


def _run_log(r: Dict[str, Any]) -> Optional[Path]:
    for name in ("trajectory.csv", "log.csv"):
        if (Path(r["path"]) / name).is_file():
            return Path(r["path"]) / name
    return None


def _trajectory_data(s: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Rows (method, epoch, modality, mean, sd, n, switch_epoch) of the per-epoch shares."""
    rows: List[Dict[str, Any]] = []
    for m in s["methods"]:
        values: Dict[Tuple[int, str], List[float]] = {}
        switches: List[float] = []
        for r in (r for r in s["runs"] if r["method"] == m and r["status"] == "ok"):
            path = _run_log(r)
            log = read_csv(path) if path else []
            try:
                for row in log:
                    for k, v in row.items():
                        if k.startswith("diag/share_") and v not in ("", None):
                            values.setdefault((int(float(row["epoch"])), k[len("diag/share_"):]), []).append(float(v))
                sw = [float(row["diag/switch_epoch"]) for row in log if row.get("diag/switch_epoch")]
                last = max((int(float(row["epoch"])) for row in log), default=-1)
            except (KeyError, TypeError, ValueError) as e:  # a bare "could not convert string to float" before
                raise ConfigError(f"{path}: not a per-epoch log as pase writes it ({type(e).__name__}: {e}); "
                                  "restore it, or "
                                  "move its run folder aside to retrain that run") from None
            if sw and 0 <= sw[-1] <= last:  # a switch decided at the last epoch trained nothing with SGM
                switches.append(sw[-1])
        switch = sum(switches) / len(switches) if switches else ""
        rank = {x: i for i, x in enumerate(sort_modalities(list({k[1] for k in values})))}
        for (epoch, mod), vs in sorted(values.items(), key=lambda kv: (kv[0][0], rank[kv[0][1]])):
            d = describe(vs)
            rows.append({"method": m, "epoch": epoch, "modality": mod, "mean": d["mean"], "sd": d["sd"],
                         "n": d["n"], "switch_epoch": switch})
    return rows


def _context(s: Dict[str, Any]) -> Dict[str, Any]:
    """The dataset and metric protocol, the first columns of every figure's CSV (PASE_SPEC section 6:
    a result names its protocol)."""
    return {"dataset": s.get("dataset", ""), "protocol": s.get("protocol", "")}


def _plot_trajectories(s: Dict[str, Any], figdir: Path) -> Optional[str]:
    data = _trajectory_data(s)
    if not data:
        return None
    rows = [{**_context(s), **row} for row in data]
    write_csv(figdir / "trajectories.csv", rows)
    plot_trajectories(rows, figdir / "trajectories.png", s["methods"])
    return "trajectories"


def plot_trajectories(data: List[Dict[str, Any]], path: Path, methods: Optional[Sequence[str]] = None) -> None:
    """One panel per method: each modality's mean share per epoch with a ± SD band, and the mean
    phase switch (dashed). Runs stop at different epochs (early stopping), so the epochs that not
    every seed reached (``n`` below the method's largest) are drawn dotted and without a band: a
    mean over the seeds still running, down to one.

    Args:
        data: rows of ``trajectories.csv`` (method, epoch, modality, mean, sd, n, switch_epoch);
            values may be strings, as read back from the CSV.
        path: the PNG to write.
        methods: panel order (default: the order of first appearance in ``data``).
    """
    from matplotlib.ticker import MaxNLocator

    rows = [{**d, "epoch": int(float(d["epoch"])), "mean": float(d["mean"]), "sd": float(d["sd"] or "nan"),
             "n": int(float(d["n"])),
             "switch_epoch": "" if d["switch_epoch"] in ("", None) else float(d["switch_epoch"])} for d in data]
    present = list(dict.fromkeys(d["method"] for d in rows))
    methods = [m for m in (methods or present) if m in present]
    mods = list(dict.fromkeys(d["modality"] for d in rows))  # canonical order (_trajectory_data)
    fig, axes = _figure(min(len(methods), 3), math.ceil(len(methods) / 3))
    for ax, m in zip(axes, methods):
        mine = [d for d in rows if d["method"] == m]
        seeds = max(d["n"] for d in mine)
        for i, mod in enumerate(mods):
            pts = [d for d in mine if d["modality"] == mod]
            full = [d for d in pts if d["n"] == seeds]
            tail = [d for d in pts if d["n"] < seeds]
            x, y = [d["epoch"] for d in full], [d["mean"] for d in full]
            sd = [d["sd"] if math.isfinite(d["sd"]) else 0.0 for d in full]
            ax.plot(x, y, color=_color(i), label=mod, marker="o", markersize=2.5)
            ax.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], color=_color(i),
                            alpha=0.15, linewidth=0)
            if tail:  # joined to the last epoch of every seed
                joined = full[-1:] + tail
                ax.plot([d["epoch"] for d in joined], [d["mean"] for d in joined], color=_color(i), linestyle=":",
                        marker="o", markersize=1.5, label=f"fewer than {seeds} seeds" if i == 0 else None)
        if mine[0]["switch_epoch"] != "":
            ax.axvline(mine[0]["switch_epoch"], color="k", linestyle="--", linewidth=1, label="phase switch")
        title = _wrap_name(m, f"({seeds} seed{'s' if seeds > 1 else ''})")
        ax.set_title(title, **({"fontsize": 10} if "\n" in title else {}))  # fontsize=None is 10 pt too, not the default
        ax.set(xlabel="epoch", ylabel="Shapley share (train batches)", ylim=(0, 1))
        # whole epochs: 2 epochs had ticks 0.0, 0.2, ..., 1.0, and one epoch -0.045 ... 0.045 (reviews)
        epochs = sorted({d["epoch"] for d in mine})
        if len(epochs) > 1:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_xticks(epochs)
        ax.legend(fontsize=7)
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    _save(fig, path, rows[0] if rows else None)  # the CSV's dataset and protocol columns, when it has them


def _wrap_name(name: str, suffix: str = "", width: int = 34) -> str:
    """``name`` then ``suffix`` in lines of at most ``width`` characters, ``name`` broken after its
    ``_`` (a variant's folder name, ``pase_model.context-true_pase.gate-false (5 seeds)``, ran past
    its panel of a three-column figure and was cut); ``suffix`` is never split, and a part longer
    than ``width`` keeps its own line."""
    lines = [""]
    for part in [p for p in re.findall(r"[^_]*_?", name) if p] + ([f" {suffix}"] if suffix else []):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append(part.lstrip())
        else:
            lines[-1] += part
    return "\n".join(lines)


def _grouped_bars(ax, groups: Sequence[str], series: Dict[str, List[Tuple[float, float]]], ylabel: str,
                  order: Sequence[str]) -> None:
    """One bar per series and group; a series' colour is its method's place in ``order`` (the
    comparison's methods), so a method keeps its colour in every figure whichever methods it shows."""
    width = 0.8 / max(len(series), 1)
    for j, (name, vals) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v[0] for v in vals], width, yerr=[v[1] if math.isfinite(v[1]) else 0.0 for v in vals],
               capsize=2, color=_color(list(order).index(name) if name in order else j), label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def _bar_plot(stem: str, figdir: Path, groups: Sequence[str], table: Dict[str, Dict[str, Dict[str, float]]],
              ylabel: str, group_key: str, extra: Dict[str, Any], order: Sequence[str],
              context: Optional[Dict[str, Any]] = None) -> str:
    rows = [{**(context or {}), "method": m, group_key: g, **extra, "mean": d["mean"], "sd": d["sd"], "n": d["n"]}
            for m, per in table.items() for g, d in per.items()]
    write_csv(figdir / f"{stem}.csv", rows)
    fig, axes = _figure(1, width=max(4.5, 1.1 * len(groups) + 2))
    _grouped_bars(axes[0], groups, {m: [(per[g]["mean"], per[g]["sd"]) for g in groups] for m, per in table.items()},
                  ylabel, order)
    _save(fig, figdir / f"{stem}.png", context)
    return stem


def _plot_noise(s: Dict[str, Any], figdir: Path) -> Optional[str]:
    rows = [{**_context(s), "method": m, "modality": c["modality"], "sigma": float(c["sigma"]), "metric": s["headline"],
             "mean": c["mean"], "sd": c["sd"], "n": c["n"]}
            for m in s["methods"] for c in s["conditions"].get(m, []) if c["kind"] == "noise"]
    if not rows:
        return None
    write_csv(figdir / "robustness_noise.csv", rows)
    mods = list(dict.fromkeys(r["modality"] for r in rows))
    fig, axes = _figure(len(mods))
    for ax, mod in zip(axes, mods):
        for j, m in enumerate(s["methods"]):
            pts = sorted((r for r in rows if r["method"] == m and r["modality"] == mod), key=lambda r: r["sigma"])
            if pts:
                ax.errorbar([p["sigma"] for p in pts], [p["mean"] for p in pts],
                            yerr=[p["sd"] if math.isfinite(p["sd"]) else 0.0 for p in pts], color=_color(j),
                            marker="o", markersize=3, capsize=2, label=m)
        ax.set(title=f"noise on {mod}", xlabel="sigma (x train std)", ylabel=s["headline"])
        ax.legend(fontsize=7)
    _save(fig, figdir / "robustness_noise.png", _context(s))
    return "robustness_noise"


#: the report's figures (figures/<stem>.png and .csv), all rewritten by every report
FIGURES = ("trajectories", "shapley_test", "probes", "effect_probes", "robustness_noise", "robustness_missing")


def _plots(s: Dict[str, Any], figdir: Path) -> Dict[str, str]:
    """stem -> caption of every figure written."""
    made: Dict[str, str] = {}
    if _plot_trajectories(s, figdir):
        made["trajectories"] = "Contribution trajectories: Shapley share of each modality per epoch (training " \
                               "batches), mean ± SD over seeds; dotted: epochs that only some seeds reached (early " \
                               "stopping; the mean of those still running, n in the CSV); dashed: phase switch " \
                               "(mean epoch over seeds)."
    mods = s.get("modalities") or []
    if "neg_loss" in s.get("shares", {}) and mods:
        keep = lambda table: {m: table[m] for m in s["reported"]}  # noqa: E731
        made[_bar_plot("shapley_test", figdir, mods, keep(s["shares"]["neg_loss"]), "Shapley share (test split)",
                       "modality", {"utility": "neg_loss"}, s["methods"], _context(s))] = "Test-split Shapley shares (negative-loss utility)."
        made[_bar_plot("probes", figdir, mods, keep(s["probes"]["values"]), f"probe {s['probes']['metric']}",
                       "modality", {"metric": s["probes"]["metric"]}, s["methods"], _context(s))] = \
            "Linear probes of each frozen encoder (test split), mean ± SD over seeds."
        if s.get("effect_probes"):
            made[_bar_plot("effect_probes", figdir, mods, keep(s["effect_probes"]["values"]), "effect probe R^2",
                           "modality", {"metric": "effect_r2"}, s["methods"], _context(s))] = \
                "Effect probes (ground truth): R^2 of each frozen encoder's linear probe of its own modality's " \
                "effect, test split, mean ± SD over seeds."
    if _plot_noise(s, figdir):
        made["robustness_noise"] = f"{s['headline']} under Gaussian noise on one modality (sigma in units of each " \
                                   "feature's train-split std)."
    missing = {m: {c["condition"]: c for c in s.get("conditions", {}).get(m, []) if c["kind"] == "missing"}
               for m in s["methods"]}
    conds = list(dict.fromkeys(c for per in missing.values() for c in per))
    if conds:
        made[_bar_plot("robustness_missing", figdir, conds, {m: per for m, per in missing.items() if per},
                       s["headline"], "condition", {"metric": s["headline"]}, s["methods"], _context(s))] = \
            f"{s['headline']} with only the listed modalities present (the others masked at the fusion input)."
    return made


# ---------------------------------------------------------------------------- documents
_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}"
        "img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}")


def _inline(text: str) -> str:
    """Escape ``text`` and render the Markdown it may hold: **bold** and `code`."""
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _html(title: str, header: List[str], tables: List[Table], figures: Dict[str, str]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts += [f"<p>{_inline(p)}</p>" for p in header]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f"<figure><img src='figures/{stem}.png' alt='{e(stem)}'><figcaption>{e(cap)} "
                  f"(data: <a href='figures/{stem}.csv'>{stem}.csv</a>)</figcaption></figure>"
                  for stem, cap in figures.items()]
    for t in tables:
        parts.append(f"<h2>{e(t['title'])}</h2>" + (f"<p>{e(t['note'])}</p>" if t.get("note") else ""))
        parts.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in t["headers"]) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in t["rows"])
                     + "</table>")
    return "\n".join(parts + ["</body></html>"]) + "\n"


def load_comparison(out_dir: str | Path) -> Dict[str, Any]:
    """``summarize`` of a comparison folder with at least one finished run (else one
    FileNotFoundError saying what the folder is and what to run)."""
    out = user_path(out_dir)
    if not (out / "runs").is_dir():
        if (out / "metrics.json").is_file():  # pase compare refuses a training run's folder as --out
            raise FileNotFoundError(f"{out} is the folder of one training run, not a comparison; pase report reads "
                                    "the --out folder of pase compare (pase evaluate reads a run)")
        raise FileNotFoundError(f"{out} holds no comparison (no runs/ folder); run 'pase compare --out {out}' first")
    s = summarize(out)
    if not s["reported"]:  # an empty report with exit 0 would read as a comparison that found nothing
        detail = "; ".join(f"{r['method']} seed {r['seed']}: {r['error']}" for r in s["runs"][:3])
        raise FileNotFoundError(
            f"{out} holds no finished run to report" + (f" ({len(s['runs'])} run(s): {detail})" if detail else
                                                      " (runs/ is empty)")
            + f"; run or continue the comparison with 'pase compare --out {out}' first")
    return s


def report(out_dir: str | Path, summary: Optional[Dict[str, Any]] = None,
           rewrite_summary: Optional[bool] = None) -> Dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` (+ CSV) for a comparison folder, and
    rewrite its ``summary.md``, ``.csv`` and ``.json`` from the same numbers (a run trained longer or
    an edited ``metrics.json`` since the last ``pase compare`` left the two files disagreeing: a review).

    Args:
        out_dir: the ``--out`` folder of ``pase compare``.
        summary: its ``load_comparison`` (read here when not given).
        rewrite_summary: rewrite ``summary.*`` (default: only when ``summary`` is read here, so a caller's
            own summary, of some seeds or another level, never replaces the folder's; ``pase report`` passes
            True, or False while a comparison runs in the folder).

    Returns:
        name -> path of every file written ("report.md", "report.html", "summary.md", "summary.csv" and
        "summary.json" when rewritten, "<stem>.png", "<stem>.csv").

    Raises:
        FileNotFoundError: ``out_dir`` holds no comparison (no ``runs/`` folder) or no finished run.
    """
    out = user_path(out_dir)  # the folder compare(out_dir="~/x") wrote
    s = summary if summary is not None else load_comparison(out)
    figdir = out / "figures"
    for stem in FIGURES:  # a figure an earlier report drew and this one does not (fewer diagnoses) must go
        for suffix in (".png", ".csv"):
            (figdir / f"{stem}{suffix}").unlink(missing_ok=True)
    figures = _plots(s, figdir) if "stats" in s else {}
    rewrite = summary is None if rewrite_summary is None else rewrite_summary
    if rewrite:
        write_summary(s, out)  # the summary a script reads holds the numbers of this report
    tables = summary_tables(s)
    title = f"PaSE comparison report: {s.get('dataset', '')}, protocol {s.get('protocol', 'n/a')}"
    md = [f"# {title}", *_header(s), f"Methods: {', '.join(s['methods'])}."]
    for stem, cap in figures.items():
        md.append(f"![{stem}](figures/{stem}.png)\n\n*{cap}* Data: [figures/{stem}.csv](figures/{stem}.csv)")
    md += [_md_table(t) for t in tables]
    atomic_write_text(out / "report.md", "\n\n".join(md) + "\n")
    atomic_write_text(out / "report.html", _html(title, _header(s) + [f"Methods: {', '.join(s['methods'])}."],
                                                 tables, figures))
    files = {name: out / name for name in ("report.md", "report.html") +
             (("summary.md", "summary.csv", "summary.json") if rewrite else ())}
    for stem in figures:
        files.update({f"{stem}.png": figdir / f"{stem}.png", f"{stem}.csv": figdir / f"{stem}.csv"})
    return files
