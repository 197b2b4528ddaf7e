"""The shared pieces of every method: the running mean behind per-step and per-epoch sums, and
the per-epoch tracking log."""

import torch

from pase.methods.base import RunningMean


def test_running_mean_is_the_mean_of_what_was_added_and_resets(gen):
    acc = RunningMean()
    assert acc.pop() is None  # nothing added: no mean, not zeros
    xs = [torch.randn(2, 3, generator=gen) for _ in range(5)]
    for x in xs:
        acc.add(x.clone())
    torch.testing.assert_close(acc.pop(), torch.stack(xs).mean(0))
    assert acc.pop() is None  # pop resets
    acc.add(xs[0].clone())
    torch.testing.assert_close(acc.pop(), xs[0])


def test_epoch_diagnostics_are_batch_means_of_the_tracked_values(gen):
    """track() on two batches, then the epoch log holds the mean Shapley values, shares and
    weights of the two (each checked against the batch's own values)."""
    from pase.config import Config, apply_overrides
    from pase.data.registry import create_data
    from pase.methods.base import create_method
    from pase.models.build import build_model
    from pase.shapley import exact_shapley, shapley_shares

    bundle = create_data("synthetic", sizes=[32, 8, 8])
    cfg = apply_overrides(Config(), ["method=late_fusion"])
    model = build_model(cfg, bundle)
    method = create_method("late_fusion", cfg, bundle.task, model)
    want = []
    for idx in (range(0, 16), range(16, 32)):
        batch = bundle.splits["train"].__getitems__(list(idx))
        out = model(batch)
        values = exact_shapley(method.coalition_utilities(model, out, batch.target))
        want.append((values, shapley_shares(values)))
        method.track(model, batch, out)
    logs = method.epoch_diagnostics(model)
    for i, m in enumerate(model.modalities):
        assert abs(logs[f"shapley_{m}"] - float((want[0][0][i] + want[1][0][i]) / 2)) < 1e-6
        assert abs(logs[f"share_{m}"] - float((want[0][1][i] + want[1][1][i]) / 2)) < 1e-6
        assert logs[f"weight_{m}"] == 1.0  # late fusion: every present modality weighs 1
    assert method.epoch_diagnostics(model) == {}  # the sums were reset


def test_sampled_shapley_generator_state_is_checkpointed_and_old_checkpoints_load():
    """Above ``shapley_exact_max_m`` the permutation generator's state is in the state dict (a resumed
    run draws the same permutations); a state dict from before it existed loads with the seed's state."""
    from pase.methods.base import PermutationGenerator

    gen = PermutationGenerator(5)
    torch.randperm(10, generator=gen.generator)  # advance it
    state = gen.state_dict()
    assert set(state) == {"_extra_state"}
    fresh = PermutationGenerator(5)
    fresh.load_state_dict(state)
    assert torch.equal(torch.randperm(10, generator=fresh.generator), torch.randperm(10, generator=gen.generator))
    old = PermutationGenerator(5)
    old.load_state_dict({}, strict=True)  # a checkpoint without the key
    assert torch.equal(torch.randperm(10, generator=old.generator),
                       torch.randperm(10, generator=torch.Generator().manual_seed(5)))
