"""The benchmarks run (their numbers are quoted from full runs, never asserted here)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_part1_benchmark_runs_and_prints_its_three_tables():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_part1.py"), "--quick", "--repeat", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for heading in ("1. MLP forward + backward", "2. jvp with dual tensors", "3. Jacobian of f", "predicted crossing"):
        assert heading in result.stdout


def test_part2_benchmark_runs_and_prints_its_three_tables():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_part2.py"), "--quick", "--repeat", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for heading in ("1. Jacobian of an hourglass network", "2. Neural ODE", "3. Residual recurrent net",
                    "optimal against the better pure mode", "checkpoint_sequential"):
        assert heading in result.stdout


def test_implicit_layers_benchmark_runs_and_prints_its_three_tables():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_implicit.py"), "--quick", "--repeat", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for heading in ("1. Optimal-transport node", "2. Robust vector pooling", "3. Fixed point", "block's peak at"):
        assert heading in result.stdout
