"""Part II benchmark, implicit layers: the optimal-transport node, robust pooling and fixed points, side by side.

Run:  python benchmarks/bench_implicit.py [--device cpu|cuda] [--repeat N] [--quick] [--memory-cap GIB]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting.)

Prints three tables, each measured in one run (best of N), as ratios:

1. the backward pass of the entropic optimal-transport node
   (ad_lib.declarative.optimal_transport, chapter 9) for n = m = 100, 200,
   400 and batches of 1 and 8: the paper's block elimination against the
   full inverse of A H^-1 A^T and against autograd through 1000 unrolled
   Sinkhorn iterations: time of the backward pass and peak memory of forward
   and backward. Goals: block at most 0.5x the time of unrolled autograd,
   at most 0.5x the full inverse at n = 400; block's memory flat in the
   number of Sinkhorn iterations (100 against 1000). Where unrolling 1000
   iterations would need more than --memory-cap GiB (measured at 100
   iterations and grown linearly), it is measured at 100 iterations and its
   1000-iteration time and memory are extrapolated (marked "~");
2. robust vector pooling (ad_lib.declarative.robust_pool) of a (1, 128, 50,
   50) feature map, for each penalty: forward and backward time and peak
   memory. Goals (the paper's observations): backward time at most the
   forward time, backward memory within 2x of the forward's;
3. the fixed point of a contraction (ad_lib.implicit.fixed_point) at 10, 100
   and 1000 iterations: implicit (its backward solve run to 1e-10) against
   unrolled backward, time and peak memory of forward and backward. Goal:
   implicit's memory flat in the number of iterations.

Peak memory is measured as in bench_part2.py (CUDA's allocator statistics, or
ad_lib.runtime.TensorMemory on the CPU).
"""

import sys

import torch
from bench_part2 import benchmark_arguments, best_times, mib, peak_bytes

from ad_lib.declarative import PENALTIES, optimal_transport, robust_pool
from ad_lib.implicit import fixed_point

OT_METHODS = ("block", "full", "unrolled")


# 1. ---------------------------------------------------------------------------------------------

def ot_problem(device, batch, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.rand(batch, n, n, generator=g, dtype=torch.float64).to(device)
    v = torch.randn(batch, n, n, generator=g, dtype=torch.float64).to(device)
    return M, v


def ot_run(M, v, method, iterations):
    """Forward and backward of the OT node with exactly `iterations` Sinkhorn iterations."""
    leaf = M.detach().requires_grad_(True)
    P = optimal_transport(leaf, gamma=10.0, method=method, tol=0, max_iter=iterations)  # tol=0: exactly that many
    return leaf, P


def bench_ot(device, repeat, sizes, batches, iterations, cap_bytes):
    rows = []
    for batch in batches:
        for n in sizes:
            M, v = ot_problem(device, batch, n)
            times, memory, extrapolated = {}, {}, set()
            for method in OT_METHODS:
                its = iterations
                if method == "unrolled":
                    short = max(1, iterations // 10)
                    grown = peak_bytes(lambda: torch.autograd.grad(*_ot_grad_args(M, v, method, short)), device)
                    if grown * iterations / short > cap_bytes:
                        its = short
                        extrapolated.add(method)
                leaf, P = ot_run(M, v, method, its)
                times[method], = best_times([lambda: torch.autograd.grad(P, leaf, v, retain_graph=True)], repeat)
                del leaf, P
                memory[method] = peak_bytes(lambda: torch.autograd.grad(*_ot_grad_args(M, v, method, its)), device)
                if method in extrapolated:
                    times[method] *= iterations / its
                    memory[method] *= iterations / its
            flat = {k: peak_bytes(lambda: torch.autograd.grad(*_ot_grad_args(M, v, "block", k)), device)
                    for k in (max(1, iterations // 10), iterations)}
            rows.append((batch, n, times, memory, extrapolated, flat))
    return rows


def _ot_grad_args(M, v, method, iterations):
    leaf, P = ot_run(M, v, method, iterations)
    return P, leaf, v


# 2. ---------------------------------------------------------------------------------------------

def bench_pooling(device, repeat, shape):
    g = torch.Generator().manual_seed(1)
    # features of norm about 1, so that alpha = 1 separates near points from far ones (with every point
    # farther than alpha, the truncated quadratic has no isolated minimum and no gradient)
    x = (torch.randn(*shape, generator=g) / shape[1] ** 0.5).to(device)
    rows = {}
    for penalty in PENALTIES:
        leaf = x.clone().requires_grad_(True)
        y = robust_pool(leaf, penalty=penalty)
        v = torch.randn_like(y)
        forward, backward = best_times([lambda: robust_pool(leaf, penalty=penalty),
                                        lambda: torch.autograd.grad(y, leaf, v, retain_graph=True)], repeat)
        forward_memory = peak_bytes(lambda: robust_pool(leaf, penalty=penalty), device)
        backward_memory = peak_bytes(lambda: torch.autograd.grad(y, leaf, v, retain_graph=True), device)
        rows[penalty] = (forward, backward, forward_memory, backward_memory)
    return rows


# 3. ---------------------------------------------------------------------------------------------

def bench_fixed_point(device, repeat, iterations_list, dim, batch):
    """x = tanh(W x + theta) with ||W|| = 0.9 (a contraction), run for exactly k iterations."""
    g = torch.Generator().manual_seed(2)
    W = torch.randn(dim, dim, generator=g)
    W = (0.9 * W / torch.linalg.matrix_norm(W, ord=2)).to(device)
    theta = torch.randn(batch, dim, generator=g).to(device)
    x0 = torch.zeros(batch, dim, device=device)

    def h(x, W, theta):
        return torch.tanh(x @ W.T + theta)

    def run(backward, iterations):
        leaf = theta.detach().requires_grad_(True)
        x = fixed_point(h, x0, W, leaf, tol=1e-300, max_iter=iterations, backward=backward, backward_tol=1e-10,
                        on_failure="ignore")
        return torch.autograd.grad(x.sum(), leaf)

    rows = []
    for iterations in iterations_list:
        times = dict(zip(("implicit", "unrolled"), best_times(
            [lambda: run("implicit", iterations), lambda: run("unrolled", iterations)], repeat)))
        memory = {b: peak_bytes(lambda: run(b, iterations), device) for b in ("implicit", "unrolled")}
        rows.append((iterations, times, memory))
    return rows


def main(argv=None):
    def memory_cap(parser):
        parser.add_argument("--memory-cap", type=float, default=4.0,
                            help="GiB above which unrolled Sinkhorn is measured at a tenth of the iterations and extrapolated")

    parser, args, device, name = benchmark_arguments(__doc__, argv, memory_cap)
    if args.memory_cap <= 0:
        parser.error("--memory-cap must be positive")
    quick = args.quick
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"Part II benchmark, implicit layers, on {device} ({name}), torch {torch.__version__}, best of {args.repeat}\n")
    missed = []

    sizes, batches, iterations = ((10, 20), (1, 2), 50) if quick else ((100, 200, 400), (1, 8), 1000)
    print(f"1. Optimal-transport node, float64, gamma = 10: backward after {iterations} Sinkhorn iterations "
          "(time of the backward; peak of forward + backward)")
    print(f"   {'batch':>5} {'n':>5} {'method':<9} {'backward (ms)':>14} {'peak (MiB)':>11} "
          f"{'time / unrolled':>16} {'time / full':>12}")
    for batch, n, times, memory, extrapolated, flat in bench_ot(device, args.repeat, sizes, batches, iterations,
                                                                 args.memory_cap * 2**30):
        for method in OT_METHODS:
            mark = "~" if method in extrapolated else " "
            print(f"   {batch:>5} {n:>5} {method:<9} {mark}{1e3 * times[method]:>13.2f} {mark}{mib(memory[method]):>10.2f} "
                  f"{times[method] / times['unrolled']:>16.3f} {times[method] / times['full']:>12.3f}")
        (few, k_few), (many, k_many) = sorted(flat.items())
        print(f"   {'':>11} block's peak at {few} and {many} iterations: {mib(k_few):.2f} and {mib(k_many):.2f} MiB")
        if times["block"] > 0.5 * times["unrolled"]:
            missed.append(f"OT batch {batch} n {n}: block {times['block'] / times['unrolled']:.2f}x unrolled's time, over 0.5")
        if n == max(sizes) and times["block"] > 0.5 * times["full"]:
            missed.append(f"OT batch {batch} n {n}: block {times['block'] / times['full']:.2f}x the full inverse's time, over 0.5")
        if k_many > 1.1 * k_few + 2**20:
            missed.append(f"OT batch {batch} n {n}: block's memory grows with the iterations")

    shape = (1, 16, 6, 6) if quick else (1, 128, 50, 50)
    print(f"\n2. Robust vector pooling of a {tuple(shape)} feature map, float32")
    print(f"   {'penalty':<13} {'forward (ms)':>13} {'backward (ms)':>14} {'backward / forward':>19} "
          f"{'fwd peak (MiB)':>15} {'bwd peak (MiB)':>15}")
    for penalty, (forward, backward, fm, bm) in bench_pooling(device, args.repeat, shape).items():
        print(f"   {penalty:<13} {1e3 * forward:>13.2f} {1e3 * backward:>14.2f} {backward / forward:>19.2f} "
              f"{mib(fm):>15.2f} {mib(bm):>15.2f}")
        if backward > forward:
            missed.append(f"pooling {penalty}: backward slower than forward")
        if bm > 2 * fm + 2**20:
            missed.append(f"pooling {penalty}: backward memory {bm / max(fm, 1):.1f}x the forward's")

    iterations_list = (10, 100) if quick else (10, 100, 1000)
    size = dict(dim=8, batch=4) if quick else dict(dim=256, batch=256)
    print(f"\n3. Fixed point x = tanh(W x + theta), ||W|| = 0.9, {size}: forward + backward, implicit against unrolled")
    print(f"   {'iterations':>10} {'backward':<9} {'time (ms)':>10} {'peak (MiB)':>11} {'time / unrolled':>16}")
    rows = bench_fixed_point(device, args.repeat, iterations_list, **size)
    for iterations, times, memory in rows:
        for backward in times:
            print(f"   {iterations:>10} {backward:<9} {1e3 * times[backward]:>10.2f} {mib(memory[backward]):>11.3f} "
                  f"{times[backward] / times['unrolled']:>16.2f}")
    implicit_memory = [memory["implicit"] for _, _, memory in rows]
    if max(implicit_memory) > 1.1 * min(implicit_memory) + 2**20:
        missed.append("the implicit fixed-point backward's memory grows with the iterations")

    print("\nall goals met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
