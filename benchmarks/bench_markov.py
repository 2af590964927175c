"""Chapter 16 benchmark: the discounted distance between Markov chains and its gradient against the authors' package.

Run:  python benchmarks/bench_markov.py [--device cpu|cuda] [--repeat N] [--quick] [--threads T]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting. On the CPU the calls run on
one intra-op thread unless --threads says otherwise: they are thousands of
small operations, which two threads that wait for each other slow down.)

Prints three tables, each measured in one run (best of N; one run for the
calls of the largest size, which take seconds):

1. the distance and its gradient (forward and backward, gradient in PX and C)
   of ad_lib.markov.markov_ot_distance (grad="implicit": a Neumann iteration
   for K^T L = G that forms neither P nor K; and grad="implicit_dense": K formed
   and solved, as the authors' notes do) against
   ot_markov_distances.discounted_wl_infty with its own backward pass, for
   n = m = 10, 30, 60: two random dense chains, C uniform in [0, 1],
   delta = 0.4, eps = sinkhorn_reg = 0.1, float64, the stationary
   distributions passed to both (the package's own markov_measure works in
   float32 only). The package runs with its defaults (relative tolerance
   0.005 on C_inf, inner Sinkhorn of 1 to 100 iterations), ours with
   tol = 1e-9: the error of each value against a run of ours at tol = 1e-12 is
   printed beside the time. The package's backward pass fails with a
   TypeError when neither chain is "sparse" (re_project_C receives no index),
   so it runs with y_is_sparse=True (PY densified, no gradient in PY), which
   gives the gradient in PX and C; ours computes the same two;
2. peak memory of the same calls (torch.cuda.max_memory_allocated on CUDA,
   ad_lib.runtime.TensorMemory on the CPU), with grad="unrolled" as well at
   the sizes where it fits;
3. the largest n = m that fits in 8 GiB for each method, by the memory model
   measured here: the peaks at four small sizes, a power law
   peak = c n^p fitted by least squares on log peak against log n (p printed:
   about 3 for "implicit", whose largest tensors are the potentials,
   n m (n + m) numbers; about 4 for the dense solve and the package, which hold
   (n m)^2 plans), extrapolated to 8 GiB. Memory only: the time grows as
   n^4 per iteration for all (and n^6 for the dense solve).
"""

import math
import sys
import warnings

import torch
from bench_part2 import benchmark_arguments, best_times, mib, peak_bytes, ratio_row
from ot_markov_distances import discounted_wl_infty

from ad_lib.markov import markov_ot_distance, stationary_distribution

F64 = torch.float64
DELTA, EPS = 0.4, 0.1
LIMIT = 8 * 2**30   # 8 GiB


def chains(n, device, seed=0):
    """Two random dense transition matrices, a cost in [0, 1] and the stationary distributions, in float64."""
    g = torch.Generator().manual_seed(seed)
    PX = torch.softmax(2 * torch.randn(n, n, dtype=F64, generator=g), -1)
    PY = torch.softmax(2 * torch.randn(n, n, dtype=F64, generator=g), -1)
    C = torch.rand(n, n, dtype=F64, generator=g)
    PX, PY, C = PX.to(device), PY.to(device), C.to(device)
    return PX, PY, C, stationary_distribution(PX), stationary_distribution(PY)


def quiet(fn):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the package's "did not converge" at its iteration budget
            return fn()
    return run


def calls(PX, PY, C, muX, muY):
    """Forward and backward of each method (gradient in PX and C); each returns (distance, grad PX, grad C)."""

    def ours(grad):
        def run():
            X, D = PX.clone().requires_grad_(True), C.clone().requires_grad_(True)
            d = markov_ot_distance(X, PY, D, DELTA, EPS, mu_X=muX, mu_Y=muY, grad=grad, tol=1e-9).distance
            d.backward()
            return float(d.detach()), X.grad, D.grad
        return run

    def package():
        X, D = PX[None].clone().requires_grad_(True), C[None].clone().requires_grad_(True)
        torch.manual_seed(0)  # its inner Sinkhorn starts from random potentials
        d = discounted_wl_infty(X, PY[None], D, muX[None], muY[None], delta=DELTA, sinkhorn_reg=EPS,
                                x_is_sparse=False, y_is_sparse=True)
        d.sum().backward()
        return float(d.detach()), X.grad[0], D.grad[0]

    return {"implicit": ours("implicit"), "implicit_dense": ours("implicit_dense"), "unrolled": ours("unrolled"),
            "package": quiet(package)}


def reference(PX, PY, C, muX, muY):
    return float(markov_ot_distance(PX, PY, C, DELTA, EPS, mu_X=muX, mu_Y=muY, tol=1e-12).distance)


def centered(g):
    return g - g.mean(-1, keepdim=True)


# 1. and 2. --------------------------------------------------------------------------------------

def bench_size(n, device, repeat, with_unrolled):
    problem = chains(n, device)
    fns = calls(*problem)
    exact = reference(*problem)
    names = ["implicit", "implicit_dense", "package"] + (["unrolled"] if with_unrolled else [])
    outputs = {name: fns[name]() for name in names}
    times = dict(zip(names[:3], best_times([fns[name] for name in names[:3]], repeat)))
    memory = {name: peak_bytes(fns[name], device) for name in names}
    errors = {name: abs(outputs[name][0] - exact) for name in names}
    gap = max(float((centered(outputs["implicit"][1]) - centered(outputs["package"][1])).abs().max()),
              float((outputs["implicit"][2] - outputs["package"][2]).abs().max()))
    return times, memory, errors, gap


# 3. ---------------------------------------------------------------------------------------------

def memory_model(sizes, device):
    """{method: (p, c, the n where c n^p reaches 8 GiB)} from the peaks at the given sizes."""
    model = {}
    for name in ("implicit", "implicit_dense", "unrolled", "package"):
        logs = []
        for n in sizes:
            fns = calls(*chains(n, device))
            logs.append((math.log(n), math.log(peak_bytes(fns[name], device))))
        mean_x = sum(x for x, _ in logs) / len(logs)
        mean_y = sum(y for _, y in logs) / len(logs)
        p = sum((x - mean_x) * (y - mean_y) for x, y in logs) / sum((x - mean_x) ** 2 for x, _ in logs)
        log_c = mean_y - p * mean_x
        model[name] = (p, math.exp(log_c), math.exp((math.log(LIMIT) - log_c) / p))
    return model


def main(argv=None):
    def more(parser):
        parser.add_argument("--threads", type=int, default=None,
                            help="intra-op CPU threads (default: 1 on the CPU, as the chapters time)")

    _, args, device, name = benchmark_arguments(__doc__, argv, more)
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    quick = args.quick
    import ot_markov_distances
    version = getattr(ot_markov_distances, "__version__", None)
    if version is None:
        from importlib.metadata import version as package_version
        version = package_version("ot-markov-distances")
    print(f"Chapter 16 benchmark on {device} ({name}), torch {torch.__version__}, ot_markov_distances {version}, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}\n")

    sizes = (4, 6) if quick else (10, 30, 60)
    results = {}
    for n in sizes:
        repeat = args.repeat if n < 60 else 1
        results[n] = bench_size(n, device, repeat, with_unrolled=n <= 30)

    print(f"1. Discounted distance and its gradient (in PX and C), delta = {DELTA}, eps = {EPS}, float64, forward + "
          "backward: ad_lib.markov against ot_markov_distances.discounted_wl_infty")
    print(f"   {'':<34} {'ours (ms)':>10} {'pkg (ms)':>10} {'ratio':>8}   value errors: ours, package")
    for n, (times, _, errors, gap) in results.items():
        runs = args.repeat if n < 60 else 1
        for mode in ("implicit", "implicit_dense"):
            print(ratio_row(f"n = m = {n}, {mode}", times[mode], times["package"]) +
                  f"   {errors[mode]:.1e}, {errors['package']:.1e}")
        print(f"   {'':<34} (best of {runs}; gradients, ours against the package's: largest gap {gap:.1e})")

    print("\n2. Peak memory of the same calls (MiB)")
    print(f"   {'n = m':<8} {'implicit':>12} {'implicit_dense':>15} {'unrolled':>12} {'package':>12}")
    for n, (_, memory, _, _) in results.items():
        unrolled = f"{mib(memory['unrolled']):>12.2f}" if "unrolled" in memory else f"{'-':>12}"
        print(f"   {n:<8} {mib(memory['implicit']):>12.2f} {mib(memory['implicit_dense']):>15.2f} {unrolled} "
              f"{mib(memory['package']):>12.2f}")
    n = sizes[-1]
    memory = results[n][1]
    print(f"   at n = m = {n}: implicit_dense {memory['implicit_dense'] / memory['implicit']:.1f}x, package "
          f"{memory['package'] / memory['implicit']:.1f}x the memory of implicit")

    model_sizes = (3, 4) if quick else (8, 12, 16, 24)
    model = memory_model(model_sizes, device)
    print(f"\n3. The largest n = m that fits in 8 GiB, by the power law peak = c n^p fitted to the peaks at n = "
          f"{', '.join(map(str, model_sizes))} and extrapolated")
    print(f"   {'method':<16} {'p':>6} {'n at 8 GiB':>12}")
    for method, (p, _, largest) in model.items():
        print(f"   {method:<16} {p:>6.2f} {largest:>12.0f}")
    print(f"   implicit fits in 8 GiB up to n = m = {model['implicit'][2]:.0f}, the package up to "
          f"{model['package'][2]:.0f} (memory only; a forward pass costs n^4 per iteration for all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
