"""Part II benchmark: Jacobian chains, the adjoint-state method and checkpointing, side by side.

Run:  python benchmarks/bench_part2.py [--device cpu|cuda] [--repeat N] [--quick]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting.)

Prints three tables, each measured in one run (best of N), as ratios:

1. the Jacobian of an hourglass network (widths 512, 512, 8, 512, 512)
   multiplied in the optimal order (ad_lib.compositions.optimal_order) against
   the better of the two pure modes: counted multiply-adds and time;
2. ad_lib.adjoint.odeint_adjoint against ad_lib.adjoint.odeint through
   torch.autograd and against torchdiffeq.odeint_adjoint (same fixed-step
   method, Kutta's 3/8 rule, which torchdiffeq calls "rk4"), forward and
   backward, at 100 and 1000 steps: time and peak memory;
3. ad_lib.checkpointing.checkpoint_scan with s = 5 and s = sqrt(l) snapshots
   against plain autograd and torch.utils.checkpoint.checkpoint_sequential
   (sqrt(l) segments) on one residual recurrent net, l = 1000 steps: time and
   peak memory (less the bytes of the gradients returned, which every method
   returns). Goals: memory within 2x of the snapshots' bytes, time within
   (1 + revolve_cost(l, s) / l) x plain autograd's, +30%. The peak of one
   step with its backward pass, alone, is printed too: no schedule can go
   below the snapshots plus that, so with few snapshots of a cell whose step
   needs several states of its own, the memory goal cannot be met.

Peak memory is the most bytes of tensors alive at once during the forward and
backward pass, beyond what existed before (weights, inputs): on CUDA from
torch.cuda.max_memory_allocated, on the CPU from ad_lib.runtime.TensorMemory,
which sees every tensor PyTorch allocates (timings are taken separately,
without it).
"""

import argparse
import math
import sys

import torch
import torchdiffeq
from torch.utils.checkpoint import checkpoint_sequential

import ad_lib
from ad_lib.adjoint import odeint, odeint_adjoint
from ad_lib.checkpointing import checkpoint_scan, revolve_cost
from ad_lib.compositions import chain_cost, jacobian_chain, layer_jacobians, optimal_order, order_text
from ad_lib.runtime import TensorMemory


def best_times(functions, repeat):
    """Best time of each function, timed in turns so that drifts of the machine hit all alike."""
    best = [float("inf")] * len(functions)
    for _ in range(repeat):
        for i, fn in enumerate(functions):
            best[i] = min(best[i], ad_lib.time_call(fn, repeat=1, warmup=0))
    return best


def peak_bytes(fn, device):
    """The peak of the bytes allocated while fn() runs, beyond those alive before."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with TensorMemory() as memory:
        fn()
    return memory.peak


def mib(n):
    return n / 2**20


def ratio_row(name, ours, theirs, width=34):
    """A table row: the name, the two times in ms, and their ratio."""
    return f"   {name:<{width}} {1e3 * ours:>10.3f} {1e3 * theirs:>10.3f} {ours / theirs:>8.2f}"


# 1. ---------------------------------------------------------------------------------------------

def bench_chain(device, repeat, widths):
    g = torch.Generator().manual_seed(0)
    weights = [(torch.randn(widths[k + 1], widths[k], generator=g) / math.sqrt(widths[k])).to(device)
               for k in range(len(widths) - 1)]
    layers = [lambda v, W=W: torch.tanh(W @ v) for W in weights]
    A = layer_jacobians(layers, torch.randn(widths[0], generator=g).to(device))
    cost, order = optimal_order(widths)
    orders = {"forward": "forward", "reverse": "reverse", "optimal": order}
    reference = jacobian_chain(A, "forward")
    for o in orders.values():  # same matrix before timing
        torch.testing.assert_close(jacobian_chain(A, o), reference, rtol=1e-4, atol=1e-4)
    times = dict(zip(orders, best_times([lambda o=o: jacobian_chain(A, o) for o in orders.values()], repeat)))
    counted = {name: chain_cost(widths, o) for name, o in orders.items()}
    return order_text(order), counted, times


# 2. ---------------------------------------------------------------------------------------------

class Field(torch.nn.Module):
    """y' = W2 tanh(W1 y + b t): a small neural ODE right-hand side."""

    def __init__(self, dim, hidden, generator):
        super().__init__()
        self.W1 = torch.nn.Parameter(torch.randn(hidden, dim, generator=generator) / math.sqrt(dim))
        self.W2 = torch.nn.Parameter(torch.randn(dim, hidden, generator=generator) / math.sqrt(hidden))
        self.b = torch.nn.Parameter(torch.randn(hidden, generator=generator))

    def forward(self, t, y):
        return torch.tanh(y @ self.W1.T + t * self.b) @ self.W2.T


def bench_adjoint(device, repeat, steps_list, dim, hidden, batch):
    g = torch.Generator().manual_seed(1)
    func = Field(dim, hidden, g).to(device)
    y0 = torch.randn(batch, dim, generator=g).to(device).requires_grad_()
    t = torch.tensor([0.0, 1.0], device=device)
    rows = []
    for steps in steps_list:
        options = dict(step_size=1.0 / steps)
        solvers = {
            "ad_lib odeint_adjoint": lambda: odeint_adjoint(func, y0, t, method="rk4_38", options=options),
            "ad_lib odeint (autograd)": lambda: odeint(func, y0, t, method="rk4_38", options=options),
            "torchdiffeq odeint_adjoint": lambda: torchdiffeq.odeint_adjoint(func, y0, t, method="rk4", options=options),
        }

        def run(solve):
            loss = solve()[-1].square().sum()
            return torch.autograd.grad(loss, (y0, *func.parameters()))

        results = {name: run(solve) for name, solve in solvers.items()}
        first = results["ad_lib odeint (autograd)"]
        for name, grads in results.items():  # same gradients before timing
            for mine, theirs in zip(grads, first):
                torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-4)
        fns = [lambda s=s: run(s) for s in solvers.values()]
        times = dict(zip(solvers, best_times(fns, repeat)))
        memory = {name: peak_bytes(fn, device) for name, fn in zip(solvers, fns)}
        rows.append((steps, times, memory))
    return rows


# 3. ---------------------------------------------------------------------------------------------

class Cell(torch.nn.Module):
    """The residual recurrent perceptron of chapter 7: x + tau W2^T tanh(W1 x)."""

    def __init__(self, dim, generator, tau=0.05):
        super().__init__()
        self.W1 = torch.nn.Parameter(torch.randn(dim, dim, generator=generator) / math.sqrt(dim))
        self.W2 = torch.nn.Parameter(torch.randn(dim, dim, generator=generator) / math.sqrt(dim))
        self.tau = tau

    def forward(self, x):
        return x + self.tau * torch.tanh(x @ self.W1.T) @ self.W2


def bench_checkpointing(device, repeat, steps, dim, batch):
    g = torch.Generator().manual_seed(2)
    cell = Cell(dim, g).to(device)
    x0 = torch.randn(batch, dim, generator=g).to(device).requires_grad_()
    segments = max(1, round(math.sqrt(steps)))
    chain = [cell] * steps  # l applications of the same cell, its parameters shared (a Sequential would hold it once)

    def plain():
        x = x0
        for _ in range(steps):
            x = cell(x)
        return x

    contenders = {"plain autograd": (plain, None)}
    for s in (5, segments):
        contenders[f"checkpoint_scan, s = {s}"] = (lambda s=s: checkpoint_scan(cell, x0, steps, s), s)
    contenders[f"checkpoint_sequential, {segments} segments"] = (
        lambda: checkpoint_sequential(chain, segments, x0, use_reentrant=False), None)

    def run(forward):
        return torch.autograd.grad(forward().square().sum(), (x0, *cell.parameters()))

    reference = run(plain)
    for name, (forward, _) in contenders.items():  # same gradients before timing
        for mine, theirs in zip(run(forward), reference):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    fns = [lambda f=f: run(f) for f, _ in contenders.values()]
    times = dict(zip(contenders, best_times(fns, repeat)))
    # the gradients returned (of x0 and of the weights) are the results, whatever the method: not counted
    results = sum(g.numel() * g.element_size() for g in reference)
    memory = {name: peak_bytes(fn, device) - results for name, fn in zip(contenders, fns)}
    # what one step and its backward pass need on their own: a floor under any schedule's peak
    memory["one step"] = peak_bytes(lambda: torch.autograd.grad(cell(x0).square().sum(), (x0, *cell.parameters())),
                                    device) - results
    state_bytes = x0.numel() * x0.element_size()
    return {name: s for name, (_, s) in contenders.items()}, times, memory, state_bytes


def benchmark_arguments(doc, argv, more=None):
    """The command line every benchmark takes (--device, --repeat, --quick; ``more(parser)`` adds its own):
    (parser, args, device, the device's name)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: ad_lib.device())")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that it runs")
    if more is not None:
        more(parser)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    device = torch.device(args.device) if args.device else ad_lib.device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return parser, args, device, name


def main(argv=None):
    _, args, device, name = benchmark_arguments(__doc__, argv)
    quick = args.quick
    print(f"Part II benchmark on {device} ({name}), torch {torch.__version__}, best of {args.repeat}\n")
    missed = []

    widths = [64, 64, 4, 64, 64] if quick else [512, 512, 8, 512, 512]
    order, counted, times = bench_chain(device, args.repeat, widths)
    pure = min(("forward", "reverse"), key=lambda m: (counted[m], times[m]))
    print(f"1. Jacobian of an hourglass network, widths {widths}: optimal order {order}")
    print(f"   {'order':<10} {'multiply-adds':>15} {'time (ms)':>11}")
    for m in counted:
        print(f"   {m:<10} {counted[m]:>15,} {1e3 * times[m]:>11.3f}")
    count_gain, time_gain = counted[pure] / counted["optimal"], min(times["forward"], times["reverse"]) / times["optimal"]
    print(f"   optimal against the better pure mode: {count_gain:.1f}x fewer multiply-adds, {time_gain:.1f}x faster")
    if time_gain <= 1:
        missed.append("the optimal chain order is not faster than the better pure mode")

    steps_list = (10, 40) if quick else (100, 1000)
    size = dict(dim=4, hidden=8, batch=2) if quick else dict(dim=64, hidden=128, batch=128)
    print(f"\n2. Neural ODE y' = W2 tanh(W1 y + b t), {size}, t in [0, 1], Kutta's 3/8 rule: forward + backward")
    print(f"   {'steps':>6} {'solver':<28} {'time (ms)':>10} {'peak (MiB)':>11} {'time / adjoint':>15} {'memory / adjoint':>17}")
    for steps, times, memory in bench_adjoint(device, args.repeat, steps_list, **size):
        ours = "ad_lib odeint_adjoint"
        for solver in times:
            print(f"   {steps:>6} {solver:<28} {1e3 * times[solver]:>10.2f} {mib(memory[solver]):>11.3f} "
                  f"{times[solver] / times[ours]:>15.2f} {memory[solver] / max(memory[ours], 1):>17.2f}")
        if memory["ad_lib odeint (autograd)"] <= memory[ours]:
            missed.append(f"odeint_adjoint does not use less memory than odeint through autograd at {steps} steps")

    steps = 60 if quick else 1000
    size = dict(dim=8, batch=4) if quick else dict(dim=256, batch=256)
    snapshots, times, memory, state = bench_checkpointing(device, args.repeat, steps, **size)
    plain = "plain autograd"
    print(f"\n3. Residual recurrent net x + tau W2^T tanh(W1 x), {size}, l = {steps} steps: forward + backward")
    print(f"   one state: {mib(state):.3f} MiB; one step with its backward pass, alone: peak {mib(memory['one step']):.2f} MiB"
          f" ({memory['one step'] / state:.1f} states)")
    print(f"   {'method':<34} {'time (ms)':>10} {'peak (MiB)':>11} {'time / plain':>13} {'goal':>7} "
          f"{'peak / snapshots':>17} {'goal':>5}")
    for method in times:
        s = snapshots[method]
        ratio = times[method] / times[plain]
        line = f"   {method:<34} {1e3 * times[method]:>10.1f} {mib(memory[method]):>11.2f} {ratio:>13.2f}"
        if s is None:
            print(line)
            continue
        time_goal = 1.3 * (1 + revolve_cost(steps, s) / steps)
        memory_ratio = memory[method] / (s * state)
        print(f"{line} {time_goal:>7.2f} {memory_ratio:>17.2f} {2:>5}")
        if ratio > time_goal:
            missed.append(f"{method}: time {ratio:.2f}x plain, over the goal {time_goal:.2f}x")
        if memory_ratio > 2:
            missed.append(f"{method}: peak memory {memory_ratio:.2f}x the snapshots' bytes, over 2x")

    print("\nall goals met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
