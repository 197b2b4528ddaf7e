"""Does ``torch.compile`` help PaSE's small per-step ops? Eager against compiled, on this CPU.

    python benchmarks/compile_probe.py [--step] [--whole] [--encoders]

1. One Sinkhorn iteration: the body of ``pase.ot.sinkhorn_log`` on the (P, K, K) = (6, 2, 2)
   problem of a PaSE step with three modalities and sign classes.
2. PaSE's per-step extras, forward and backward, at the shapes of a real-MOSI step (B 64, M 3,
   D 64, K 2): prototype similarities, confidences, gate scores and weights, PCL from the
   similarities, batch class centroids and the OT alignment loss (the library's own functions,
   composed as ``FusionModel.forward`` and ``PaSE.loss`` do; no EMA, no Shapley pass, no SGM).
3. With ``--step`` (needs ``../shared/data/mosi-bclstm``): whole real-MOSI training steps of late
   fusion, PaSE, and PaSE with its forward extras (similarities, confidences, gate scores) and its
   loss extras (PCL, centroids, OT) each compiled as one graph, interleaved per batch; prints the
   first epoch's time (compilation included) and the median step times and ratios.
4. With ``--whole`` (needs ``../shared/data/mosi-bclstm``): whole real-MOSI training steps of late
   fusion and of PaSE, each eager and each with its forward pass and loss (``model(batch)`` and
   ``method.loss``: encoders, head, PaSE's parts, the EMA of the banks, the Shapley pass) compiled
   as one ``torch.compile``d function and Adam's step compiled too (backward runs the compiled
   backward graph); interleaved per batch; prints the compile time of each, the graph breaks and
   the median step times and ratios (the route "the whole step as one graph" of BENCHMARKS.md).
5. With ``--encoders``: MOSI-shaped sequence steps (512 training samples, Transformer encoders)
   of PaSE eager against PaSE with every encoder compiled in place (``nn.Module.compile``), the
   part that dominates a sequence step; two passes over the batches, interleaved per batch.

Prints the compile time and the median microseconds per call (1 thread).
"""

import argparse
import contextlib
import statistics
import sys
import time

import torch

from pase.config import PaseConfig
from pase.fusion import GateScorer, prototype_confidence, prototype_gates
from pase.ot import ot_alignment_loss_stacked
from pase.prototypes import class_centroids, pcl_from_logits, prototype_logits


def body(log_u, Mr, log_a, log_b):
    log_v = log_b - torch.logsumexp(Mr + log_u.unsqueeze(-1), dim=-2)
    log_u = log_a - torch.logsumexp(Mr + log_v.unsqueeze(-2), dim=-1)
    return log_u, log_v


def forward_extras(h, protos, init, gate: GateScorer, tau: float = 0.1):
    """(M, B, K) prototype similarities and (B, M) gate scores, as ``FusionModel.forward``: the
    gate's own ``scores`` (a re-derived formula timed a two-term gate where the default,
    ``pase.gate_inputs=confidence``, has one, so ``--step`` compared two different models; review)."""
    z = prototype_logits(h, protos, tau, init)  # (M, B, K)
    return z, gate.scores(h, prototype_confidence(z, init))


def loss_extras(h, z, classes, protos, init):
    """PCL and OT losses, as ``PaSE.loss`` (default weights and OT settings)."""
    pcl = pcl_from_logits(z, classes, init).mean()
    cents, here = class_centroids(h, classes, protos.shape[1])
    ot, _ = ot_alignment_loss_stacked(cents, protos, here & init, reg=0.05, alpha=0.1, beta=0.05, solver="auto")
    return pcl, ot


def extras(stacked, protos, init, classes, gate):
    """PaSE's extras of one step: (B, M) gate weights, PCL loss, OT loss."""
    h = stacked.transpose(0, 1)  # (M, B, D)
    z, scores = forward_extras(h, protos, init, gate)
    return (prototype_gates(scores), *loss_extras(h, z, classes, protos, init))


def _real_mosi(flag: str):
    """(workloads module, bundle, training batches) of real MOSI on the CPU, or None (printed why)."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import workloads as W
    from workers import _batches

    bundle = W.load_dataset("real_mosi")
    if bundle is None:
        print(f"{flag}: {W.MOSI_BCLSTM} is absent")
        return None
    return W, bundle, _batches(bundle, "train", 0, 0, torch.device("cpu"))[0]


def whole_steps() -> None:
    """Real-MOSI steps: late fusion, PaSE eager, PaSE with its extras compiled (two graphs)."""
    from pase.methods.base import task_loss
    from pase.methods.pase import prototype_targets
    from pase.models.fusion_model import FusionOutput
    from pase.prototypes import update_banks

    loaded = _real_mosi("--step")
    if loaded is None:
        return
    W, bundle, batches = loaded
    cpu, ac = torch.device("cpu"), contextlib.nullcontext()
    late, pase, fast = (W.Run(v, bundle, "real_mosi", cpu) for v in ("late_fusion", "pase", "pase"))
    fwd_c, loss_c = torch.compile(forward_extras), torch.compile(loss_extras)

    def compiled_step(batch):  # PaSE's step (forward, loss, EMA, tracking, SGM) with two compiled graphs
        m, meth = fast.model, fast.method
        reps = m.encode(batch)
        stacked = torch.stack([reps[k] for k in m.modalities], dim=-2)  # (B, M, D)
        protos, init = m.bank_snapshot()
        h = stacked.transpose(0, 1)
        z, scores = fwd_c(h, protos, init, m.gate, m.tau)
        weights = m.fusion_weights(scores, None, stacked.shape[0], cpu, stacked.dtype)
        logits = m.fused_logits(stacked, weights)
        out = FusionOutput(logits, reps, weights, dict(zip(m.modalities, z.unbind(0))), stacked, z, scores,
                           (protos, init))
        classes = prototype_targets(batch.target, meth.task, meth.pc.binning)
        pcl, ot = loss_c(h, z, classes, protos, init)
        loss = task_loss(logits, batch.target, meth.task, meth.loss_kind) + meth.pc.lambda_pcl * pcl \
            + meth.pc.lambda_ot * ot
        update_banks([m.banks[k] for k in m.modalities], h, classes)
        meth.track(m, batch, out)
        fast.opt.zero_grad(set_to_none=True)
        loss.backward()
        meth.before_optimizer_step(m, fast.opt)
        fast.opt.step()

    t0 = time.perf_counter()
    for b in batches:
        compiled_step(b)
    print(f"whole steps: first compiled epoch {time.perf_counter() - t0:.1f} s ({len(batches)} batches, "
          "compilation included)")
    steps = {"late_fusion": lambda b: late.step(b, ac), "pase": lambda b: pase.step(b, ac), "pase_compiled": compiled_step}
    times = {k: [] for k in steps}
    for _ in range(6):
        for b in batches:
            for k, f in steps.items():
                t0 = time.perf_counter()
                f(b)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print("whole steps, median ms (x late fusion): " +
          ", ".join(f"{k} {v:.2f} ({v / med['late_fusion']:.2f} x)" for k, v in med.items()))


def compiled_whole_steps() -> None:
    """Real-MOSI steps of late fusion and PaSE, eager and with forward + loss and Adam compiled."""
    loaded = _real_mosi("--whole")
    if loaded is None:
        return
    W, bundle, batches = loaded
    cpu = torch.device("cpu")
    batches = [b for b in batches if b.target.shape[0] == batches[0].target.shape[0]]  # one shape: no recompiles
    runs = {f"{v}{tag}": W.Run(v, bundle, "real_mosi", cpu) for tag in ("", "_compiled") for v in ("late_fusion", "pase")}

    def make(run, compiled):
        def fwd_loss(batch):
            return run.method.loss(run.model, batch, run.model(batch))[0]

        f = torch.compile(fwd_loss) if compiled else fwd_loss
        opt_step = torch.compile(run.opt.step) if compiled else run.opt.step

        def step(batch):
            loss = f(batch)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.method.before_optimizer_step(run.model, run.opt)
            opt_step()
        return step

    import torch._dynamo as dynamo
    dynamo.config.recompile_limit = 64  # two compiled runs share fwd_loss's code object; see the recompiles
    dynamo.config.accumulated_recompile_limit = 512
    dynamo.config.allow_unspec_int_on_nn_module = True  # the per-batch counters of the Shapley accumulators
    steps = {k: make(r, k.endswith("_compiled")) for k, r in runs.items()}
    for k in steps:
        if k.endswith("_compiled"):
            counters = dynamo.utils.counters
            counters.clear()
            t0 = time.perf_counter()
            for b in batches[:3]:
                steps[k](b)
            breaks = sum(counters["graph_break"].values())
            print(f"{k}: compile and 3 steps {time.perf_counter() - t0:.1f} s, {breaks} graph break(s), "
                  f"{sum(counters['stats'].get(x, 0) for x in ('unique_graphs',))} graph(s)")
            t0 = time.perf_counter()
            for b in batches:
                steps[k](b)
            print(f"{k}: the rest of the first epoch {time.perf_counter() - t0:.1f} s (recompiles included), "
                  f"{counters['stats'].get('unique_graphs', 0)} graph(s) in all")
        else:
            for b in batches[:3]:
                steps[k](b)
    times = {k: [] for k in steps}
    names = list(steps)
    for rep in range(6):
        for i, b in enumerate(batches):
            k0 = (rep + i) % len(names)
            for k in names[k0:] + names[:k0]:
                t0 = time.perf_counter()
                steps[k](b)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print("whole steps, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"pase / late fusion: eager {med['pase'] / med['late_fusion']:.2f} x, both compiled "
          f"{med['pase_compiled'] / med['late_fusion_compiled']:.2f} x, compiled pase / eager late fusion "
          f"{med['pase_compiled'] / med['late_fusion']:.2f} x")


def encoder_steps() -> None:
    """MOSI-shaped PaSE steps: eager encoders against ``nn.Module.compile``d encoders."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import workloads as W
    from workers import _batches

    cpu, ac = torch.device("cpu"), contextlib.nullcontext()
    bundle = W.load_dataset("mosi_shaped", [512, 64, 64])
    runs = {"eager": W.Run("pase", bundle, "mosi_shaped", cpu), "compiled": W.Run("pase", bundle, "mosi_shaped", cpu)}
    for enc in runs["compiled"].model.encoders.values():
        enc.compile()
    batches, _, _ = _batches(bundle, "train", 0, 0, cpu)
    t0 = time.perf_counter()
    for b in batches[:2]:
        runs["compiled"].step(b, ac)
    print(f"encoders compiled: compile and two steps {time.perf_counter() - t0:.1f} s")
    for b in batches[:2]:
        runs["eager"].step(b, ac)
    times = {k: [] for k in runs}
    for _ in range(2):
        for i, b in enumerate(batches):
            for k in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                t0 = time.perf_counter()
                runs[k].step(b, ac)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"MOSI-shaped PaSE step: eager {med['eager']:.1f} ms, encoders compiled {med['compiled']:.1f} ms "
          f"({med['compiled'] / med['eager']:.2f} x)")


def bench(f, n=2000):
    for _ in range(50):
        f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv=None) -> int:
    # argparse, not tests of sys.argv: a typo (--stpe) or --help ran the default probe and exited 0 (review)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Parts 1 and 2 always run; the flags add parts 3 to 5 (the module docstring).")
    ap.add_argument("--step", action="store_true", help="whole real-MOSI steps, PaSE's extras compiled (part 3)")
    ap.add_argument("--whole", action="store_true", help="whole real-MOSI steps, forward + loss and Adam compiled "
                                                          "(part 4)")
    ap.add_argument("--encoders", action="store_true", help="MOSI-shaped PaSE steps, encoders compiled (part 5)")
    a = ap.parse_args(argv)
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
    gate = GateScorer(["text", "audio", "vision"], d, inputs=PaseConfig().gate_inputs)  # PaSE's default gate
    with torch.no_grad():
        gate.weight.copy_(torch.randn(m, d + 1, generator=g))
        gate.bias.copy_(torch.randn(m, generator=g))
    mix = torch.randn(b, m, generator=g)

    def step(f):
        w, pcl, ot = f(stacked, protos, init, classes, gate)
        ((w * mix).sum() + pcl + ot).backward()

    compiled = torch.compile(extras, dynamic=False)
    t0 = time.perf_counter()
    step(compiled)
    print(f"PaSE extras, forward + backward: compile {time.perf_counter() - t0:.1f} s; "
          f"eager {bench(lambda: step(extras), 1000):.0f} us, compiled {bench(lambda: step(compiled), 1000):.0f} us")
    if a.step:
        whole_steps()
    if a.whole:
        compiled_whole_steps()
    if a.encoders:
        encoder_steps()
    return 0


if __name__ == "__main__":
    sys.exit(main())
