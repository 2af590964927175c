"""Part III benchmark: convolution by im2col, the optimizers' steps and batch normalization's backward.

Run:  python benchmarks/bench_part3.py [--device cpu|cuda] [--repeat N] [--quick]

(--quick uses small sizes: it checks that the benchmark runs, as the test
suite does, and measures nothing worth quoting.)

Prints three tables, each measured in one run (best of N), as ratios against
what PyTorch itself does:

1. ad_lib.layers.conv2d (unfold and one matrix product, chapter 10) against
   torch.nn.functional.conv2d: batch 32, 3 -> 16 channels, 32 x 32, 3 x 3
   kernel, padding 1, float32; forward, and forward + backward;
2. each optimizer of ad_lib.optim (chapter 11) against torch.optim's with the
   same hyper-parameters (its foreach implementation, the default on a
   device with foreach kernels; asked for explicitly): one step on a model of
   about a million parameters in 8 tensors. Goal: at most 1.5x;
3. ad_lib.normalization.batch_norm in training mode, whose backward is
   written by hand (chapter 11), against torch.nn.functional.batch_norm
   through autograd: batch 256 x 512 features, forward + backward.
"""

import sys

import torch
import torch.nn.functional as F
from bench_part2 import benchmark_arguments, best_times, ratio_row

from ad_lib import layers, normalization, optim


# 1. ---------------------------------------------------------------------------------------------

def bench_conv(device, repeat, batch, channels_in, channels_out, size, kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels_in, size, size, generator=g).to(device).requires_grad_(True)
    w = torch.randn(channels_out, channels_in, kernel, kernel, generator=g).to(device).requires_grad_(True)
    b = torch.randn(channels_out, generator=g).to(device).requires_grad_(True)
    pad = kernel // 2

    def forward(conv):
        with torch.no_grad():
            return conv(x, w, b, stride=1, padding=pad)

    def both(conv):
        return torch.autograd.grad(conv(x, w, b, stride=1, padding=pad).square().sum(), (x, w, b))

    return {
        "forward": best_times([lambda: forward(layers.conv2d), lambda: forward(F.conv2d)], repeat),
        "forward + backward": best_times([lambda: both(layers.conv2d), lambda: both(F.conv2d)], repeat),
    }


# 2. ---------------------------------------------------------------------------------------------

OPTIMIZERS = {  # name: (ours, torch.optim's, hyper-parameters)
    "SGD": (optim.SGD, torch.optim.SGD, dict(lr=1e-2)),
    "SGD momentum 0.9, nesterov": (optim.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True)),
    "Adagrad": (optim.Adagrad, torch.optim.Adagrad, dict(lr=1e-2)),
    "RMSprop": (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-3)),
    "Adam": (optim.Adam, torch.optim.Adam, dict(lr=1e-3)),
    "AdamW": (optim.AdamW, torch.optim.AdamW, dict(lr=1e-3)),
}


def bench_optimizers(device, repeat, parameters, tensors, steps=5):
    g = torch.Generator().manual_seed(1)
    size = parameters // tensors
    start = [torch.randn(size, generator=g).to(device) for _ in range(tensors)]
    grads = [torch.randn(size, generator=g).to(device) for _ in range(tensors)]
    rows = {}
    for name, (ours, theirs, settings) in OPTIMIZERS.items():
        timed = []
        for make, extra in ((ours, {}), (theirs, {"foreach": True})):
            params = [p.clone().requires_grad_(True) for p in start]
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            opt = make(params, **settings, **extra)
            opt.step()  # the state (buffers, moments) is made at the first step: time the steps after it

            def run(opt=opt):
                for _ in range(steps):
                    opt.step()
            timed.append(run)
        ours_time, theirs_time = best_times(timed, repeat)
        rows[name] = (ours_time / steps, theirs_time / steps)
    return rows


# 3. ---------------------------------------------------------------------------------------------

def bench_batch_norm(device, repeat, batch, features):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, features, generator=g).to(device).requires_grad_(True)
    weight = torch.rand(features, generator=g).to(device).add_(0.5).requires_grad_(True)
    bias = torch.randn(features, generator=g).to(device).requires_grad_(True)
    upstream = torch.randn(batch, features, generator=g).to(device)

    def run(norm):
        mean, var = torch.zeros(features, device=device), torch.ones(features, device=device)
        y = norm(x, mean, var, weight, bias, training=True)
        return torch.autograd.grad(y, (x, weight, bias), upstream)

    return best_times([lambda: run(normalization.batch_norm), lambda: run(F.batch_norm)], repeat)


def main(argv=None):
    _, args, device, name = benchmark_arguments(__doc__, argv)
    quick = args.quick
    print(f"Part III benchmark on {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}\n")
    missed = []

    size = dict(batch=4, channels_in=3, channels_out=4, size=8, kernel=3) if quick else \
        dict(batch=32, channels_in=3, channels_out=16, size=32, kernel=3)
    print(f"1. conv2d {size}, padding 1, float32: ad_lib.layers (unfold + matmul) against torch.nn.functional")
    print(f"   {'pass':<34} {'ours (ms)':>10} {'torch (ms)':>10} {'ratio':>8}")
    for what, (ours, theirs) in bench_conv(device, args.repeat, **size).items():
        print(ratio_row(what, ours, theirs))

    parameters, tensors = (4096, 4) if quick else (2**20, 8)
    print(f"\n2. One optimizer step, {parameters:,} parameters in {tensors} tensors, float32: "
          "ad_lib.optim against torch.optim (foreach=True). Goal: at most 1.5x")
    print(f"   {'optimizer':<34} {'ours (ms)':>10} {'torch (ms)':>10} {'ratio':>8}")
    for what, (ours, theirs) in bench_optimizers(device, args.repeat, parameters, tensors).items():
        print(ratio_row(what, ours, theirs))
        if ours > 1.5 * theirs:
            missed.append(f"{what}: step {ours / theirs:.2f}x torch.optim's, over 1.5x")

    batch, features = (16, 8) if quick else (256, 512)
    ours, theirs = bench_batch_norm(device, args.repeat, batch, features)
    print(f"\n3. Batch normalization, training mode, {batch} x {features}, float32: forward + backward")
    print(f"   {'':<34} {'ours (ms)':>10} {'torch (ms)':>10} {'ratio':>8}")
    print(ratio_row("hand-written backward vs autograd", ours, theirs))

    print("\nall goals met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
