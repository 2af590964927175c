"""ad_lib: the companion library of the course textbook on automatic differentiation.

One module per idea, in the order of the book:

- :mod:`ad_lib.finite_diff` (chapter 1): finite differences, the complex step,
  Jacobians by differences and a gradient checker.

and :mod:`ad_lib.runtime` for the device, the random seeds and the timings every
chapter uses.
"""

from ad_lib import finite_diff
from ad_lib.runtime import device, seed_everything, time_call

__version__ = "0.1.0"

__all__ = ["__version__", "device", "finite_diff", "seed_everything", "time_call"]
