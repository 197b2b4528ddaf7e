"""Every baseline trains end to end through the public API and logs its modulation per epoch."""

import csv
import math

import pytest

import pase.methods.agm  # noqa: F401  (registers "agm")
import pase.methods.ogm_ge  # noqa: F401  (registers "ogm_ge")
import pase.methods.pmr  # noqa: F401  (registers "pmr")
from pase.config import Config, apply_overrides
from pase.training import train


@pytest.mark.parametrize("method, key", [("ogm_ge", "ogm_coeff_text"), ("agm", "agm_coeff_text"),
                                         ("pmr", "pmr_rho_text")])
def test_two_epochs_finite(tmp_path, method, key):
    cfg = apply_overrides(Config(), [f"method={method}", "data.options.sizes=[128,32,32]", "train.max_epochs=2",
                                     "train.progress_bar=false", "model.d_model=16", "model.hidden=32"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result["method"] == method and result["test"]
    bad = {k: v for k, v in result["test"].items() if not math.isfinite(v)}
    assert not bad, f"non-finite test metrics: {bad}"
    with open(tmp_path / "run" / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(math.isfinite(float(r[f"diag/{key}"])) for r in rows)
