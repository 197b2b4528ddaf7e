"""Would a hand-written backward of the two-class OT loss pay? A probe, not library code.

    python benchmarks/fused_ot_probe.py [--reps 7] [--calls 500]

PaSE's OT alignment loss with K = 2 classes runs in closed form (``pase.ot._two_class_terms``)
under plain autograd: about 90 dispatched ops forward and 80 backward at real-MOSI shapes. This
probe writes the same loss as one ``torch.autograd.Function`` with its gradient derived by hand
(dL/dcost of the transport, structure and consistency terms through p = sigmoid(.) / 2, then
through the cosine cost and the normalisation to the centroids), checks it against the library
on 200 random float64 problems (some classes absent, some pairs sharing one class or none,
regularisation 0.05 to 1), and times forward + backward of both, batch class centroids
included, at a real-MOSI step's shapes (M 3, B 64, D 64), 1 thread, median over ``--reps``.
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from pase.ot import _pair_index, ot_alignment_loss_stacked
from pase.prototypes import centroids_from_sums, class_means
from run import positive_int


class TwoClassOT(torch.autograd.Function):
    """The closed-form two-class alignment loss with a hand-written backward (centroids only)."""

    @staticmethod
    def forward(ctx, cents, protos, present, reg, alpha, beta, eps):
        src, dst, rev = _pair_index(cents.shape[0], cents.device)
        norm = cents.norm(dim=-1, keepdim=True)
        n = norm.clamp_min(eps)
        xn, yn = cents / n, F.normalize(protos, dim=-1, eps=eps)
        c = (1.0 - torch.bmm(xn.index_select(0, src), yn.index_select(0, dst).transpose(1, 2))).flatten(1)
        common = present.index_select(0, src) & present.index_select(0, dst)
        valid = common.any(-1)
        single = valid & ~common.all(-1)
        p = 0.5 * torch.sigmoid((c[:, 1] + c[:, 2] - c[:, 0] - c[:, 3]) / (2 * reg))
        q, pr, both = 0.5 - p, p.index_select(0, rev), ~single
        parts = torch.stack([torch.where(single, torch.where(common[:, 0], c[:, 0], c[:, 3]),
                                         p * (c[:, 0] + c[:, 3]) + q * (c[:, 1] + c[:, 2])),
                             both * (4 * q * q), both * (4 * (p - pr) ** 2)])
        w = valid.to(c.dtype) / valid.sum().clamp_min(1)
        means = parts @ w
        ctx.save_for_backward(xn, yn, n, norm, c, p, q, pr, w, single, common)
        ctx.meta = (reg, alpha, beta, eps)
        return means[0] + alpha * means[1] + beta * means[2]

    @staticmethod
    def backward(ctx, g):
        xn, yn, n, norm, c, p, q, pr, w, single, common = ctx.saved_tensors
        reg, alpha, beta, eps = ctx.meta
        src, dst, _ = _pair_index(xn.shape[0], xn.device)
        both = (~single).to(c.dtype)
        # dL/dp of pair i (its reverse pair has the same weight and the same shared classes)
        dp = both * ((c[:, 0] + c[:, 3] - c[:, 1] - c[:, 2]) - 8 * alpha * q + 16 * beta * (p - pr))
        dz = dp * p * (1 - 2 * p) / (2 * reg)
        one = torch.stack([common[:, 0], torch.zeros_like(single), torch.zeros_like(single), ~common[:, 0]], 1)
        dc = (torch.stack([p, q, q, p], 1) * both[:, None] + dz[:, None] * c.new_tensor([-1.0, 1.0, 1.0, -1.0])
              + (single[:, None] & one).to(c.dtype))
        dxp = torch.bmm((-(g * w)[:, None] * dc).view(-1, 2, 2), yn.index_select(0, dst))
        dxn = torch.zeros_like(xn).index_add_(0, src, dxp)
        proj = dxn - xn * (xn * dxn).sum(-1, keepdim=True)
        return torch.where(norm > eps, proj, dxn) / n, None, None, None, None, None, None


def check() -> None:
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(200):
        m, reg = (2, 3, 4)[trial % 3], (0.05, 0.1, 1.0)[trial % 3]
        cents = torch.randn(m, 2, 8, dtype=torch.float64, generator=gen)
        if trial % 5 == 0:
            cents[0, 1] = 0  # an absent class's zero centroid
        cents.requires_grad_(True)
        protos = torch.randn(m, 2, 8, dtype=torch.float64, generator=gen)
        present = torch.rand(m, 2, generator=gen) > 0.3
        ref, _ = ot_alignment_loss_stacked(cents, protos, present, reg=reg, alpha=0.1, beta=0.05, solver="auto")
        mine = TwoClassOT.apply(cents, protos, present, reg, 0.1, 0.05, 1e-8)
        g_ref, g_mine = (torch.autograd.grad(x, cents)[0] for x in (ref, mine))
        scale = max(1.0, float(g_ref.abs().max()))  # a zero centroid's gradient is 1 / eps (1e8) large
        worst = max(worst, float((ref - mine).abs().detach()), float((g_ref - g_mine).abs().max()) / scale)
    assert worst < 1e-12, worst
    print(f"hand-written backward equals autograd on 200 random problems (largest relative difference {worst:.1e})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=positive_int, default=7)
    ap.add_argument("--calls", type=positive_int, default=500)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    check()
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(3, 64, 64, generator=gen, requires_grad=True)
    classes = torch.randint(0, 2, (64,), generator=gen)
    protos, init = torch.randn(3, 2, 64, generator=gen), torch.ones(3, 2, dtype=torch.bool)

    def step(kind: str) -> None:
        cents, here = centroids_from_sums(*class_means(h, classes, 2))
        if kind == "autograd":
            loss, _ = ot_alignment_loss_stacked(cents, protos, here & init, reg=0.05, alpha=0.1, beta=0.05,
                                                solver="auto")
        elif kind == "hand-written":
            loss = TwoClassOT.apply(cents, protos, here & init, 0.05, 0.1, 0.05, 1e-8)
        else:  # the centroids alone: what neither can remove
            loss = cents.sum()
        loss.backward()

    times = {k: [] for k in ("autograd", "hand-written", "centroids only")}
    for _ in range(a.reps):
        for kind in times:
            for _ in range(a.calls // 10):
                step(kind)
            t0 = time.perf_counter()
            for _ in range(a.calls):
                step(kind)
            times[kind].append((time.perf_counter() - t0) / a.calls * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:15s} {v:.3f} ms per forward + backward (median of {a.reps}, spread "
              f"{min(times[k]):.3f} to {max(times[k]):.3f})")
    print(f"hand-written / autograd {med['hand-written'] / med['autograd']:.2f} x; saved per step "
          f"{med['autograd'] - med['hand-written']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
