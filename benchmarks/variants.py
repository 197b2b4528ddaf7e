"""Train configuration variants x seeds into OUT/runs/<variant>/seed<seed>/ (finished runs are skipped).

    python benchmarks/variants.py CONFIG|- OUT VARIANTS SEEDS [KEY=VALUE ...]

VARIANTS is a comma list of ``method[:key=value[:key=value]]`` (for example
``pase,pase:pase.sgm=false,late_fusion:model.context=true``), SEEDS a comma list, CONFIG a YAML file
or ``-`` for the built-in benchmark; trailing KEY=VALUE pairs apply to every run.

Every variant's configuration is checked before anything trains, so a typo in the last one stops
the script at once. OUT/shared.yaml records the configuration CONFIG and the trailing pairs give
(the part the folder names leave out): a later call with other shared settings is refused, so
``results_tables.py --ablation OUT`` never pairs runs of two settings. A run folder of another
configuration stops the script too; an interrupted run is resumed. A run that fails leaves
FAILED.txt in its folder (the next call retries it) and the script exits 1.
Tables: ``python benchmarks/results_tables.py --ablation OUT``.
"""

import sys
import traceback
from pathlib import Path

from pase.config import ConfigError, apply_overrides, config_difference, load_config, save_config
from pase.io import atomic_write_text
from pase.methods import METHODS
from pase.training import train
from results_tables import variant_folder  # a sibling script: benchmarks/ is on sys.path when run


def _configs(config: str, variants, seeds, extra, script: str = "variants.py"):
    """(shared config, [(variant, seed, run folder name, config)]) or SystemExit naming the bad variant."""
    try:
        shared = load_config(None if config == "-" else config, extra)
    except ConfigError as e:
        raise SystemExit(f"{script}: the shared settings: {e}") from None
    runs = []
    for seed in seeds:
        for variant in variants:
            method, *sets = variant.split(":")
            try:  # a method typo trained the variants before it, then failed (a review)
                METHODS.get(method)
            except KeyError as e:
                raise SystemExit(f"{script}: variant {variant!r}: {e.args[0]} (nothing was trained)") from None
            try:
                cfg = apply_overrides(shared, [f"method={method}", *sets, f"train.seed={seed}",
                                               "train.progress_bar=false"])
            except ConfigError as e:
                raise SystemExit(f"{script}: variant {variant!r}: {e} (nothing was trained)") from None
            runs.append((variant, seed, cfg))
    return shared, runs


def check_shared(out: Path, shared, script: str = "variants.py") -> None:
    """``out/shared.yaml`` records the shared settings of its runs; other ones stop the script (their runs
    would land in the same table)."""
    record = out / "shared.yaml"
    if record.is_file():
        diff = config_difference(record, shared)
        if diff:
            raise SystemExit(f"{script}: {out} holds runs of other shared settings ({diff}; {record}); pass a "
                             "new OUT, or the same CONFIG and trailing KEY=VALUE pairs")
    else:
        save_config(shared, record)


def check_run(run: Path, cfg, script: str = "variants.py") -> None:
    """A run folder of another configuration stops the script (its name leaves out CONFIG and the
    trailing KEY=VALUE)."""
    if (run / "config.yaml").is_file():
        diff = config_difference(run / "config.yaml", cfg)
        if diff:
            raise SystemExit(f"{script}: {run} holds another configuration ({diff}); pass a new OUT")


def main(argv) -> int:
    if len(argv) < 4:
        raise SystemExit(__doc__)
    config, out, variants = argv[0], Path(argv[1]), argv[2].split(",")
    try:
        seeds = [int(s) for s in argv[3].split(",")]
    except ValueError:
        raise SystemExit(f"variants.py: SEEDS {argv[3]!r} is not a comma list of integers") from None
    shared, runs = _configs(config, variants, seeds, argv[4:])
    check_shared(out, shared)
    failed = 0
    for variant, seed, cfg in runs:
        run = out / "runs" / variant_folder(variant) / f"seed{seed}"
        check_run(run, cfg)
        if (run / "metrics.json").exists():
            continue
        (run / "FAILED.txt").unlink(missing_ok=True)  # a retry
        try:
            result = train(cfg, run, resume=(run / "config.yaml").is_file(), quiet=True)
            print(variant, seed, {k: round(v, 4) for k, v in result["test"].items()}, flush=True)
        except Exception as e:  # noqa: BLE001 - recorded; the other variants continue
            failed += 1
            run.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run / "FAILED.txt", f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
            print(variant, seed, "FAILED", e, f"(recorded in {run / 'FAILED.txt'})", flush=True)
    if failed:
        print(f"variants.py: {failed} run(s) failed; rerun the same command to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
