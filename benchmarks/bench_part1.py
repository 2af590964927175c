"""Part I benchmark: ad_lib's forward and reverse modes side by side with PyTorch.

Run:  python benchmarks/bench_part1.py [--device cpu|cuda] [--repeat N] [--quick]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting.)

Prints three tables of ratios, each measured in the same run (best of N):

1. the tensor tape (ad_lib.reverse.grad) against torch.autograd, for the
   forward and backward pass of an MLP (batch 256, width 512, 4 layers);
   goal: within 1.3x of torch's time;
2. jvp with dual tensors (ad_lib.forward.jvp) against a plain evaluation of
   the same MLP, along the input and along all parameters, with
   torch.func.jvp's ratios beside them; goal: within 3x along each, both
   judged, each printed with its floor (the matrix products alone: 2x along
   the input, 2.75x along all parameters) and torch.func.jvp's ratio;
3. forward against reverse mode for the Jacobian of f: R^p -> R^m as p grows
   (m fixed): forward mode needs p passes and reverse mode m, so the crossing
   point is predicted at p* = m * (cost of a reverse pass / cost of a forward
   pass), both measured on one pass.
"""

import argparse
import math
import sys

import torch

import ad_lib
from ad_lib import ops
from ad_lib.forward import jacfwd, jvp
from ad_lib.reverse import grad, jacrev


def compare(first, second, repeat):
    """Best times of two functions, timed alternately so that drifts of the machine hit both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, fn in enumerate((first, second)):
            best[i] = min(best[i], ad_lib.time_call(fn, repeat=1, warmup=0))
    return best


def mlp_problem(device, batch=256, width=512, layers=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(layers):
        params.append(torch.randn(width, width, generator=g) / math.sqrt(width))
        params.append(torch.zeros(width))
    X = torch.randn(batch, width, generator=g)
    Y = torch.randn(batch, width, generator=g)
    return [p.to(device) for p in params], X.to(device), Y.to(device)


def mlp_loss(params, X, Y, relu, mean):
    h = X
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = relu(h)
    return mean((h - Y) ** 2)


def bench_tape(device, repeat, size):
    params, X, Y = mlp_problem(device, **size)
    ours = grad(lambda *ps: mlp_loss(ps, X, Y, ops.relu, ops.mean), argnums=tuple(range(len(params))))

    torch_params = [p.clone().requires_grad_() for p in params]

    def theirs():
        for p in torch_params:
            p.grad = None
        mlp_loss(torch_params, X, Y, torch.relu, torch.mean).backward()

    # same numbers before timing
    for mine, p in zip(ours(*params), torch_params):
        theirs()
        torch.testing.assert_close(mine, p.grad, rtol=1e-4, atol=1e-5)
    t_ours, t_torch = compare(lambda: ours(*params), theirs, repeat)
    return t_ours, t_torch


def bench_jvp(device, repeat, size):
    """Times of a plain evaluation and of jvp along all parameters and along the input, ours and torch.func's."""
    params, X, Y = mlp_problem(device, **size)
    g = torch.Generator().manual_seed(1)
    directions = tuple(torch.randn(p.shape, generator=g).to(device) for p in params)
    ones = (torch.ones_like(X),)

    def loss(relu, mean):
        return (lambda *ps: mlp_loss(ps, X, Y, relu, mean)), (lambda x: mlp_loss(params, x, Y, relu, mean))

    ours_params, ours_input = loss(ops.relu, ops.mean)
    torch_params, torch_input = loss(torch.relu, torch.mean)
    contenders = {
        "ours, along all parameters": lambda: jvp(ours_params, tuple(params), directions),
        "ours, along the input": lambda: jvp(ours_input, (X,), ones),
        "torch.func, along all parameters": lambda: torch.func.jvp(torch_params, tuple(params), directions),
        "torch.func, along the input": lambda: torch.func.jvp(torch_input, (X,), ones),
    }
    # same numbers before timing
    torch.testing.assert_close(contenders["ours, along all parameters"]()[1], contenders["torch.func, along all parameters"]()[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(contenders["ours, along the input"]()[1], contenders["torch.func, along the input"]()[1], rtol=1e-4, atol=1e-5)
    plain = float("inf")
    times = {}
    for name, fn in contenders.items():  # each timed alternately with the plain evaluation it is divided by
        t_plain, times[name] = compare(lambda: ours_params(*params), fn, repeat)
        plain = min(plain, t_plain)
    return plain, times


def bench_crossing(device, repeat, m=16, sizes=(1, 2, 4, 8, 16, 32, 64, 128)):
    rows = []
    for p in sizes:
        g = torch.Generator().manual_seed(p)
        layers = [torch.randn(64, p, generator=g).to(device) / math.sqrt(p), torch.randn(m, 64, generator=g).to(device) / 8]

        def f(x):  # R^p -> R^m, a small two-layer network
            return layers[1] @ ops.tanh(layers[0] @ x)

        x = torch.randn(p, generator=g).to(device)
        t_fwd = ad_lib.time_call(lambda: jacfwd(f, vectorize=False)(x), repeat=repeat)
        t_rev = ad_lib.time_call(lambda: jacrev(f, vectorize=False)(x), repeat=repeat)
        torch.testing.assert_close(jacfwd(f, vectorize=False)(x), jacrev(f, vectorize=False)(x), rtol=1e-4, atol=1e-5)
        one_fwd = ad_lib.time_call(lambda: jvp(f, (x,), (x,)), repeat=repeat)
        one_rev = ad_lib.time_call(lambda: ad_lib.reverse.vjp(f, x)[1](torch.ones(m, device=device)), repeat=repeat)
        rows.append((p, t_fwd, t_rev, one_fwd, one_rev))
    return m, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: ad_lib.device())")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that it runs")
    args = parser.parse_args(argv)
    size = dict(batch=8, width=16, layers=4) if args.quick else dict(batch=256, width=512, layers=4)
    sizes = (1, 4, 16, 32) if args.quick else (1, 2, 4, 8, 16, 32, 64, 128)
    device = torch.device(args.device) if args.device else ad_lib.device()
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Part I benchmark on {device} ({name}), torch {torch.__version__}, best of {args.repeat}\n")

    t_ours, t_torch = bench_tape(device, args.repeat, size)
    tape_ratio = t_ours / t_torch
    print(f"1. MLP forward + backward (batch {size['batch']}, width {size['width']}, {size['layers']} layers)")
    print(f"   ad_lib tape {1e3 * t_ours:8.2f} ms   torch.autograd {1e3 * t_torch:8.2f} ms   ratio {tape_ratio:5.2f}   goal <= 1.3")

    t_plain, times = bench_jvp(device, args.repeat, size)
    ratio = {name: t / t_plain for name, t in times.items()}
    print("\n2. jvp with dual tensors against a plain evaluation of the same MLP loss (torch.func.jvp for reference)")
    print(f"   plain evaluation {1e3 * t_plain:8.2f} ms")
    for name, t in times.items():
        print(f"   {name:<34} {1e3 * t:8.2f} ms   ratio {ratio[name]:5.2f}")
    # Matrix products against the plain evaluation's L (one per layer): along the
    # input, two per layer (floor 2); along all parameters the bilinear h @ W needs
    # h @ W + h @ dW + dh @ W, with dh = 0 in the first layer: 3L - 1 (11 / 4 = 2.75).
    layers = size["layers"]
    judged = {}
    for line, products in (("along the input", 2 * layers), ("along all parameters", 3 * layers - 1)):
        mine, reference = ratio[f"ours, {line}"], ratio[f"torch.func, {line}"]
        judged[line] = mine <= 3
        print(f"   {line}: {mine:.2f}x, goal 3x: {'met' if judged[line] else 'not met'} (floor "
              f"{products / layers:.2f}x = {products} matrix products / {layers}; torch.func.jvp {reference:.2f}x)")

    m, rows = bench_crossing(device, args.repeat, sizes=sizes)
    c_fwd = sum(r[3] for r in rows) / len(rows)
    c_rev = sum(r[4] for r in rows) / len(rows)
    predicted = m * c_rev / c_fwd
    measured = next((p for p, t_fwd, t_rev, *_ in rows if t_fwd > t_rev), None)
    print(f"\n3. Jacobian of f: R^p -> R^{m}: forward mode (p passes) against reverse mode ({m} passes)")
    print(f"   {'p':>5} {'forward (ms)':>13} {'reverse (ms)':>13} {'forward / reverse':>18}")
    for p, t_fwd, t_rev, _, _ in rows:
        print(f"   {p:>5} {1e3 * t_fwd:>13.2f} {1e3 * t_rev:>13.2f} {t_fwd / t_rev:>18.2f}")
    print(f"   one forward pass {1e3 * c_fwd:.3f} ms, one reverse pass {1e3 * c_rev:.3f} ms (averages over p)")
    print(f"   predicted crossing p* = m * reverse/forward = {predicted:.1f}; measured: forward slower from p = {measured}")

    missed = [name for name, ok in (("tape <= 1.3x", tape_ratio <= 1.3), *((f"jvp {k} <= 3x", v) for k, v in judged.items())) if not ok]
    print("\nall goals met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
