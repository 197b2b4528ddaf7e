"""Measure the fixes BENCHMARKS.md proposes, before anyone edits ``src/``.

    python benchmarks/probes.py [--threads N] [--out benchmarks/probes.md]

Each probe changes behaviour in this process only (a runtime replacement or a module attribute),
never a file under ``src/``, and times the current code against the proposed one, interleaved on
the same batches (median over repeats):

1. ``sinkhorn_warm``: ``pase.ot.sinkhorn_log`` run without autograd for ``max_iter - k``
   iterations, then ``k`` differentiable iterations from the detached potentials; the gradient
   is compared with the full 100-iteration unroll (relative L2 error, dropout off). Real MOSI.
2. ``coalition_eval``: the batched coalition pass with the fused head's dropout off (the head in
   eval mode for ``method.track``); Shapley + SGM milliseconds at M = 3, utterance level.
3. ``attention_dropout``: a MOSI-shaped plain step with the Transformer's attention-probability
   dropout off (``self_attn.dropout = 0``) and with all dropout off, against the default 0.2.
4. ``guard_foreach``: the non-finite gradient check of ``NonFiniteGuard`` with one norm per
   parameter (now) against ``torch._foreach_norm``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List

import torch

import workloads as W
from pase.methods.base import task_loss
from pase.methods.pase import prototype_targets
from pase.training.datamodule import make_loader

HERE = Path(__file__).resolve().parent
AC = contextlib.nullcontext()


def _interleaved(fns: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    """Median seconds of each fn, run in rotating order ``repeats`` times."""
    ts: Dict[str, List[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def _warm_sinkhorn(orig, k: int, stop_tol: float = 0.0):
    """Sinkhorn with ``max_iter - k`` no-grad iterations (stopping early at ``stop_tol`` if > 0,
    checked every 10 iterations: one host sync per check), then ``k`` differentiable ones."""
    def sinkhorn(a, b, M, reg, max_iter=100, tol=0.0, log=False, **_):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a float32 plateau above stop_tol is not an error here
            _, lg = orig(a.detach(), b.detach(), M.detach(), reg, max_iter=max(max_iter - k, 1),
                         tol=stop_tol or tol, log=True)
        log_a, log_b, Mr = a.log(), b.log(), -M / reg
        log_u, log_v = lg["log_u"].detach(), lg["log_v"].detach()
        for _ in range(k):
            log_v = log_b - torch.logsumexp(Mr + log_u.unsqueeze(-1), dim=-2)  # (..., K2)
            log_u = log_a - torch.logsumexp(Mr + log_v.unsqueeze(-2), dim=-1)  # (..., K1)
        plan = torch.exp(Mr + log_u.unsqueeze(-1) + log_v.unsqueeze(-2))  # (..., K1, K2)
        return (plan, {"niter": max_iter, "log_u": log_u, "log_v": log_v, "err": lg["err"]}) if log else plan
    return sinkhorn


def sinkhorn_warm(k: int = 5, repeats: int = 3) -> List[str]:
    import pase.ot as ot

    bundle = W.real_mosi()
    if bundle is None:
        return [f"- sinkhorn_warm: skipped, {W.MOSI_BCLSTM} is absent"]
    orig = ot.sinkhorn_log
    batches = list(make_loader(bundle, "train", W.BATCH_SIZE, True, 0))
    r = W.Run("pase", bundle, "real_mosi", torch.device("cpu"))
    for b in batches[:5]:
        r.step(b, AC)
    r.model.eval()  # same forward for both gradients
    b = batches[6]

    def ot_grad() -> torch.Tensor:
        out = r.model(b)
        cls = prototype_targets(b.target, bundle.task, r.cfg.pase.binning)
        snap = {m: (r.model.banks[m].prototypes.clone(), r.model.banks[m].initialized.clone())
                for m in r.method.modalities}
        r.model.zero_grad()
        r.method._ot_loss(out, cls, snap).backward()
        return torch.cat([p.grad.flatten() for p in r.model.parameters() if p.grad is not None])

    g_full = ot_grad()
    ot.sinkhorn_log = _warm_sinkhorn(orig, k)
    g_warm = ot_grad()
    ot.sinkhorn_log = orig
    rel = float((g_full - g_warm).norm() / g_full.norm())
    runs = {v: W.Run(v, bundle, "real_mosi", torch.device("cpu")) for v in ("late_fusion", "pase")}
    warm = W.Run("pase", bundle, "real_mosi", torch.device("cpu"))

    warm_tol = W.Run("pase", bundle, "real_mosi", torch.device("cpu"))
    no_ot = W.Run("pase", bundle, "real_mosi", torch.device("cpu"), extra=["pase.ot=false"])

    def epoch(run, patched: bool, stop_tol: float = 0.0):
        def go():
            ot.sinkhorn_log = _warm_sinkhorn(orig, k, stop_tol) if patched else orig
            for x in batches:
                run.step(x, AC)
            ot.sinkhorn_log = orig
        return go

    t = _interleaved({"late_fusion": epoch(runs["late_fusion"], False), "pase": epoch(runs["pase"], False),
                      "pase_warm": epoch(warm, True), "pase_warm_tol": epoch(warm_tol, True, 1e-5), "pase_no_ot": epoch(no_ot, False)},
                     4 * repeats)
    return [f"- **sinkhorn_warm** (real MOSI, {len(batches)} batches / epoch): PaSE epoch {t['pase']:.3f} s now, "
            f"{t['pase_warm']:.3f} s with 100 - {k} no-grad iterations + {k} differentiable ones "
            f"and {t['pase_warm_tol']:.3f} s when the no-grad part also stops at marginal error 1e-5 "
            f"(checked every 10 iterations); late fusion {t['late_fusion']:.3f} s, so PaSE / late fusion "
            f"{t['pase'] / t['late_fusion']:.2f} -> {t['pase_warm'] / t['late_fusion']:.2f} -> "
            f"{t['pase_warm_tol'] / t['late_fusion']:.2f} (with `pase.ot=false`, the floor of any OT fix: "
            f"{t['pase_no_ot']:.3f} s, {t['pase_no_ot'] / t['late_fusion']:.2f}); OT-loss gradient relative error of the warm start "
            f"against the full unroll {rel:.1e} (dropout off, same forward)"]


def coalition_eval(repeats: int = 60) -> List[str]:
    bundle = W.sweep_bundle(3)
    r = W.Run("pase", bundle, "sweep3", torch.device("cpu"))
    plain = W.Run("plain", bundle, "sweep3", torch.device("cpu"))
    b = next(iter(make_loader(bundle, "train", W.BATCH_SIZE, True, 0)))
    out = r.model(b)
    task_loss(out.logits, b.target, r.task).backward()

    def extra(head_eval: bool):
        def go():
            r.model.head.train(not head_eval)
            r.method.track(r.model, b, out)
            r.method.before_optimizer_step(r.model)
            r.model.head.train()
        return go

    t = _interleaved({"now": extra(False), "head_eval": extra(True), "plain": lambda: plain.step(b, AC)}, repeats)
    return [f"- **coalition_eval** (M = 3, utterance level): Shapley + SGM {t['now'] * 1e3:.2f} ms now, "
            f"{t['head_eval'] * 1e3:.2f} ms with the head's dropout off in the coalition pass; plain step "
            f"{t['plain'] * 1e3:.2f} ms ({t['now'] / t['plain']:.0%} -> {t['head_eval'] / t['plain']:.0%})"]


def attention_dropout(repeats: int = 30) -> List[str]:
    bundle = W.shaped_bundle("mosi_shaped", (256, 64, 64))
    batches = list(make_loader(bundle, "train", W.BATCH_SIZE, True, 0))
    runs = {"dropout 0.2 (now)": W.Run("plain", bundle, "mosi_shaped", torch.device("cpu")),
            "no attention-probability dropout": W.Run("plain", bundle, "mosi_shaped", torch.device("cpu")),
            "model.dropout=0": W.Run("plain", bundle, "mosi_shaped", torch.device("cpu"),
                                     extra=["model.dropout=0.0"])}
    for enc in runs["no attention-probability dropout"].model.encoders.values():
        for layer in enc.body.layers:
            layer.self_attn.dropout = 0.0
    it = iter(range(10**9))
    fns = {k: (lambda run=run: run.step(batches[next(it) % len(batches)], AC)) for k, run in runs.items()}
    t = _interleaved(fns, repeats)
    base = t["dropout 0.2 (now)"]
    return ["- **attention_dropout** (MOSI-shaped plain step, Transformer encoders): "
            + "; ".join(f"{k} {v * 1e3:.0f} ms ({v / base:.2f})" for k, v in t.items())]


def guard_foreach(repeats: int = 200) -> List[str]:
    """``NonFiniteGuard.on_before_optimizer_step``'s check: one norm per parameter vs ``_foreach_norm``."""
    out = []
    for ds, bundle in (("real MOSI", W.real_mosi()), ("MOSI-shaped", W.shaped_bundle("mosi_shaped", (64, 64, 64)))):
        if bundle is None:
            continue
        name = "real_mosi" if ds == "real MOSI" else "mosi_shaped"
        r = W.Run("late_fusion", bundle, name, torch.device("cpu"))
        r.step(next(iter(make_loader(bundle, "train", W.BATCH_SIZE, True, 0))), AC)
        grads = [p.grad for p in r.model.parameters() if p.grad is not None]
        t = _interleaved({"per_param": lambda: bool(torch.isfinite(torch.stack([g.norm() for g in grads]).sum())),
                          "foreach": lambda: bool(torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()))},
                         repeats)
        out.append(f"{ds} ({len(grads)} tensors) {t['per_param'] * 1e3:.2f} -> {t['foreach'] * 1e3:.2f} ms")
    return ["- **guard_foreach** (`NonFiniteGuard.on_before_optimizer_step`, per step): " + "; ".join(out)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "probes.md"))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    lines = ["## Probes of the proposed fixes (`benchmarks/probes.py`)", "",
             f"Measured with `python benchmarks/probes.py{f' --threads {a.threads}' if a.threads else ''}` "
             f"({torch.get_num_threads()} thread(s), load average {W.load_average()}); runtime replacements in "
             "the probe's process only, `src/` unchanged; medians of interleaved repeats.", ""]
    for probe in (sinkhorn_warm, coalition_eval, attention_dropout, guard_foreach):
        print(f"[probes] {probe.__name__} ...", file=sys.stderr, flush=True)
        lines += probe()
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
