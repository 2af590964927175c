"""ad_lib.device() and ad_lib.seed_everything()."""

import random

import numpy as np
import pytest
import torch

import ad_lib


def test_version_is_a_string():
    assert isinstance(ad_lib.__version__, str) and ad_lib.__version__.count(".") == 2


def test_device_default_prefers_cuda_then_cpu(monkeypatch, capsys):
    monkeypatch.delenv("AD_LIB_DEVICE", raising=False)
    picked = ad_lib.device(verbose=True)
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert picked.type == "cuda"
    else:
        assert picked.type in ("mps", "cpu")
    assert str(picked) in capsys.readouterr().out


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
