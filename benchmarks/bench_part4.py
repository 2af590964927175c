"""Part IV benchmark: Sinkhorn's value and gradient against POT, memory, batching, side by side.

Run:  python benchmarks/bench_part4.py [--device cpu|cuda] [--repeat N] [--quick]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting.)

Prints four tables, each measured in one run (best of N), as ratios:

1. log-domain Sinkhorn with the envelope gradient (ad_lib.sinkhorn_gradients.
   sinkhorn_loss, chapter 14) against POT's ot.solve(..., method="sinkhorn_log",
   grad="envelope") on the same float64 tensors: n = m = 500, eps = 0.05, C
   scaled to [0, 1], exactly 100 iterations, forward and backward. Goals: at
   most 1.0x POT's time, values within 1e-6;
2. the same problem: the peak memory of the forward and backward pass with
   grad="unrolled" (autograd through every iteration) against
   grad="envelope". Goal: at least 30x less for the envelope;
3. batched: 64 problems of 100 x 100 in one call of ad_lib.sinkhorn.sinkhorn
   (Xie's parallel Sinkhorn, chapter 13) against a loop of 64 calls of POT's
   ot.sinkhorn(..., method="sinkhorn_log"), the same 100 iterations each;
4. on CUDA only: one log-domain iteration (ad_lib.sinkhorn.log_step) against
   the time of reading and writing C once (C.clone()), the memory-bandwidth
   floor of any iteration that reads C: the floor as a fraction of the
   iteration's time. Without a GPU the table says so and measures nothing.

Peak memory is measured as in bench_part2 (torch.cuda.max_memory_allocated on
CUDA, ad_lib.runtime.TensorMemory on the CPU).
"""

import sys
import warnings

import ot
import torch
from bench_part2 import benchmark_arguments, best_times, mib, peak_bytes, ratio_row

from ad_lib.sinkhorn import log_step, sinkhorn
from ad_lib.sinkhorn_gradients import sinkhorn_loss

F64 = torch.float64
EXACTLY = 1e-300  # a tolerance no marginal error reaches: every run does its max_iter iterations


def problem(n, m, device, seed=0, batch=()):
    """Histograms a (*batch, n), b (*batch, m) and a cost C (*batch, n, m) in [0, 1], in float64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(*batch, n, generator=g, dtype=F64) + 0.1
    b = torch.rand(*batch, m, generator=g, dtype=F64) + 0.1
    x, y = torch.rand(*batch, n, 2, generator=g, dtype=F64), torch.rand(*batch, m, 2, generator=g, dtype=F64)
    C = torch.cdist(x, y) ** 2
    C = C / C.amax(dim=(-2, -1), keepdim=True)
    return [t.to(device) for t in (a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True), C)]


def quiet(fn):
    """fn without the warnings of a run stopped at its iteration count (ours and POT's say it did not converge)."""
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return run


# 1. and 2. -------------------------------------------------------------------------------------

def bench_envelope(device, repeat, n, eps, iterations):
    a, b, C = problem(n, n, device)

    def ours(grad="envelope"):
        Cg = C.clone().requires_grad_(True)
        value = sinkhorn_loss(a, b, Cg, eps, grad=grad, max_iter=iterations, tol=EXACTLY, on_failure="ignore")
        value.backward()
        return value.detach(), Cg.grad

    def pots():
        Cg = C.clone().requires_grad_(True)
        value = ot.solve(Cg, a, b, reg=eps, method="sinkhorn_log", max_iter=iterations, tol=0.0, grad="envelope").value
        value.backward()
        return value.detach(), Cg.grad

    (v_ours, g_ours), (v_pot, g_pot) = quiet(ours)(), quiet(pots)()
    times = best_times([quiet(ours), quiet(pots)], repeat)
    memory = {grad: peak_bytes(quiet(lambda grad=grad: ours(grad)), device) for grad in ("unrolled", "envelope")}
    return {"times": times, "values": (float(v_ours), float(v_pot)),
            "plan gap": float((g_ours - g_pot).abs().max()), "memory": memory}


# 3. ---------------------------------------------------------------------------------------------

def bench_batched(device, repeat, problems, n, eps, iterations):
    a, b, C = problem(n, n, device, seed=1, batch=(problems,))

    def batched():
        return sinkhorn(a, b, C, eps, max_iter=iterations, tol=EXACTLY, on_failure="ignore").plan

    def loop():
        return torch.stack([ot.sinkhorn(a[k], b[k], C[k], eps, method="sinkhorn_log", numItermax=iterations,
                                        stopThr=0.0) for k in range(problems)])

    gap = float((quiet(batched)() - quiet(loop)()).abs().max())
    return best_times([quiet(batched), quiet(loop)], repeat), gap


# 4. ---------------------------------------------------------------------------------------------

def bench_bandwidth(device, repeat, n, eps):
    a, b, C = problem(n, n, device, seed=2)
    f = torch.zeros_like(a)

    def iteration():
        log_step(f, a, b, C, eps)
        torch.cuda.synchronize()

    def copy():
        C.clone()
        torch.cuda.synchronize()

    return best_times([iteration, copy], repeat)


def main(argv=None):
    _, args, device, name = benchmark_arguments(__doc__, argv)
    quick = args.quick
    print(f"Part IV benchmark on {device} ({name}), torch {torch.__version__}, POT {ot.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}\n")
    missed = []

    n, eps, iterations = (60, 0.05, 20) if quick else (500, 0.05, 100)
    got = bench_envelope(device, args.repeat, n, eps, iterations)
    (ours, pots), (v_ours, v_pot) = got["times"], got["values"]
    print(f"1. Log-domain Sinkhorn, n = m = {n}, eps = {eps}, {iterations} iterations, float64, forward + backward "
          "(envelope): ad_lib against POT's ot.solve. Goals: at most 1.0x, values within 1e-6")
    print(f"   {'':<34} {'ours (ms)':>10} {'POT (ms)':>10} {'ratio':>8}")
    print(ratio_row("sinkhorn_loss vs ot.solve", ours, pots))
    print(f"   values: ours {v_ours:.12f}, POT {v_pot:.12f}, gap {abs(v_ours - v_pot):.1e}; "
          f"gradients in C (the plans) differ by at most {got['plan gap']:.1e}")
    if ours > pots:
        missed.append(f"sinkhorn_loss takes {ours / pots:.2f}x POT's time, over 1.0x")
    if abs(v_ours - v_pot) > 1e-6:
        missed.append(f"the values differ by {abs(v_ours - v_pot):.1e}, over 1e-6")

    unrolled, envelope = got["memory"]["unrolled"], got["memory"]["envelope"]
    print(f"\n2. The same problem: peak memory of the forward and backward pass. Goal: envelope at least 30x less")
    print(f"   {'grad':<34} {'peak (MiB)':>10}")
    print(f"   {'unrolled':<34} {mib(unrolled):>10.3f}")
    print(f"   {'envelope':<34} {mib(envelope):>10.3f}")
    print(f"   unrolled against envelope: {unrolled / max(envelope, 1):.1f}x")
    if unrolled < 30 * envelope and not quick:
        missed.append(f"the envelope saves only {unrolled / max(envelope, 1):.1f}x memory, under 30x")

    problems, size = (8, 20) if quick else (64, 100)
    (batched, loop), gap = bench_batched(device, args.repeat, problems, size, eps, iterations)
    print(f"\n3. Batched: {problems} problems of {size} x {size}, {iterations} iterations each, float64: "
          "one call of ad_lib's sinkhorn against a loop of POT's")
    print(f"   {'':<34} {'ours (ms)':>10} {'POT (ms)':>10} {'ratio':>8}")
    print(ratio_row("one batched call vs a loop", batched, loop))
    print(f"   the plans differ by at most {gap:.1e}")

    print("\n4. One log-domain iteration against reading and writing C once (the memory-bandwidth floor)")
    if device.type == "cuda":
        size = 1000 if quick else 4000
        iteration, copy = bench_bandwidth(device, args.repeat, size, eps)
        print(f"   n = m = {size}, float64: iteration {1e3 * iteration:.3f} ms, C.clone() {1e3 * copy:.3f} ms: "
              f"the floor is {copy / iteration:.0%} of an iteration")
    else:
        print("   no GPU here: not measured (run with --device cuda on a machine that has one)")

    print("\nall goals met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
