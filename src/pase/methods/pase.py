"""PaSE: prototype calibration, OT alignment, prototype-gated fusion and Shapley gradient modulation.

The method (PASE_SPEC sections 2 and 4) as one ``Method`` whose parts switch on and off
(``pase.pcl``, ``pase.ot``, ``pase.gate``, ``pase.sgm``), so the ablation table is configuration:

* phase 1: L = L_task + lambda_pcl * L_pcl + lambda_ot * L_ot, with the model's gated fusion;
  the prototype banks take an EMA step after every batch (``PrototypeBank.update``); a multilabel
  sample with no positive label has no class (``has_class``) and enters neither PCL, the OT
  centroids nor the banks;
* phase 2 (SGM) starts when the validation monitor has not improved for ``switch_patience``
  epochs, or at ``switch_max_epoch``; never on the test split. From then on, each training batch
  scores all 2^M modality coalitions with the fused head (one batched pass over the encoder
  outputs already computed), takes exact Shapley values, shares psi_m and coefficients
  phi_m = exp(psi_min / psi_m - 1), averages them over the micro-batches of one optimiser step,
  smooths them with an EMA over steps, and multiplies the gradients of each modality's declared
  parameter group by phi_m in ``before_optimizer_step`` (shared gate and head parameters are
  left alone; gradient clipping then acts on the modulated gradients).

Shapley values are tracked in phase 1 as well (they cost one batched head pass), so the
per-epoch log shows the contribution shares before and after the switch.

Under ``torch.distributed`` the coalition utilities are averaged over the ranks (weighted by
their batch sizes, one all-reduce of 2^M + 1 numbers per batch, in ``Method.coalition_utilities``
for every method) before the Shapley values are taken, so every rank applies the same
coefficients, those a single process would compute on the global batch (the prototype banks
all-reduce their class sums the same way).
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..config import PASE_CHOICES
from ..data.contract import Batch, TaskSpec
from ..models.build import prototype_classes
from ..ot import ot_alignment_loss_stacked
from ..prototypes import centroids_from_sums, class_means, labels_to_classes, pcl_from_logits, pcl_loss, update_banks
from ..shapley import scale_gradients, sgm_coefficients
from .base import Method, RunningMean, batch_weighted_mean, register_method, task_loss

__all__ = ["PaSE", "prototype_targets", "has_class", "schedule_warning"]


def prototype_targets(target: Tensor, task: TaskSpec, binning: str) -> Tensor:
    """Class ids for the prototypes: binned regression labels, classes, or the argmax label (a
    multilabel row with no positive label gets class 0: leave it out with :func:`has_class`)."""
    if task.kind == "regression":
        return labels_to_classes(target, binning)
    if task.kind == "multilabel":
        return target.argmax(-1)
    return target.long()


def has_class(target: Tensor, task: TaskSpec) -> Optional[Tensor]:
    """(B,) bool: the samples that have a prototype class, or None when all do.

    A multilabel sample with no positive label (no entry above 0.5) has none: the argmax of its
    all-zero row put it in class 0, whose prototype it moved. Regression and classification samples
    always have a class.

    Example:
        >>> has_class(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), TaskSpec("multilabel", 2, "demo"))
        tensor([ True, False])
    """
    if task.kind != "multilabel":
        return None
    return (target > 0.5).any(-1)


def schedule_warning(cfg, modalities: Optional[Sequence[str]] = None) -> Optional[str]:
    """Why the configured schedule may never train an SGM epoch, or None.

    ``modalities``: the run's modalities, when known. With one modality PaSE stays in phase 1
    whatever the schedule (the model's warning says so), so no advice on the schedule is given: it
    advised raising train.max_epochs or lowering pase.switch_*, which cannot start phase 2 (a review).

    The switch after ``pase.switch_patience`` stale validation epochs and early stopping after
    ``train.early_stop_patience`` count the same epochs (early stopping needs at least one: a
    patience of 0 stops as 1 does, as Lightning counts); with the first not below the second, the
    run stops when (or before) the switch would come, so phase 2 can start only at
    ``pase.switch_max_epoch``, and never if that is not below ``train.max_epochs``. Epoch 0 always
    improves, so the first SGM epoch is ``switch_patience + 1`` at the earliest (0: epoch 1): a run
    of no more epochs never trains one either.
    """
    pc, tc = cfg.pase, cfg.train
    single = modalities is not None and len(modalities) == 1
    if cfg.method != "pase" or not pc.sgm or pc.switch_max_epoch <= 0 or single:
        return None
    stop = max(tc.early_stop_patience, 1)  # the stale epochs after which early stopping ends the run
    earliest = min(pc.switch_patience + 1, pc.switch_max_epoch)  # the first SGM epoch at the earliest
    if earliest >= tc.max_epochs:
        return (f"train.max_epochs={tc.max_epochs} ends the run before its first SGM epoch could come (epoch "
                f"{earliest} at the earliest: pase.switch_patience={pc.switch_patience} stale epochs after epoch 0, "
                f"or pase.switch_max_epoch={pc.switch_max_epoch}), so phase 2 never trains; raise "
                "train.max_epochs or lower pase.switch_patience / pase.switch_max_epoch")
    if pc.switch_patience < stop or stop >= tc.max_epochs - 1:  # or early stopping cannot end the run early
        return None
    later = (f"only at pase.switch_max_epoch={pc.switch_max_epoch}" if pc.switch_max_epoch < tc.max_epochs
             else f"never (pase.switch_max_epoch={pc.switch_max_epoch} >= train.max_epochs={tc.max_epochs})")
    return (f"pase.switch_patience={pc.switch_patience} >= train.early_stop_patience={tc.early_stop_patience}: "
            f"early stopping ends the run before a stale-validation switch trains an SGM epoch, so phase 2 "
            f"starts {later}; set pase.switch_patience below {stop} or raise train.early_stop_patience")


@register_method("pase")
class PaSE(Method):
    """The PaSE training method; see the module docstring."""

    #: running averages, kept in float32 under half precision (``training.precision.keep_float32_state``)
    FLOAT32_STATE = ("coeffs", "ot_log_u", "ot_err_max")

    @classmethod
    def check_config(cls, cfg, task_kind: Optional[str] = None) -> None:
        """``Method.check_config``, and the choices PaSE reads (``pase.config.PASE_CHOICES``: the OT solver
        and gradient, the SGM target; the gate's inputs are checked by ``GateScorer``, the binning by
        ``prototype_classes``, which need the model and the task)."""
        super().check_config(cfg, task_kind)
        for key in ("ot_solver", "ot_gradient", "sgm_target"):
            if getattr(cfg.pase, key) not in PASE_CHOICES[key]:
                raise ValueError(f"pase.{key}={getattr(cfg.pase, key)!r} is not one of {', '.join(PASE_CHOICES[key])}")

    def __init__(self, cfg, task: TaskSpec, model: nn.Module) -> None:
        super().__init__(cfg, task, model)
        self.pc = cfg.pase
        self.modalities = list(model.modalities)
        m = len(self.modalities)
        self.num_classes = prototype_classes(task, self.pc.binning)
        if (self.pc.pcl or self.pc.ot) and model.banks is None:
            raise ValueError("method 'pase' with pcl or ot needs a model with prototype banks (build_model)")
        # one modality: OT, the gate and SGM act between modalities, so only PCL and the task loss train;
        # SGM never starts (metrics.json reported SGM epochs whose every coefficient was 1; a review)
        self._single = m == 1
        if self._single and (self.pc.ot or self.pc.gate or self.pc.sgm):
            logging.getLogger("pase").warning(
                "method 'pase' with one modality (%s): OT alignment, the prototype gate and SGM act between "
                "modalities and do nothing here; it trains the task loss and PCL, in phase 1 throughout",
                self.modalities[0])
        # switch_max_epoch = 0: SGM from the first step (no phase 1)
        self.register_buffer("phase", torch.tensor(
            2 if self.pc.sgm and self.pc.switch_max_epoch <= 0 and not self._single else 1))
        self.register_buffer("switch_epoch", torch.tensor(0 if int(self.phase) == 2 else -1))
        self.register_buffer("stale_epochs", torch.tensor(0))
        self.register_buffer("coeffs", torch.ones(m))  # smoothed phi_m
        self.register_buffer("coeffs_started", torch.tensor(False))
        # host-side mirror of the phase buffer, so the training step never reads the device
        self._phase2 = int(self.phase) == 2
        self._coeffs_started = False  # host-side mirror of coeffs_started
        self.register_load_state_dict_post_hook(PaSE._sync_phase)
        self._pending = RunningMean()  # phi over the micro-batches of this step
        self._ot_cost = RunningMean()  # the epoch's OT transport costs
        # the epoch's largest Sinkhorn marginal error: a tensor (no sync), updated in place (one type from the
        # first step on, so train.compile never recompiles for it); not checkpointed, as the epoch sums are not
        self.register_buffer("ot_err_max", torch.zeros(()), persistent=False)
        # (P, K) log potentials of the last Sinkhorn solve, P = M (M - 1) ordered pairs: the warm
        # start of the next one (zeros: a cold start); a buffer, so a resumed run continues exactly
        self.register_buffer("ot_log_u", torch.zeros(m * (m - 1), self.num_classes))
        self._groups = None  # the model's modality parameter groups, resolved on first use

    # ------------------------------------------------------------------ losses
    def loss(self, model: nn.Module, batch: Batch, out) -> Tuple[Tensor, Dict[str, Tensor]]:
        task = task_loss(out.logits, batch.target, self.task, self.loss_kind)
        total, logs = task, {"task_loss": task.detach()}
        # a loss taken in eval mode (a validation loss in someone's own loop) is a measurement: the banks,
        # the OT warm start, the epoch's diagnostics and SGM's coefficients learn from training batches only
        learn = model.training
        if model.banks is not None:
            classes = prototype_targets(batch.target, self.task, self.pc.binning)
            # multilabel: a sample with no positive label has no class; it enters neither PCL, the OT
            # centroids nor the banks (weight 0, no host sync). None for the other task kinds
            keep = has_class(batch.target, self.task)
            # the forward pass's snapshot of the banks (M, K, D), (M, K): they take their EMA step
            # below, before backward; all M modalities go through each part as one batched call
            protos, init = out.banks if out.banks is not None else model.bank_snapshot()
            h = model.stacked_reps(out).transpose(0, 1)  # (M, B, D)
            if self.pc.pcl:
                if out.proto_stacked is not None and model.tau == self.pc.tau:  # the forward's similarities
                    l_pcl = pcl_from_logits(out.proto_stacked, classes, init, keep).mean()
                else:
                    l_pcl = pcl_loss(h, classes, protos, init, self.pc.tau, keep).mean()
                total = total + self.pc.lambda_pcl * l_pcl
                logs["pcl_loss"] = l_pcl.detach()
            stats = None
            if self.pc.ot and len(self.modalities) > 1:
                # (M, K, D) sums and (K,) counts, summed in float32 at least (the EMA's too; a bf16 h under
                # autocast is cast up, a float32 or float64 model's h is used as it is)
                stats = class_means(h.to(torch.promote_types(h.dtype, torch.float32)), classes, self.num_classes, keep)
                l_ot = self._ot_loss(stats, protos, init, learn)
                total = total + self.pc.lambda_ot * l_ot
                logs["ot_loss"] = l_ot.detach()
            if learn:
                update_banks([model.banks[m] for m in self.modalities], h, classes, stats, keep)
        if learn:
            self.track(model, batch, out)
        return total, logs

    def _ot_loss(self, stats: Tuple[Tensor, Tensor], protos: Tensor, init: Tensor, learn: bool = True) -> Tensor:
        cents, here = centroids_from_sums(*stats)  # (M, K, D) batch class centroids, (K,)
        present = here & init  # (M, K)
        on_cpu = cents.device.type == "cpu"
        # Sinkhorn starts from the previous step's potentials (the prototypes move slowly). On the
        # CPU a convergence check costs no device sync, so it stops at a tolerance there; on an
        # accelerator it runs a fixed count with no host sync.
        warm = self.ot_log_u if self.pc.ot_warm_start else None
        loss, diag = ot_alignment_loss_stacked(
            cents, protos, present, reg=self.pc.ot_reg, alpha=self.pc.alpha, beta=self.pc.beta,
            tol=1e-5 if on_cpu else 0.0,
            max_iter=self.pc.ot_max_iter if on_cpu else self.pc.ot_fixed_iter,
            grad_iters=self.pc.ot_grad_iters, init=warm, gradient=self.pc.ot_gradient, solver=self.pc.ot_solver)
        if not learn:
            return loss
        if self.pc.ot_warm_start and diag["niter"]:  # niter 0: the closed form ran, no potentials to keep
            self.ot_log_u.copy_(torch.nan_to_num(diag["log_u"], neginf=0.0))  # -inf: empty rows
        self._ot_cost.add(diag["transport"].detach())
        err = diag["marginal_err"].detach()  # 0 for the closed form
        torch.maximum(self.ot_err_max, err.to(self.ot_err_max.dtype), out=self.ot_err_max)
        return loss

    # ------------------------------------------------------------------ SGM
    def track(self, model: nn.Module, batch: Batch, out) -> Tensor:
        shares = super().track(model, batch, out)
        if self._phase2 and self.pc.sgm:
            # a batch whose coalition utilities are not finite (a diverging coalition) modulates nothing
            self._pending.add(sgm_coefficients(shares).nan_to_num_(nan=1.0, posinf=1.0, neginf=1.0))
        return shares

    @staticmethod
    def _sync_phase(module: "PaSE", incompatible_keys) -> None:
        module._phase2 = int(module.phase) == 2  # after a checkpoint restored the buffers
        module._coeffs_started = bool(module.coeffs_started)

    def before_optimizer_step(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        phi = self._pending.pop()  # mean over the micro-batches of this step
        if not self._phase2 or not self.pc.sgm or phi is None:
            return
        # EMA over steps, starting from the first step's value (the host mirror of coeffs_started
        # decides, so there is no device read)
        if self._coeffs_started:
            self.coeffs.lerp_(phi.to(self.coeffs.device, self.coeffs.dtype), 1.0 - self.pc.sgm_smoothing)
        else:
            self.coeffs.copy_(phi)
            self.coeffs_started.fill_(True)
            self._coeffs_started = True  # set once per run: Module.__setattr__ is fine here
        coeffs = self.applied_coeffs()
        check = self._groups is None  # groups resolved and validated once, then cached
        if check:
            self._groups = model.modality_parameters()
        if self.pc.sgm_target == "step":
            self._scale_steps(optimizer, coeffs)
            return
        scale_gradients(self._groups, dict(zip(self.modalities, coeffs.unbind(0))), check=check)

    def applied_coeffs(self) -> Tensor:
        """(M,) the coefficients SGM applies: the smoothed ones divided by their largest, so the
        modality that is weakest over the smoothing window keeps its full gradient (PASE_SPEC 2.5;
        smoothing alone left none at 1 when the weakest modality changed between steps: a review
        read 0.37 / 0.73 / 0.70), then floored at ``pase.sgm_min_coeff``. No host sync."""
        return (self.coeffs / self.coeffs.amax().clamp_min(torch.finfo(self.coeffs.dtype).tiny)).clamp(
            min=self.pc.sgm_min_coeff)

    def _scale_steps(self, optimizer: Optional[torch.optim.Optimizer], coeffs: Tensor) -> None:
        """``sgm_target=step``: the learning rate of modality m's optimiser groups is phi_m times
        its base rate (kept in the group as ``pase_base_lr``, so it is checkpointed with the
        optimiser). Under SGD this equals scaling the gradients; under Adam, whose step is invariant
        to a constant gradient scale, it is what still slows the dominant modality. A scheduler that
        multiplies the current rate (StepLR, MultiStepLR, ExponentialLR) moves the base rate; one that
        sets rates from its own base rates or adds to them (LambdaLR, OneCycleLR, cosine annealing)
        would cancel or distort phi (its rate is read as a base rate times the last phi): use
        ``sgm_target=grad`` with those."""
        if optimizer is None:
            raise ValueError("pase.sgm_target=step needs the optimiser: call before_optimizer_step(model, optimizer)")
        owner = {id(p): m for m, ps in self._groups.items() for p in ps}
        scaled = []
        for group in optimizer.param_groups:
            mods = {owner.get(id(p)) for p in group["params"]}
            if len(mods) == 1 and None not in mods:  # shared (gate, head) or mixed groups keep their rate
                scaled.append((group, mods.pop()))
        if not scaled:
            raise ValueError("pase.sgm_target=step scales the learning rate of optimiser groups that hold one "
                             "modality's parameters only, and this optimiser has none (one group for the whole "
                             "model?): build it from [{'params': ps} for ps in model.modality_parameters().values()] "
                             "+ [{'params': model.shared_parameters()}], or use pase.sgm_target=grad")
        phi = dict(zip(self.modalities, coeffs.tolist()))  # one host sync per optimiser step
        for group, m in scaled:
            # the base rate: the group's own at first; afterwards the one kept, unless something else (a
            # learning-rate scheduler) changed the rate set last step: then its new rate without that step's phi
            if "pase_set_lr" in group and group["lr"] != group["pase_set_lr"]:
                base = group["lr"] / group["pase_phi"]
            else:
                base = group.get("pase_base_lr", group["lr"])
            group["pase_base_lr"], group["pase_phi"] = base, phi[m]
            group["lr"] = group["pase_set_lr"] = base * phi[m]

    # ------------------------------------------------------------------ schedule and diagnostics
    def end_validation_epoch(self, model: nn.Module, epoch: int, improved: bool) -> Dict[str, float]:
        self.stale_epochs.fill_(0 if improved else int(self.stale_epochs) + 1)
        logs = self.epoch_diagnostics(model)
        logs["phase"] = float(self.phase)
        applied = self.applied_coeffs().tolist() if int(self.phase) == 2 else [1.0] * len(self.modalities)
        for i, m in enumerate(self.modalities):
            logs[f"sgm_coeff_{m}"] = float(applied[i])
            if model.banks is not None:
                logs[f"proto_sep_{m}"] = float(model.banks[m].separation())
        n_steps = self._ot_cost.n
        cost = self._ot_cost.pop()
        if cost is not None:
            # under torch.distributed over every rank's steps (rank 0's alone were logged before, as the
            # Shapley diagnostics were: a review); the marginal error is the largest any rank holds, but its
            # buffer is broadcast from rank 0 at every DDP forward, so it is mostly rank 0's (docs/reliability.md)
            logs["ot_cost"] = float(batch_weighted_mean(cost, n_steps))
            err = self.ot_err_max.clone()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(err, op=torch.distributed.ReduceOp.MAX)
            logs["ot_marginal_err"] = float(err)  # the epoch's largest
            self.ot_err_max.zero_()
        if int(self.phase) == 1 and self.pc.sgm and not self._single and (
                int(self.stale_epochs) >= self.pc.switch_patience or epoch + 1 >= self.pc.switch_max_epoch):
            self.set_phase(2, epoch + 1)
        logs["switch_epoch"] = float(self.switch_epoch)
        return logs

    def set_phase(self, phase: int, switch_epoch: Optional[int] = None) -> None:
        """Put the method in ``phase`` (1: no SGM, 2: SGM), for a hand-driven loop or a benchmark;
        ``switch_epoch`` is recorded as the first SGM epoch. Writing the ``phase`` buffer alone
        (``phase.fill_(2)``) left the step's host-side mirror in phase 1: SGM stayed off while
        ``summary()`` reported phase 2 (a review)."""
        if phase not in (1, 2):
            raise ValueError(f"phase must be 1 or 2, got {phase!r}")
        self.phase.fill_(phase)
        self._phase2 = phase == 2
        if switch_epoch is not None:
            self.switch_epoch.fill_(switch_epoch)  # the first epoch trained with SGM

    def summary(self) -> Dict[str, object]:
        return {"phase": int(self.phase), "switch_epoch": int(self.switch_epoch),
                "sgm_coeffs": dict(zip(self.modalities, map(float, self.applied_coeffs().tolist())))}
