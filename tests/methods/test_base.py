"""The shared pieces of every method: the running mean behind per-step and per-epoch sums, and
the per-epoch tracking log."""

import pytest
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


def test_epoch_diagnostics_are_sample_weighted_means_of_the_tracked_values(gen):
    """track() on a batch of 24 and one of 8, then the epoch log holds the Shapley values, shares
    and weights of the two averaged with weights 24 and 8 (each checked against the batch's own
    values; a plain mean over batches counted a last batch of one sample as much as a full one)."""
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
    for idx in (range(0, 24), range(24, 32)):
        batch = bundle.splits["train"].__getitems__(list(idx))
        out = model(batch)
        values = exact_shapley(method.coalition_utilities(model, out, batch.target))
        want.append((values, shapley_shares(values)))
        method.track(model, batch, out)
    logs = method.epoch_diagnostics(model)
    for i, m in enumerate(model.modalities):
        assert abs(logs[f"shapley_{m}"] - float((24 * want[0][0][i] + 8 * want[1][0][i]) / 32)) < 1e-6
        assert abs(logs[f"share_{m}"] - float((24 * want[0][1][i] + 8 * want[1][1][i]) / 32)) < 1e-6
        assert logs[f"weight_{m}"] == 1.0  # late fusion: every present modality weighs 1
    assert method.epoch_diagnostics(model) == {}  # the sums were reset


def test_epoch_diagnostics_under_distributed_are_over_every_ranks_samples(monkeypatch):
    """Under DDP log.csv's Shapley values, shares and weights were rank 0's half of the epoch for every
    method but PaSE (a review: late fusion's text share 0.658 against 0.772 in one process). Another rank
    is simulated by an all_reduce that adds its weighted sums: this rank tracked 10 samples of A, the
    other 30 of B, and the log is (10 A + 30 B) / 40."""
    import torch.distributed as dist

    from pase.config import Config
    from pase.data.registry import create_data
    from pase.methods.base import create_method
    from pase.models.build import build_model

    bundle = create_data("synthetic", sizes=[32, 8, 8])
    cfg = Config()
    model = build_model(cfg, bundle)
    method = create_method("late_fusion", cfg, bundle.task, model)
    a, b = torch.arange(9.0).reshape(3, 3), -torch.arange(9.0).reshape(3, 3) / 7
    method._epoch.add(a, 10)
    seen = []

    def all_reduce(t, op=None):
        seen.append(op)
        t += torch.cat([b.reshape(-1) * 30, torch.tensor([30.0])])

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    logs = method.epoch_diagnostics(model)
    want = (10 * a + 30 * b) / 40
    assert seen == [dist.ReduceOp.SUM]
    for key, row in zip(("shapley", "share", "weight"), want):
        for i, m in enumerate(model.modalities):
            assert abs(logs[f"{key}_{m}"] - float(row[i])) < 1e-6, (key, m)


@pytest.mark.parametrize("method_name", ["late_fusion", "pase"])
def test_logged_shares_under_distributed_are_the_global_batchs(method_name, monkeypatch):
    """Under DDP the logged shares of every method but PaSE were means of each rank's half-batch shares,
    not the shares of the global batch one process logs (a review: late fusion's text share 0.604 against
    0.454); the values agreed, being linear. Now every method all-reduces the coalition utilities per
    batch (once: PaSE's own reduction is the base's). Another rank holding 12 of a global batch of 32 is
    simulated by an all_reduce that adds its weighted sums: its utilities per batch, its tracked rows at
    the end of the epoch."""
    import torch.distributed as dist

    from pase.config import Config
    from pase.data.registry import create_data
    from pase.methods.base import create_method, task_loss
    from pase.models.build import build_model
    from pase.shapley import exact_shapley, shapley_shares

    torch.manual_seed(0)
    bundle = create_data("synthetic", sizes=[32, 8, 8])
    cfg = Config(method=method_name)
    model = build_model(cfg, bundle)
    method = create_method(method_name, cfg, bundle.task, model)
    train = bundle.splits["train"]
    glob, mine, theirs = (train.__getitems__(list(idx)) for idx in (range(32), range(20), range(20, 32)))
    # one Adam step: an untrained model's values are all below the shares' floor (shares 1/3 each), and
    # after a few steps text takes nearly all; here the shares are spread, so a wrong mean shows
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    task_loss(model(glob).logits, glob.target, bundle.task).backward()
    opt.step()
    model.eval()  # no dropout: the halves' outputs are the global batch's rows
    with torch.no_grad():
        out_glob, out_mine, out_theirs = model(glob), model(mine), model(theirs)
    # one process with the global batch (no torch.distributed: unchanged, bit for bit)
    u_glob = method.coalition_utilities(model, out_glob, glob.target)
    values = exact_shapley(u_glob)
    shares = shapley_shares(values)
    u_theirs = method.coalition_utilities(model, out_theirs, theirs.target)
    w_mine, w_theirs = (o.weights.mean(0, dtype=values.dtype) for o in (out_mine, out_theirs))
    # the mean of the halves' shares (what was logged before) is not the global batch's: the test tells them apart
    half = [shapley_shares(exact_shapley(method.coalition_utilities(model, o, b.target)))
            for o, b in ((out_mine, mine), (out_theirs, theirs))]
    assert ((20 * half[0] + 12 * half[1]) / 32 - shares).abs().max() > 1e-2
    # the other rank tracks the global batch's values and shares (it all-reduces too) and its own weights
    their_rows = torch.stack([values, shares, w_theirs])
    seen = []

    def all_reduce(t, op=None):
        seen.append(t.numel())
        if t.numel() == u_theirs.numel() + 1:  # a batch's utilities
            t += torch.cat([u_theirs * 12, torch.tensor([12.0])]).to(t.dtype)
        else:  # the epoch's tracked sums
            t += torch.cat([their_rows.reshape(-1) * 12, torch.tensor([12.0])]).to(t.dtype)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    method.track(model, mine, out_mine)
    logs = method.epoch_diagnostics(model)
    for i, m in enumerate(model.modalities):
        # 1e-5: float32 sums of the two halves against the one-process batch mean
        assert abs(logs[f"share_{m}"] - float(shares[i])) < 1e-5, (m, logs[f"share_{m}"], float(shares[i]))
        assert abs(logs[f"shapley_{m}"] - float(values[i])) < 1e-5, m
        assert abs(logs[f"weight_{m}"] - float((20 * w_mine[i] + 12 * w_theirs[i]) / 32)) < 1e-5, m
    assert seen == [u_theirs.numel() + 1, 3 * len(model.modalities) + 1]  # one collective per batch, one per epoch


def test_pase_ot_cost_under_distributed_is_over_every_ranks_steps(monkeypatch):
    """PaSE's logged OT cost was rank 0's steps' mean and its marginal error rank 0's largest under DDP (a
    review); another rank is simulated as above: this rank had 2 steps of cost 0.2, the other 6 of 0.8, so
    the log is (2 * 0.2 + 6 * 0.8) / 8 = 0.65, and the other rank's larger marginal error wins."""
    import torch.distributed as dist

    from pase.config import Config
    from pase.data.registry import create_data
    from pase.methods.base import create_method
    from pase.models.build import build_model

    bundle = create_data("synthetic", sizes=[32, 8, 8])
    cfg = Config(method="pase")
    model = build_model(cfg, bundle)
    method = create_method("pase", cfg, bundle.task, model)
    method._ot_cost.add(torch.tensor(0.2))
    method._ot_cost.add(torch.tensor(0.2))
    method.ot_err_max.fill_(1e-6)

    def all_reduce(t, op=None):
        if op == dist.ReduceOp.MAX:
            t.copy_(torch.maximum(t, torch.tensor(3e-5)))
        else:  # the packed weighted sums and count of batch_weighted_mean
            t += torch.tensor([0.8 * 6, 6.0])

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    logs = method.end_validation_epoch(model, 0, True)
    assert abs(logs["ot_cost"] - 0.65) < 1e-6 and abs(logs["ot_marginal_err"] - 3e-5) < 1e-9
    assert float(method.ot_err_max) == 0.0  # reset for the next epoch, this rank's own buffer


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
                       torch.randperm(10, generator=PermutationGenerator(5).generator))


def test_private_random_streams_are_not_the_global_one():
    """The permutation generator and OGM-GE's noise were seeded with train.seed itself, so they replayed
    torch's global generator (seed_everything(train.seed): the initial weights). Each named stream's
    seed comes from (seed, name) and differs from the seed, from other names and from other seeds."""
    from pase.methods.base import PermutationGenerator, stream_seed

    perms = torch.stack([torch.randperm(8, generator=PermutationGenerator(5).generator) for _ in range(2)])
    assert torch.equal(perms[0], perms[1])  # deterministic in the seed
    drawn = torch.rand(2000, generator=PermutationGenerator(5).generator)
    glob = torch.rand(2000, generator=torch.Generator().manual_seed(5))
    assert abs(float(torch.corrcoef(torch.stack([drawn, glob]))[0, 1])) < 0.1
    seeds = {stream_seed(s, name) for s in (0, 1, 5, 1111, 1112) for name in ("ogm_ge_noise", "shapley_permutations")}
    assert len(seeds) == 10 and all(0 <= x < 2 ** 63 for x in seeds) and not seeds & {0, 1, 5, 1111, 1112}


def test_an_eval_mode_loss_changes_no_state_and_equals_the_training_loss():
    """method.loss in eval mode (a validation loss in one's own loop) gives the training step's loss
    and leaves every buffer alone: PaSE's prototypes moved toward the validation labels and its
    SGM coefficients were queued into the next step; PMR's prototypes and AGM's running scores too."""
    import pytest

    from pase.config import Config, apply_overrides
    from pase.data.registry import create_data
    from pase.methods.base import create_method
    from pase.models.build import build_model

    bundle = create_data("synthetic", sizes=[48, 16, 16])

    def sums(method):  # every RunningMean of the method, plain attributes or in a dict: its count
        found = {k: v.n for k, v in vars(method).items() if isinstance(v, RunningMean)}
        found.update({f"{k}.{j}": w.n for k, v in vars(method).items() if isinstance(v, dict)
                      for j, w in v.items() if isinstance(w, RunningMean)})
        return found

    for name in ("late_fusion", "pase", "ogm_ge", "agm", "pmr"):
        torch.manual_seed(0)
        cfg = apply_overrides(Config(), [f"method={name}", "model.dropout=0", "pase.switch_max_epoch=0"])
        model = build_model(cfg, bundle)
        method = create_method(name, cfg, bundle.task, model)
        train = bundle.splits["train"].__getitems__(list(range(24)))
        model.train()
        method.loss(model, train, model(train))  # one training batch: prototypes initialised, scores started
        method.before_optimizer_step(model, torch.optim.SGD(model.parameters(), lr=0.0))
        state = lambda: {k: v.clone() for k, v in [*model.state_dict().items(), *method.state_dict().items()]  # noqa: E731
                         if torch.is_tensor(v)}
        before = state()
        counted = sums(method)
        valid = bundle.splits["valid"].__getitems__(list(range(16)))
        model.eval()
        with torch.no_grad():
            measured, _ = method.loss(model, valid, model(valid))
        after = state()
        changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
        assert changed == [], (name, changed)
        # the running sums outside the state dict (tracked values, queued coefficients, epoch statistics)
        assert sums(method) == counted, (name, sums(method), counted)
        model.train()
        with torch.no_grad():
            trained, _ = method.loss(model, valid, model(valid))
        assert float(measured) == pytest.approx(float(trained), rel=1e-6), name
        moved = [k for k, v in state().items() if not torch.equal(v, before[k])]
        assert bool(moved) == (name in ("pase", "agm", "pmr")), (name, moved)  # train mode learns, as it should


@pytest.mark.parametrize("kind, auto", [("classification", "cross-entropy"), ("multilabel", "binary cross-entropy")])
def test_a_regression_loss_refusal_names_the_loss_auto_is_for_the_targets(kind, auto):
    """task_loss is binary cross-entropy for multilabel targets; the refusal recommended "cross-entropy"
    (review)."""
    from pase.config import Config, apply_overrides
    from pase.methods.base import Method

    cfg = apply_overrides(Config(), ["train.loss=mse"])
    with pytest.raises(ValueError, match=rf"^train.loss='mse' is a regression loss, but this data's targets are "
                                         rf"{kind}: use train.loss=auto \({auto}\)$"):
        Method.check_config(cfg, kind)
