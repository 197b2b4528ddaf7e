"""Settings off the default path keep the guarantees of the default one.

Context models (``model.context=true``) read the other utterances of a video, and their training
loader deals whole videos into batches (``GroupBatchSampler``): nothing the run chooses may depend
on the test split, and no prediction on a test label (the layer sees features only). A run resumed
from its folder must equal an uninterrupted one with whole-video batches, with worker processes
(which fetch indices as soon as an iterator exists), with sampled Shapley values (the permutation
generator's state is in the checkpoint) and in float64 (the checkpoint is loaded before Lightning
converts the module, so the module is built in float64 first).
"""

from __future__ import annotations

import pytest
import torch

from pase.config import Config, apply_overrides, load_config
from pase.data import register_data
from pase.data.contract import DataBundle, MultimodalDataset
from pase.training import run as run_mod
from pase.training import train

import tiny

#: PaSE with its phase switch inside the run, whole-video batches of about 16 utterances
SETS = tiny.TINY + ["model.context=true", "method=pase", "train.batch_size=16", "pase.switch_patience=1",
                    "pase.switch_max_epoch=1", "train.early_stop_patience=100"]


def _with_test(bundle: DataBundle, features=None, target=None) -> DataBundle:
    """``bundle`` with the test split's features and / or labels replaced, its videos kept."""
    te = bundle.splits["test"]
    test = MultimodalDataset(features or te.features, te.target if target is None else target, te.ids,
                             groups=te.groups, positions=te.positions, split="test")
    return DataBundle(bundle.name, bundle.task, dict(bundle.splits, test=test), bundle.info)


def _bundle() -> DataBundle:
    return tiny.grouped(run_mod.load_bundle(load_config(None, tiny.TINY)))


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_context_run_ignores_the_test_split_and_never_reads_a_test_label(tmp_path):
    bundle = _bundle()
    g = torch.Generator().manual_seed(7)
    te = bundle.splits["test"]
    scrambled = _with_test(bundle, features={m: 10 * torch.randn(x.shape, generator=g) for m, x in te.features.items()},
                           target=-3 * te.target + 1)
    register_data("test_context_clean")(lambda **_: bundle)
    register_data("test_context_scrambled")(lambda **_: scrambled)
    cfg = apply_overrides(Config(), SETS + ["train.max_epochs=4"])
    a = train(apply_overrides(cfg, ["data.source=test_context_clean"]), tmp_path / "a", quiet=True)
    b = train(apply_overrides(cfg, ["data.source=test_context_scrambled"]), tmp_path / "b", quiet=True)
    assert a["diagnostics"]["switch_epoch"] is not None  # the phase switch happened inside the run
    assert (a["best_epoch"], a["valid"], a["diagnostics"]) == (b["best_epoch"], b["valid"], b["diagnostics"])
    assert (tmp_path / "a" / "log.csv").read_text() == (tmp_path / "b" / "log.csv").read_text()
    wa, wb = _weights(tmp_path / "a" / "checkpoints" / "best.ckpt"), _weights(tmp_path / "b" / "checkpoints" / "best.ckpt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test"] != b["test"]  # the scrambled split was used, for the test metrics only

    # the same model on the test videos with other labels: every prediction identical
    relabelled = _with_test(bundle, target=te.target.flip(0))
    ckpt = tmp_path / "a" / a["checkpoint"]
    preds = {}
    for name, data in (("clean", bundle), ("relabelled", relabelled)):
        module, c, data = run_mod.load_checkpoint(ckpt, bundle=data)
        preds[name] = run_mod._outputs(module, data, c, "test")
    assert preds["clean"][0] == preds["relabelled"][0]  # ids, in the split's order
    assert torch.equal(preds["clean"][1], preds["relabelled"][1])
    assert not torch.equal(preds["clean"][2], preds["relabelled"][2])


@pytest.mark.parametrize("sets", [
    ["model.context=true"], ["model.context=true", "train.num_workers=1"], ["model.context=false", "train.num_workers=1"],
    ["model.context=false", "pase.shapley_exact_max_m=2", "pase.shapley_permutations=4"],
    ["model.context=false", "train.precision=64-true"]],
    ids=["context", "context-worker", "worker", "sampled-shapley", "float64"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, sets):
    """Lightning creates a resumed run's first training iterator before it sets the epoch (whole-video
    batches dealt then, or indices a worker process fetched then, came from epoch 0's order), and it
    loads the checkpoint before converting the module to float64; the permutation generator of
    sampled Shapley values restarted from its seed. Each case failed before its fix."""
    bundle = _bundle()
    source = f"test_resume_{tmp_path.name}"  # one per case
    register_data(source)(lambda **_: bundle)
    sets = SETS + sets + [f"data.source={source}"]
    straight = train(apply_overrides(Config(), sets + ["train.max_epochs=4"]), tmp_path / "straight", quiet=True)
    train(apply_overrides(Config(), sets + ["train.max_epochs=2"]), tmp_path / "run", quiet=True)
    longer = train(apply_overrides(Config(), sets + ["train.max_epochs=4"]), tmp_path / "run", resume=True, quiet=True)
    assert straight["epochs_run"] == 4 and straight["diagnostics"]["switch_epoch"] is not None
    for key in ("best_epoch", "epochs_run", "valid", "test", "diagnostics"):
        assert longer[key] == straight[key], key
    assert (tmp_path / "run" / "log.csv").read_text() == (tmp_path / "straight" / "log.csv").read_text()
    wa, wb = _weights(tmp_path / "run" / "checkpoints" / "last.ckpt"), _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
