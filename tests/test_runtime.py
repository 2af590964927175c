"""ad_lib.device() and ad_lib.seed_everything()."""

import random

import numpy as np
import pytest
import torch

import ad_lib
from ad_lib import runtime


def test_version_is_a_string():
    assert isinstance(ad_lib.__version__, str) and ad_lib.__version__.count(".") == 2


@pytest.mark.parametrize(
    "cuda, mps, float64, expected",
    [
        (True, True, False, "cuda"),
        (True, True, True, "cuda"),
        (False, True, False, "mps"),
        (False, True, True, "cpu"),  # MPS has no float64
        (False, False, False, "cpu"),
    ],
)
def test_device_prefers_cuda_then_mps_then_cpu(monkeypatch, capsys, cuda, mps, float64, expected):
    monkeypatch.delenv("AD_LIB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "a test GPU")
    monkeypatch.setattr(runtime, "_mps_available", lambda: mps)
    picked = ad_lib.device(verbose=True, float64=float64)
    assert picked.type == expected
    assert str(picked) in capsys.readouterr().out


def test_device_on_this_machine_says_what_it_picked(monkeypatch, capsys):
    monkeypatch.delenv("AD_LIB_DEVICE", raising=False)
    picked = ad_lib.device(verbose=True)
    assert picked.type == ("cuda" if torch.cuda.is_available() else picked.type)
    assert str(picked) in capsys.readouterr().out


def test_device_refuses_mps_for_float64_and_foreign_devices(monkeypatch):
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    monkeypatch.setenv("AD_LIB_DEVICE", "mps")
    with pytest.raises(RuntimeError, match="float64"):
        ad_lib.device(float64=True)
    monkeypatch.setenv("AD_LIB_DEVICE", "meta")
    with pytest.raises(ValueError, match="AD_LIB_DEVICE='meta'"):
        ad_lib.device()


def test_device_environment_variable_overrides(monkeypatch, capsys):
    monkeypatch.setenv("AD_LIB_DEVICE", "cpu")
    assert ad_lib.device(verbose=True) == torch.device("cpu")
    assert "AD_LIB_DEVICE" in capsys.readouterr().out


def test_device_rejects_bad_names(monkeypatch):
    monkeypatch.setenv("AD_LIB_DEVICE", "quantum")
    with pytest.raises(ValueError, match="AD_LIB_DEVICE"):
        ad_lib.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_asked_for_absent_cuda_is_an_error(monkeypatch):
    monkeypatch.setenv("AD_LIB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        ad_lib.device()


def test_seed_everything_makes_every_generator_repeatable():
    def draw(generator):
        return (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=generator))

    first = draw(ad_lib.seed_everything(123))
    second = draw(ad_lib.seed_everything(123))
    assert first[0] == second[0] and first[1] == second[1]
    torch.testing.assert_close(first[2], second[2])
    torch.testing.assert_close(first[3], second[3])


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (2**40, ValueError), (1.5, TypeError), ("0", TypeError), (True, TypeError)])
def test_seed_everything_rejects_bad_seeds(bad, error):
    with pytest.raises(error, match="seed"):
        ad_lib.seed_everything(bad)


def test_time_call_returns_the_best_of_several_runs():
    calls = []
    best = ad_lib.time_call(lambda: calls.append(1), repeat=3, warmup=2)
    assert len(calls) == 5 and 0 <= best < 1


@pytest.mark.parametrize("kwargs", [{"repeat": 0}, {"warmup": -1}, {"repeat": 1.5}])
def test_time_call_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="repeat|warmup"):
        ad_lib.time_call(lambda: None, **kwargs)


def test_cpu_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with ad_lib.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with ad_lib.cpu_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before  # restored after an error too


@pytest.mark.parametrize("bad", [0, -2, 1.0, True, "1"])
def test_cpu_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        with ad_lib.cpu_threads(bad):
            pass


def test_tensor_memory_counts_live_and_peak_bytes_against_the_sizes_allocated():
    from ad_lib.runtime import TensorMemory

    before = torch.ones(1000, dtype=torch.float64)  # existed before: not counted
    with TensorMemory() as memory:
        a = torch.zeros(100, dtype=torch.float64)  # 800 bytes
        b = a.reshape(10, 10)  # a view: the same storage, counted once
        c = torch.zeros(50, dtype=torch.float32) + before[:50].float()  # 200 bytes, plus a 200-byte temporary
        assert memory.current == 800 + 200
        del a
        assert memory.current == 1000  # b still holds the storage
        del b
        assert memory.current == 200
    # at the sum, a (800), the zeros (200), the float copy of before[:50] (200; the slice is a view of a
    # tensor from before the block, not counted) and their sum (200) were alive together
    assert memory.peak == 800 + 3 * 200
    assert c.numel() == 50
