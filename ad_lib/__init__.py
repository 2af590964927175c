"""ad_lib: the companion library of the course textbook on automatic differentiation.

One module per idea, in the order of the book:

- :mod:`ad_lib.finite_diff` (chapter 1): finite differences, the complex step,
  Jacobians by differences and a gradient checker.
- :mod:`ad_lib.ops`: the primitives, each with its value, its forward (JVP)
  and its reverse (VJP) rules side by side (chapters 2-4).
- :mod:`ad_lib.graph` (chapter 2): tracing a program into its computational graph.
- :mod:`ad_lib.forward` (chapter 3): dual numbers, ``jvp``, ``derivative``, ``jacfwd``.
- :mod:`ad_lib.reverse` (chapter 4): the scalar ``Value`` engine, the tensor
  tape (``vjp``, ``grad``, ``jacrev``) and ``hvp``.
- :mod:`ad_lib.compositions` (chapter 5): the cost of a Jacobian chain in
  each order, and the optimal order by dynamic programming.
- :mod:`ad_lib.feedforward` (chapter 6): the multi-layer perceptron and residual
  networks, with back-propagation written by hand.
- :mod:`ad_lib.adjoint` (chapter 6): ``odeint`` and ``odeint_adjoint``, fixed-step
  ODE solvers differentiated through the steps or by the adjoint-state method.
- :mod:`ad_lib.checkpointing` (chapter 7): back-propagation through time by hand, the residual
  recurrent perceptron, and binomial checkpointing (``revolve_cost``, ``revolve_schedule``,
  ``checkpoint_scan``).
- :mod:`ad_lib.reversible` (chapter 7): the leapfrog step and its exact inverse, and back-propagation
  that rebuilds the states backward instead of storing them (``reversible_leapfrog``).
- :mod:`ad_lib.implicit` (chapter 8): fixed points, argmin layers and minimum values differentiated by
  the implicit function theorem and the envelope theorem (``fixed_point``, ``argmin``, ``minimum``,
  ``conjugate_gradient``), ridge regression in closed form, and Sinkhorn's iteration as a fixed point.
- :mod:`ad_lib.declarative` (chapter 9): deep declarative nodes: the Jacobian of a constrained argmin
  (``ddn_jacobian``), robust vector pooling (``robust_pool``, ``RobustPool``) and the entropic
  optimal-transport node (``optimal_transport``, ``OptimalTransport``) with structured backward passes.
- :mod:`ad_lib.layers` (chapter 10): the building blocks of deep networks: dense layers, convolutions from
  their definition and as matrix products of unfolded inputs (``conv1d``, ``conv2d``, ``conv_transpose2d``
  with torch.nn.functional's signatures), the output-size formula, and the recurrent cell (``rnn_cell``, ``rnn``).
- :mod:`ad_lib.optim` (chapter 11): SGD with momentum and Nesterov's method, Adagrad, RMSprop, Adam and
  AdamW, written from their update rules as ``torch.optim.Optimizer`` subclasses with torch.optim's arguments.
- :mod:`ad_lib.normalization` (chapter 11): ``dropout``, batch normalization with its backward pass by hand
  (``batch_norm``, ``BatchNorm``) and group normalization (``group_norm``, ``GroupNorm``).
- :mod:`ad_lib.generative` (chapter 12): maximum likelihood and why push-forward models have no density, the
  GAN game and its alternating algorithm, Wasserstein GANs (weight clipping, gradient penalty, Lipschitz
  estimates), the exact 1-D and the sliced Wasserstein distances by sorting (``wasserstein_1d``,
  ``sliced_wasserstein``), minimum Kantorovich estimators, latent interpolation, auto-encoders and the
  principal angles that show a linear one recovers PCA.
- :mod:`ad_lib.sinkhorn` (chapter 13): entropic optimal transport by Sinkhorn's algorithm on the multipliers or in
  the log domain, batched (``sinkhorn``, ``sinkhorn_eps_scaling``), with its one-step maps, the primal and dual
  values, ``cost_matrix`` and Birkhoff's bound on the rate.
- :mod:`ad_lib.sinkhorn_gradients` (chapter 14): the gradient of Sinkhorn's value four ways (unrolled, by a reverse
  recursion derived by hand, by the envelope theorem, by implicit differentiation of the plan), Sinkhorn divergences
  between point clouds, and a generator fitted with them.
- :mod:`ad_lib.barycenter` (chapter 15): entropic Wasserstein barycenters by iterative Bregman projections, on the
  multipliers or in the log domain, batched and with separable costs on grids, their gradient in the histograms
  and the weights by a reverse recursion derived by hand, and Wasserstein dictionary learning.
- :mod:`ad_lib.markov` (chapter 16): optimal transport between Markov chains: random walks on graphs, stationary
  distributions, the discounted distance of Brugère, Wan and Wang as the fixed point of a contraction
  (``markov_ot_distance``) with its nm inner problems solved as one Sinkhorn, and its gradient by the adjoint system
  ``K^T L = G``, ``K = I - (1 - delta) P``, solved without forming ``K``.

and :mod:`ad_lib.runtime` for the device, the random seeds and the timings every
chapter uses. ``with ad_lib.detect_anomaly():`` (from :mod:`ad_lib.ops`) stops at
the first primitive that computes a NaN or an infinity.
"""

from ad_lib import (adjoint, barycenter, checkpointing, compositions, declarative, feedforward, finite_diff, forward,
                    generative, graph, implicit, layers, markov, normalization, ops, optim, reverse, reversible, sinkhorn,
                    sinkhorn_gradients)
from ad_lib.ops import detect_anomaly
from ad_lib.runtime import cpu_threads, device, seed_everything, time_call

__version__ = "0.1.0"

__all__ = ["__version__", "adjoint", "barycenter", "checkpointing", "compositions", "cpu_threads", "declarative", "detect_anomaly", "device", "feedforward", "finite_diff", "forward", "generative", "graph", "implicit", "layers", "markov", "normalization", "ops", "optim", "reverse", "reversible", "seed_everything", "sinkhorn", "sinkhorn_gradients", "time_call"]
