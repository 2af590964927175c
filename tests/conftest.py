"""Fixtures for the unit tests: the devices to test on."""

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each test that takes `device` runs on the CPU, and on CUDA when a GPU is present."""
    return torch.device(request.param)


SUMMARIES = {  # a test's user property -> the section of the summary that shows it
    "assignment timings": "assignment grading times",  # test_6 of the assignments
    "grading tricks": "scores of the tricks handed in on assignment 3, beside the untouched release and the honest",
}


def pytest_terminal_summary(terminalreporter):
    """Show how long releasing and grading each assignment took, and what each trick of test_grading_tricks scored.

    They travel as the tests' user properties, so they reach this summary from xdist's workers too.
    """
    for property_name, heading in SUMMARIES.items():
        lines = [value for reports in terminalreporter.stats.values() for report in reports
                 for name, value in getattr(report, "user_properties", ()) if name == property_name]
        if lines:
            terminalreporter.section(heading)
            for line in (sorted(set(lines)) if property_name == "assignment timings" else dict.fromkeys(lines)):
                terminalreporter.write_line(line)
