"""The benchmarks run (their numbers are quoted from full runs, never asserted here)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

HEADINGS = {  # each benchmark, and what its output must show
    "bench_part1.py": ("1. MLP forward + backward", "2. jvp with dual tensors", "3. Jacobian of f", "predicted crossing"),
    "bench_part2.py": ("1. Jacobian of an hourglass network", "2. Neural ODE", "3. Residual recurrent net",
                       "optimal against the better pure mode", "checkpoint_sequential"),
    "bench_implicit.py": ("1. Optimal-transport node", "2. Robust vector pooling", "3. Fixed point", "block's peak at"),
    "bench_part3.py": ("1. conv2d", "2. One optimizer step", "3. Batch normalization", "Adam"),
    "bench_part4.py": ("1. Log-domain Sinkhorn", "2. The same problem: peak memory", "3. Batched", "4. One log-domain iteration"),
    "bench_barycenter.py": ("1. Barycenter of 4 histograms", "separable vs convolutional", "2. Backward", "unrolled against manual"),
    "bench_markov.py": ("1. Discounted distance and its gradient", "2. Peak memory", "3. The largest n = m that fits in 8 GiB",
                        "implicit fits in 8 GiB up to"),
}


@pytest.mark.parametrize("benchmark", sorted(HEADINGS))
def test_the_benchmark_runs_and_prints_its_tables(benchmark):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / benchmark), "--quick", "--repeat", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for heading in HEADINGS[benchmark]:
        assert heading in result.stdout
