"""Chapter 15 benchmark: entropic Wasserstein barycenters against POT, and the hand-derived backward pass against
unrolled autograd, side by side.

Run:  python benchmarks/bench_barycenter.py [--device cpu|cuda] [--repeat N] [--quick]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting.)

The problem: the barycenter of 4 random histograms on a 64 x 64 grid (n = 4096) with equal weights, the squared
Euclidean cost on [0, 1]^2, eps = 4e-3, log domain, exactly 200 iterations (tol=0; POT with stopThr=0), in float32.
A dense cost C is 4096 x 4096 (64 MiB in float32, and a log-domain half-step builds K = 4 such matrices); the
cost is separable, C = C1 + C2 on the two axes, so ad_lib.barycenter.grid_cost gives a SeparableCost whose kernel is
applied along each axis (O(n (n1 + n2)) per application instead of O(n^2)). What is measured:

1. forward: ad_lib.barycenter.barycenter with the SeparableCost against POT's
   ot.bregman.convolutional_barycenter2d(..., method="sinkhorn_log") (POT's separable barycenter on the same grid,
   its torch backend, the same float32 tensors), 200 iterations; and with the dense C against POT's
   ot.bregman.barycenter(..., method="sinkhorn_log"), which at this size takes over a second an iteration on a CPU:
   that row runs 10 iterations (--quick: 4) and says so. Values: the largest gap between the barycenters.
   Goal: the separable barycenter at most 1.0x POT's convolutional one;
2. backward: the same separable problem, forward and backward (the gradient of <W, p> in A, W random), with
   grad="manual" (the reverse recursion derived by hand, storing three vectors per histogram and iteration)
   against grad="unrolled" (torch.autograd through the 200 iterations): time and peak memory. Goals: manual at
   least 20x less memory, at most 2.0x unrolled's time.

Peak memory is measured as in bench_part2 (torch.cuda.max_memory_allocated on CUDA, ad_lib.runtime.TensorMemory on
the CPU). The unrolled pass at full size peaks at several GiB of memory.
"""

import sys
import warnings

import ot
import torch
from bench_part2 import benchmark_arguments, best_times, mib, peak_bytes, ratio_row

from ad_lib.barycenter import barycenter, grid_cost

F32 = torch.float32
EPS = 4e-3


def problem(side, device, K=4, seed=0):
    """K random histograms (columns) on a side x side grid, equal weights, the separable cost, in float32."""
    g = torch.Generator().manual_seed(seed)
    A = torch.softmax(3 * torch.randn(side * side, K, generator=g), 0).to(F32).to(device)
    A = A / A.sum(0)
    w = torch.full((K,), 1.0 / K, dtype=F32, device=device)
    return A, w, grid_cost((side, side), dtype=F32, device=device)


def quiet(fn):
    """fn without the warnings of runs stopped at their iteration count (POT says it did not converge)."""
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return run


def synchronized(fn, device):
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out
    return run


# 1. ---------------------------------------------------------------------------------------------

def bench_forward(device, repeat, side, iterations, dense_iterations):
    A, w, cost = problem(side, device)
    images = A.T.reshape(-1, side, side).contiguous()

    def ours_separable():
        return barycenter(A, cost, w, EPS, max_iter=iterations, tol=0).barycenter

    def pot_convolutional():
        return ot.bregman.convolutional_barycenter2d(images, EPS, w, method="sinkhorn_log", numItermax=iterations,
                                                     stopThr=0.0, warn=False).reshape(-1)

    dense = cost.dense()

    def ours_dense():
        return barycenter(A, dense, w, EPS, max_iter=dense_iterations, tol=0).barycenter

    def pot_dense():
        return ot.bregman.barycenter(A, dense, EPS, w, method="sinkhorn_log", numItermax=dense_iterations,
                                     stopThr=0.0, warn=False)

    fns = [synchronized(quiet(f), device) for f in (ours_separable, pot_convolutional, ours_dense, pot_dense)]
    values = [f() for f in fns]
    separable_gap = float((values[0] - values[1]).abs().max())
    dense_gap = float((values[2] - values[3]).abs().max())
    short = barycenter(A, cost, w, EPS, max_iter=dense_iterations, tol=0).barycenter
    separable_dense = float((short - values[2]).abs().max())
    times = best_times(fns[:2], repeat) + best_times(fns[2:], min(repeat, 2))
    return times, (separable_gap, dense_gap, separable_dense), float(values[0].sum())


# 2. ---------------------------------------------------------------------------------------------

def bench_backward(device, repeat, side, iterations):
    A, w, cost = problem(side, device, seed=1)
    W = torch.randn(side * side, generator=torch.Generator().manual_seed(2)).to(F32).to(device)

    def run(grad):
        A_ = A.clone().requires_grad_(True)
        p = barycenter(A_, cost, w, EPS, grad=grad, max_iter=iterations, tol=0).barycenter
        (p * W).sum().backward()
        return A_.grad

    manual, unrolled = run("manual"), run("unrolled")
    gap = float((manual - unrolled).abs().max())
    scale = float(unrolled.abs().max())
    fns = [synchronized(lambda g=g: run(g), device) for g in ("manual", "unrolled")]
    times = best_times(fns, repeat)
    memory = [peak_bytes(fn, device) for fn in fns]
    return times, memory, gap, scale


def main(argv=None):
    _, args, device, name = benchmark_arguments(__doc__, argv)
    quick = args.quick
    print(f"Chapter 15 benchmark on {device} ({name}), torch {torch.__version__}, POT {ot.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}\n")
    missed = []

    side, iterations, dense_iterations = (16, 20, 4) if quick else (64, 200, 10)
    times, (separable_gap, dense_gap, separable_dense), mass = bench_forward(device, args.repeat, side, iterations,
                                                                             dense_iterations)
    ours, pots, ours_dense, pot_dense = times
    print(f"1. Barycenter of 4 histograms on a {side} x {side} grid (n = {side * side}), log domain, eps = {EPS}, "
          f"float32: ad_lib against POT. Goal: separable at most 1.0x POT's convolutional")
    print(f"   {'':<44} {'ours (ms)':>10} {'POT (ms)':>10} {'ratio':>8}")
    print(ratio_row(f"separable vs convolutional, {iterations} it.", ours, pots, width=44))
    print(ratio_row(f"dense vs ot.bregman.barycenter, {dense_iterations} it.", ours_dense, pot_dense, width=44))
    print(f"   the dense rows run {dense_iterations} iterations (C is {side * side} x {side * side}): per iteration, "
          f"ours {1e3 * ours_dense / dense_iterations:.1f} ms and POT {1e3 * pot_dense / dense_iterations:.1f} ms dense, "
          f"against {1e3 * ours / iterations:.2f} ms separable")
    print(f"   barycenters: separable against POT's convolutional {separable_gap:.1e}, dense against POT's "
          f"{dense_gap:.1e}, separable against dense {separable_dense:.1e}; mass after {iterations} iterations "
          f"{mass:.6f}")
    if ours > pots:
        missed.append(f"the separable barycenter takes {ours / pots:.2f}x POT's convolutional time, over 1.0x")
    if max(separable_gap, dense_gap, separable_dense) > 1e-5:
        missed.append("the barycenters differ by more than 1e-5")

    (manual_t, unrolled_t), (manual_m, unrolled_m), gap, scale = bench_backward(device, args.repeat, side, iterations)
    print(f"\n2. Backward: the same {side} x {side} separable problem, {iterations} iterations, float32, forward + "
          "backward of <W, p> in A. Goals: manual at least 20x less memory, at most 2.0x the time")
    print(f"   {'grad':<44} {'time (ms)':>10} {'peak (MiB)':>11}")
    print(f"   {'manual (hand-derived recursion)':<44} {1e3 * manual_t:>10.1f} {mib(manual_m):>11.2f}")
    print(f"   {'unrolled (torch.autograd)':<44} {1e3 * unrolled_t:>10.1f} {mib(unrolled_m):>11.2f}")
    print(f"   unrolled against manual: {unrolled_m / max(manual_m, 1):.1f}x the memory, "
          f"{unrolled_t / manual_t:.2f}x the time; gradients differ by {gap:.1e} (largest entry {scale:.1e})")
    if unrolled_m < 20 * manual_m and not quick:
        missed.append(f"manual saves only {unrolled_m / max(manual_m, 1):.1f}x memory, under 20x")
    if manual_t > 2.0 * unrolled_t:
        missed.append(f"manual takes {manual_t / unrolled_t:.2f}x unrolled's time, over 2.0x")
    if gap > 1e-4 * max(scale, 1e-30):
        missed.append(f"the two gradients differ by {gap:.1e}, over 1e-4 of their size")

    print("\nall goals met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
