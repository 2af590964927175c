"""Fixtures for the unit tests: the devices to test on."""

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each test that takes `device` runs on the CPU, and on CUDA when a GPU is present."""
    return torch.device(request.param)


def pytest_terminal_summary(terminalreporter):
    """Show how long releasing and grading each assignment took (recorded by test_6 of the assignments).

    The times travel as the tests' user properties, so they reach this summary from xdist's workers too.
    """
    lines = sorted({value for reports in terminalreporter.stats.values() for report in reports
                    for name, value in getattr(report, "user_properties", ()) if name == "assignment timings"})
    if lines:
        terminalreporter.section("assignment grading times")
        for line in lines:
            terminalreporter.write_line(line)
