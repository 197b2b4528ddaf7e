"""How many aten operations one training step dispatches: the unit of cost at utterance level.

    python benchmarks/op_count.py [--dataset real_mosi|mosi_shaped|sweep3] [--top 15]

At utterance level a step is a few hundred tiny operations and its time is per-op dispatch, not
arithmetic (benchmarks/findings.md, section 1), so the count is a load-independent proxy for the
paired time ratios of ``benchmarks/run.py``. Counts the aten calls (a ``TorchDispatchMode``) of one
training step of ``plain``, ``late_fusion`` and ``pase`` (every part on, SGM from the first step, as
in ``benchmarks/run.py``), of one exact Shapley estimate + SGM after a backward pass (the figure of
the Shapley target), and lists the source lines in ``pase`` with the most of PaSE's extra calls
(``backward/optimizer`` for the autograd engine and Adam). Deterministic: no timing.
"""

from __future__ import annotations

import argparse
import collections
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import workloads as W
from pase.methods.base import task_loss
from run import positive_int
from workers import _batches


class _Count(TorchDispatchMode):
    """Counts aten calls, by operator and by the innermost ``pase`` source line that made them."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.lines: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        frames = [f for f in traceback.extract_stack() if "/pase/" in f.filename.replace("\\", "/")]
        where = (f"{frames[-1].filename.replace(chr(92), '/').split('/pase/')[-1]}:{frames[-1].lineno} "
                 f"({frames[-1].name})" if frames else "backward/optimizer")
        self.lines[where] += 1
        return func(*args, **(kwargs or {}))


STAGES = ("forward+losses", "backward", "SGM", "optimizer")


def _count(fn) -> int:
    with _Count() as c:
        fn()
    return sum(c.ops.values())


def _stages(r, batch, ac) -> dict:
    """The calls of one step of ``r`` (a ``workloads.Run``) split as ``Run.step`` runs it."""
    out = {}

    def fwd():
        with ac:
            out["loss"] = r._forward_loss(batch)

    n_fwd = _count(fwd)
    r.opt.zero_grad(set_to_none=True)
    return dict(zip(STAGES, (n_fwd, _count(out["loss"].backward),
                             _count(lambda: r.method.before_optimizer_step(r.model, r.opt)), _count(r.opt.step))))


def _optimizer_calls(r, batches, ac) -> dict:
    """Calls of one Adam step over ``r``'s parameter groups with torch's three implementations
    (the default on the CPU is the per-parameter loop); a copy of the model, ``r`` is left as it was."""
    import copy

    res = {}
    for impl, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        twin = copy.deepcopy(r)
        twin.opt = torch.optim.Adam([{"params": g["params"]} for g in twin.opt.param_groups], lr=r.opt.defaults["lr"], **kw)
        twin.step(batches[0], ac)  # Adam's state made
        res[impl] = _stages(twin, batches[1], ac)["optimizer"]
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="real_mosi", choices=["real_mosi", "mosi_shaped", "sweep3"])
    p.add_argument("--top", type=positive_int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = W.sweep_bundle(3) if a.dataset == "sweep3" else W.load_dataset(a.dataset, (256, 64, 64))
    if bundle is None:
        raise SystemExit(f"op_count.py: {W.MOSI_BCLSTM} is absent; set PASE_MOSI_BCLSTM or pass --dataset sweep3")
    device = torch.device("cpu")
    ac = W.autocast_ctx(device, False)
    runs = {v: W.Run(v, bundle, a.dataset, device) for v in ("plain", "late_fusion", "pase")}
    batches, _, _ = _batches(bundle, "train", 3, 0, device)
    for b in batches:  # warm: prototypes initialised, Adam's state made, SGM's EMA started
        for r in runs.values():
            r.step(b, ac)
    counts = {}
    for v, r in runs.items():
        with _Count() as c:
            r.step(batches[1], ac)
        counts[v] = c
    stages = {v: _stages(r, batches[1], ac) for v, r in runs.items()}
    pase, b = runs["pase"], batches[1]
    out = pase.model(b)
    pase.opt.zero_grad(set_to_none=True)
    task_loss(out.logits, b.target, pase.task, pase.method.loss_kind).backward()
    with _Count() as extra:
        with ac:
            pase.method.track(pase.model, b, out)
        pase.method.before_optimizer_step(pase.model, pase.opt)
    total = {v: sum(c.ops.values()) for v, c in counts.items()}
    print(f"{a.dataset}: aten calls per training step (batch {b.target.shape[0]}, torch {torch.__version__}, CPU)")
    for v, n in total.items():
        print(f"  {v:12s} {n:5d}  ({n / total['late_fusion']:.2f} x late_fusion)")
    n = sum(extra.ops.values())
    print(f"  one exact Shapley estimate + SGM: {n} ({n / total['plain']:.2f} x a plain step's calls)")
    print("by stage (" + " / ".join(STAGES) + "):")
    for v, per in stages.items():
        print(f"  {v:12s} " + " / ".join(f"{per[k]:3d}" for k in STAGES))
    print(f"Adam's calls by implementation (late_fusion's {len(runs['late_fusion'].opt.param_groups)} parameter groups; "
          "`foreach` and `fused` are torch's options):")
    print("  " + ", ".join(f"{impl} {n}" for impl, n in _optimizer_calls(runs["late_fusion"], batches, ac).items()))
    extra_lines = counts["pase"].lines - counts["late_fusion"].lines
    print(f"PaSE's extra calls over late fusion by source line (top {a.top}):")
    for where, k in extra_lines.most_common(a.top):
        print(f"  {k:4d}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
