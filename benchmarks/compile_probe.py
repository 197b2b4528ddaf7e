"""Does ``torch.compile`` help PaSE's small per-step ops? Eager against compiled, on this CPU.

    python benchmarks/compile_probe.py

1. One Sinkhorn iteration: the body of ``pase.ot.sinkhorn_log`` on the (P, K, K) = (6, 2, 2)
   problem of a PaSE step with three modalities and sign classes.
2. PaSE's per-step extras, forward and backward, at the shapes of a real-MOSI step (B 64, M 3,
   D 64, K 2): prototype similarities, confidences, gate scores and weights, PCL from the
   similarities, batch class centroids and the OT alignment loss (the library's own functions,
   composed as ``FusionModel.forward`` and ``PaSE.loss`` do; no EMA, no Shapley pass, no SGM).

Prints the compile time and the median microseconds per call (1 thread).
"""

import statistics
import time

import torch

from pase.fusion import prototype_confidence, prototype_gates
from pase.ot import ot_alignment_loss_stacked
from pase.prototypes import class_centroids, pcl_from_logits, prototype_logits


def body(log_u, Mr, log_a, log_b):
    log_v = log_b - torch.logsumexp(Mr + log_u.unsqueeze(-1), dim=-2)
    log_u = log_a - torch.logsumexp(Mr + log_v.unsqueeze(-2), dim=-1)
    return log_u, log_v


def extras(stacked, protos, init, classes, gate_w, gate_b):
    """PaSE's extras of one step: (B, M) gate weights, PCL loss, OT loss."""
    h = stacked.transpose(0, 1)  # (M, B, D)
    z = prototype_logits(h, protos, 0.1, init)  # (M, B, K)
    g = (h * gate_w[:, None, :-1]).sum(-1) + gate_b[:, None] + prototype_confidence(z) * gate_w[:, -1:]
    weights = prototype_gates(g.transpose(0, 1))
    pcl = pcl_from_logits(z, classes, init).mean()
    cents, here = class_centroids(h, classes, protos.shape[1])
    ot, _ = ot_alignment_loss_stacked(cents, protos, here & init, reg=0.05, alpha=0.1, beta=0.05, solver="auto")
    return weights, pcl, ot


def bench(f, n=2000):
    for _ in range(50):
        f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    torch.set_num_threads(1)
    x, Mr, la = torch.zeros(6, 2), torch.randn(6, 2, 2), torch.full((6, 2), -0.69)
    compiled = torch.compile(body, dynamic=False)
    t0 = time.perf_counter()
    compiled(x, Mr, la, la)
    print(f"Sinkhorn iteration: compile {time.perf_counter() - t0:.1f} s; "
          f"eager {bench(lambda: body(x, Mr, la, la)):.1f} us, compiled {bench(lambda: compiled(x, Mr, la, la)):.1f} us")

    g = torch.Generator().manual_seed(0)
    b, m, d, k = 64, 3, 64, 2
    stacked = torch.randn(b, m, d, generator=g, requires_grad=True)
    protos, init = torch.randn(m, k, d, generator=g), torch.ones(m, k, dtype=torch.bool)
    classes = torch.randint(0, k, (b,), generator=g)
    gate_w = torch.randn(m, d + 1, generator=g, requires_grad=True)
    gate_b = torch.randn(m, generator=g, requires_grad=True)
    mix = torch.randn(b, m, generator=g)

    def step(f):
        w, pcl, ot = f(stacked, protos, init, classes, gate_w, gate_b)
        ((w * mix).sum() + pcl + ot).backward()

    compiled = torch.compile(extras, dynamic=False)
    t0 = time.perf_counter()
    step(compiled)
    print(f"PaSE extras, forward + backward: compile {time.perf_counter() - t0:.1f} s; "
          f"eager {bench(lambda: step(extras), 1000):.0f} us, compiled {bench(lambda: step(compiled), 1000):.0f} us")


if __name__ == "__main__":
    main()
