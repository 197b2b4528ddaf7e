"""Does ``torch.compile`` help PaSE's small per-step ops? Times one Sinkhorn iteration, eager and compiled.

    python benchmarks/compile_probe.py

The iteration is the body of ``pase.ot.sinkhorn_log`` on the (P, K, K) = (6, 2, 2) problem of a
PaSE step with three modalities and sign classes. Prints the compile time and the mean
microseconds per call over 2,000 calls of each (1 thread).
"""

import time

import torch


def body(log_u, Mr, log_a, log_b):
    log_v = log_b - torch.logsumexp(Mr + log_u.unsqueeze(-1), dim=-2)
    log_u = log_a - torch.logsumexp(Mr + log_v.unsqueeze(-2), dim=-1)
    return log_u, log_v


def bench(f, n=2000):
    for _ in range(50):
        f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    torch.set_num_threads(1)
    x, Mr, la = torch.zeros(6, 2), torch.randn(6, 2, 2), torch.full((6, 2), -0.69)
    compiled = torch.compile(body, dynamic=False)
    t0 = time.perf_counter()
    compiled(x, Mr, la, la)
    print(f"compile {time.perf_counter() - t0:.1f} s")
    print(f"one iteration: eager {bench(lambda: body(x, Mr, la, la)):.1f} us, "
          f"compiled {bench(lambda: compiled(x, Mr, la, la)):.1f} us")


if __name__ == "__main__":
    main()
