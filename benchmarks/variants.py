"""Train configuration variants x seeds into OUT/runs/<variant>/seed<seed>/ (finished runs are skipped).

    python benchmarks/variants.py CONFIG|- OUT VARIANTS SEEDS [KEY=VALUE ...]

VARIANTS is a comma list of ``method[:key=value[:key=value]]`` (for example
``pase,pase:pase.sgm=false,late_fusion:model.context=true``), SEEDS a comma list, CONFIG a YAML file
or ``-`` for the built-in benchmark; trailing KEY=VALUE pairs apply to every run. A run folder of
another configuration (another CONFIG or other trailing pairs into the same OUT) stops the script;
an interrupted run is resumed. Tables: ``python benchmarks/results_tables.py --ablation OUT``.
"""

import sys
from pathlib import Path

from pase.config import apply_overrides, config_difference, load_config
from pase.training import train
from results_tables import variant_folder  # a sibling script: benchmarks/ is on sys.path when run


def main(argv) -> int:
    config, out, variants, seeds = argv[0], Path(argv[1]), argv[2].split(","), [int(s) for s in argv[3].split(",")]
    extra = argv[4:]
    for seed in seeds:
        for variant in variants:
            method, *sets = variant.split(":")
            run = out / "runs" / variant_folder(variant) / f"seed{seed}"
            cfg = apply_overrides(load_config(None if config == "-" else config, extra),
                                  [f"method={method}", *sets, f"train.seed={seed}", "train.progress_bar=false"])
            if (run / "config.yaml").is_file():  # the folder name leaves out CONFIG and the trailing KEY=VALUE
                diff = config_difference(run / "config.yaml", cfg)
                if diff:
                    raise SystemExit(f"variants.py: {run} holds another configuration ({diff}); pass a new OUT")
            if (run / "metrics.json").exists():
                continue
            try:
                result = train(cfg, run, resume=(run / "config.yaml").is_file(), quiet=True)
                print(variant, seed, {k: round(v, 4) for k, v in result["test"].items()}, flush=True)
            except Exception as e:  # noqa: BLE001 - report and continue with the other variants
                print(variant, seed, "FAILED", e, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
