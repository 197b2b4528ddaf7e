"""``competition.probe_deficit``: joint vs alone probes, and the probe metric of the task."""

import pytest

import pase.evaluation.competition as competition
from eval_setup import OVERRIDES
from pase.config import Config, ConfigError, apply_overrides


def test_deficit_is_alone_minus_joint_for_every_probe_metric(tmp_path):
    cfg = apply_overrides(Config(), OVERRIDES + ["train.max_epochs=1"])
    table = competition.probe_deficit(cfg, modalities=["audio"], out_dir=tmp_path)
    row = table["audio"]
    assert row["deficit"] == pytest.approx(row["alone"] - row["joint"])
    assert row["joint"] == row["by_metric"]["acc2"]["joint"]  # regression: acc2 by default
    assert set(row["by_metric"]) >= {"acc2", "corr", "effect_r2", "effect_acc"}
    assert "Has0_acc_2" in table["__fused__"]
    # the same call again keeps the finished runs (it stopped with a traceback: the folder held files)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")}
    assert len(stamps) == 2 and competition.probe_deficit(cfg, modalities=["audio"], out_dir=tmp_path) == table
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")} == stamps
    with pytest.raises(ConfigError, match=r"joint holds a finished run of another configuration \(train.lr: "):
        competition.probe_deficit(apply_overrides(cfg, ["train.lr=0.5"]), modalities=["audio"], out_dir=tmp_path)
    # a modality typo is named before anything trains (it failed after the joint run)
    with pytest.raises(ValueError, match=r"modality 'audoi' is not one of the data's \(text, audio, vision\)"):
        competition.probe_deficit(cfg, modalities=["audoi"], out_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_classification_probes_are_scored_by_accuracy(tmp_path, monkeypatch):
    """A classification task's probes report "acc", not "acc2"; a metric it lacks is refused
    before any unimodal model is trained."""
    trained = []

    def fake(cfg, out):
        trained.append(out.name)
        return {"metrics": {"test": {"WA": 0.5}}, "probe": {m: {"acc": 0.5 + 0.1 * ("alone" in out.name)}
                                                             for m in (cfg.data.modalities or ["text", "audio"])}}

    monkeypatch.setattr(competition, "trained_probes", fake)
    table = competition.probe_deficit(Config(), out_dir=tmp_path)
    assert table["audio"]["deficit"] == pytest.approx(0.1) and trained == ["joint", "alone_audio"]
    trained.clear()
    with pytest.raises(ValueError, match="probe metric 'corr' is not one of this task's probe metrics: acc"):
        competition.probe_deficit(Config(), out_dir=tmp_path, metric="corr")
    assert trained == ["joint"]
