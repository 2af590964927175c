"""Recurrent networks, back-propagation through time and binomial checkpointing (chapter 7).

A recurrent network applies the same map ``h`` with the same parameters
``theta`` again and again, ``x_k = h(x_{k-1}, theta)`` for ``k = 1, ..., l``,
and a loss ``L(x_l, theta)`` may depend on ``theta`` too. This module holds,
in the order of the chapter:

1. :func:`bptt`, back-propagation through time written by hand (the notes'
   eq. (10)): the states are stored on the way forward, the adjoint
   ``z_k = grad_{x_k} f`` goes back with one vector-Jacobian product of ``h``
   per step (taken from ``torch.autograd``), and the parameter gradient is the
   loss's own ``grad_theta L`` plus one term per step.
2. Two maps ``h``: the residual recurrent perceptron
   ``x + W_2^T rho(W_1 x)`` (:func:`residual_perceptron`) and its special case
   ``W_2 = -tau W_1``, ``rho = psi'``, one step of gradient descent on
   ``sum_i psi((W_1 x)_i)`` (:func:`gradient_descent_perceptron`).
3. Binomial checkpointing (Griewank's "revolve"): storing every state costs
   memory linear in ``l``; keeping only ``s`` of them and recomputing the
   others costs :func:`revolve_cost` extra steps, the least possible.
   :func:`revolve_schedule` writes the schedule, and :func:`checkpoint_scan`
   runs it inside an ``autograd.Function``, as ``torch.utils.checkpoint``
   runs its uniform segments.

Counting convention. ``revolve_cost(l, s)`` counts the *advances*: the calls
of ``step`` that only move a state forward, the first sweep from ``x_0`` to
``x_{l-1}`` included. On top of those, each of the ``l`` steps is
evaluated once with its tape recorded, just before it is reversed (the last
one, which produces ``x_l``, during the forward pass). So a call of
:func:`checkpoint_scan` followed by a backward pass calls ``step`` exactly
``revolve_cost(l, s) + l`` times; plain back-propagation calls it ``l``
times.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Callable, Mapping, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

__all__ = [
    "bptt",
    "residual_perceptron",
    "gradient_descent_perceptron",
    "revolve_cost",
    "revolve_schedule",
    "checkpoint_scan",
]


def _check_count(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {least}, got {type(value).__name__} {value!r}")
    if value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value}")
    return int(value)


def _check_state(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (the state), got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor to be differentiated, got dtype {x.dtype}")
    return x


def _check_step_output(y, x: torch.Tensor, what: str) -> torch.Tensor:
    # a step maps a state to a state of the same shape, dtype and device
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must return a torch.Tensor (the next state), got {type(y).__name__}")
    if y.shape != x.shape or y.dtype != x.dtype or y.device != x.device:
        raise ValueError(
            f"{what} changed the state: it took shape {tuple(x.shape)}, {x.dtype} on {x.device} and returned "
            f"shape {tuple(y.shape)}, {y.dtype} on {y.device}; a recurrent step must keep the state's shape, "
            "dtype and device"
        )
    return y


def _check_finite(x: torch.Tensor, steps: int, what: str) -> torch.Tensor:
    # one check, at the end of the forward pass: a recurrence that diverged is reported, not returned
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"{what}: the state after {steps} steps has non-finite entries (inf or NaN): the recurrence "
            "diverged or the step produced a NaN; try fewer steps, a smaller step size or other parameters"
        )
    return x


# ---------------------------------------------------------------------------
# 1. Back-propagation through time, by hand
# ---------------------------------------------------------------------------


def bptt(h: Callable, x0: torch.Tensor, theta: Sequence[torch.Tensor], steps: int, loss: Callable):
    """Value and gradients of ``f(theta, x_0) = loss(x_l, theta)`` with ``x_k = h(x_{k-1}, theta)``, by hand.

    The forward pass stores the ``l + 1`` states. The backward pass starts
    from ``z_l = grad_x loss(x_l, theta)`` and ``g = grad_theta loss(x_l, theta)``
    and, for ``k = l, ..., 1``, adds ``[d_theta h(x_{k-1}, theta)]^T z_k`` to
    ``g`` and sets ``z_{k-1} = [d_x h(x_{k-1}, theta)]^T z_k`` (the notes'
    eq. (10)); both products come from one ``torch.autograd.grad`` call on a
    single step, the rest of the recursion is written out here.

    Cost: ``h`` is evaluated twice per step, once without a tape on the way
    forward and once more in the backward pass, at the stored state, to
    record the tape of that one step (``local_vjp``): ``2 l`` calls, the
    scheme "store every state, tape each step again", which keeps states
    rather than tapes (``checkpoint_scan`` with ``snapshots >= l - 1`` makes
    ``2 l - 1`` calls). Plain ``torch.autograd`` through the loop calls ``h``
    ``l`` times and keeps every step's tape.

    Parameters
    ----------
    h:
        ``h(x, theta)``, the recurrent map: a state of any shape to a state of
        the same shape, dtype and device.
    x0:
        the initial state.
    theta:
        a sequence of tensors, the parameters; ``h`` and ``loss`` receive it
        as a tuple.
    steps:
        ``l >= 0``, the number of applications of ``h``.
    loss:
        ``loss(x, theta)``, a real scalar tensor.

    Returns
    -------
    (value, grads_theta, grad_x0)
        the loss (a detached scalar), a tuple of the gradients with respect
        to each tensor of ``theta`` (zeros where it has no influence), and the
        gradient with respect to ``x0``. A non-finite ``x_l`` (a recurrence
        that diverged) is a ``FloatingPointError``.

    Explained in chapter 7, section "Recurrent networks and back-propagation through time".
    """
    if not callable(h) or not callable(loss):
        raise TypeError("h and loss must be callables, h(x, theta) -> state and loss(x, theta) -> scalar")
    x0 = _check_state(x0, "x0")
    if isinstance(theta, torch.Tensor) or not isinstance(theta, Sequence):
        raise TypeError(f"theta must be a sequence (tuple or list) of tensors, got {type(theta).__name__}")
    for i, t in enumerate(theta):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"theta[{i}] must be a torch.Tensor, got {type(t).__name__}")
    steps = _check_count("steps", steps, 0)
    theta = tuple(t.detach() for t in theta)

    states = [x0.detach()]  # the forward pass: every state is kept, x_0 ... x_l
    with torch.no_grad():
        for k in range(steps):
            states.append(_check_step_output(h(states[-1], theta), states[-1], "h"))
    _check_finite(states[-1], steps, "bptt")

    def local_vjp(fn, x, cotangent):
        # one reverse step: [d_x fn]^T cotangent and [d_theta fn]^T cotangent, by torch.autograd
        x = x.detach().requires_grad_(True)
        th = tuple(t.detach().requires_grad_(True) for t in theta)
        with torch.enable_grad():
            out = fn(x, th)
            if cotangent is None:
                if not isinstance(out, torch.Tensor) or out.numel() != 1 or out.is_complex():
                    raise ValueError(f"loss must return a real scalar tensor, got {out!r:.80}")
                out = out.reshape(())
            grads = torch.autograd.grad(out, (x, *th), cotangent, allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for g, a in zip(grads, (x, *th))]
        return out.detach(), grads[0], grads[1:]

    value, z, grads_theta = local_vjp(loss, states[-1], None)  # z_l and grad_theta L(x_l, theta)
    for k in range(steps, 0, -1):
        _, z, contribution = local_vjp(h, states[k - 1], z)  # z_{k-1} and the k-th term of the sum
        grads_theta = [g + c for g, c in zip(grads_theta, contribution)]
    return value, tuple(grads_theta), z


# ---------------------------------------------------------------------------
# 2. Two recurrent maps
# ---------------------------------------------------------------------------


def residual_perceptron(x: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor, rho: Callable = torch.tanh) -> torch.Tensor:
    """The residual recurrent perceptron ``h(x, theta) = x + W_2^T rho(W_1 x)`` (the notes' Figure 8).

    Parameters
    ----------
    x:
        the state, shape ``(..., n)`` (leading batch dimensions allowed).
    W1, W2:
        the weights, both of shape ``(q, n)`` for ``q`` hidden neurons (the
        notes write them in ``R^{n x q}``; with ``x`` in ``R^n`` the product
        ``W_1 x`` needs ``W_1`` in ``R^{q x n}``).
    rho:
        a pointwise non-linearity.

    Returns
    -------
    torch.Tensor
        shape ``(..., n)``.

    Explained in chapter 7, section "The residual recurrent perceptron".
    """
    for name, t in (("x", x), ("W1", W1), ("W2", W2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if W1.dim() != 2 or W2.shape != W1.shape:
        raise ValueError(f"W1 and W2 must be matrices of the same shape (q, n), got {tuple(W1.shape)} and {tuple(W2.shape)}")
    if x.dim() < 1 or x.shape[-1] != W1.shape[1]:
        raise ValueError(f"x must have shape (..., n) with n = {W1.shape[1]} (W1's columns), got {tuple(x.shape)}")
    return x + rho(x @ W1.T) @ W2


def gradient_descent_perceptron(x: torch.Tensor, W1: torch.Tensor, tau: float, psi_prime: Callable) -> torch.Tensor:
    """One gradient-descent step ``x - tau W_1^T psi'(W_1 x)`` on ``E(x) = sum_i psi((W_1 x)_i)``.

    It is :func:`residual_perceptron` with ``W_2 = -tau W_1`` and
    ``rho = psi'``: iterating it is gradient descent with step ``tau`` on
    ``E``, so for a small enough ``tau`` and many steps the recurrent
    network computes (an approximation of) ``argmin_x E(x)``: an argmin
    layer, whose gradient the next chapter obtains by implicit
    differentiation, without unrolling.

    Parameters
    ----------
    x:
        the state, shape ``(..., n)``.
    W1:
        shape ``(q, n)``.
    tau:
        the step size, a positive number (or a positive scalar tensor).
    psi_prime:
        the derivative of the separable function ``psi``, applied pointwise.

    Returns
    -------
    torch.Tensor
        the next state, shape ``(..., n)`` like ``x``.

    Explained in chapter 7, section "Gradient descent as a recurrent network".
    """
    if isinstance(tau, torch.Tensor):
        if tau.numel() != 1 or not bool(tau > 0):
            raise ValueError(f"tau must be a positive scalar, got {tau}")
    elif isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not tau > 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be a positive finite number (a step size), got {tau!r}")
    return residual_perceptron(x, W1, -tau * W1, psi_prime)


# ---------------------------------------------------------------------------
# 3. Binomial checkpointing
# ---------------------------------------------------------------------------


def _repetitions(steps: int, snapshots: int) -> int:
    # r: the smallest integer with steps <= C(snapshots + r, snapshots)
    r = 0
    while math.comb(snapshots + r, snapshots) < steps:
        r += 1
    return r


def revolve_cost(steps: int, snapshots: int) -> int:
    """The least number of forward steps to reverse ``l`` steps while storing at most ``s`` states.

    Griewank's binomial formula: with ``r`` the smallest integer such that
    ``l <= C(s + r, s)``, the cost is ``r l - C(s + r, s + 1)``. For instance
    316 for ``l = 100``, ``s = 5``; 0 for ``l = 0``; ``l - 1`` when
    ``l >= 1`` and ``s >= l - 1`` (store all the states but the last);
    ``l (l - 1) / 2`` when ``s = 1`` (restart from ``x_0`` for every step).

    Convention: this counts the *advances*, the evaluations of the step that
    only move a state forward, including the first sweep from ``x_0`` to
    ``x_{l-1}``, and the ``s`` stored states include ``x_0``. It does not
    count the ``l`` evaluations, one per step, that record the step's tape
    just before its reverse sweep: :func:`checkpoint_scan` with a backward
    pass calls ``step`` ``revolve_cost(l, s) + l`` times in all.

    Parameters
    ----------
    steps:
        ``l >= 0``.
    snapshots:
        ``s >= 1``.

    Returns
    -------
    int
        the least number of advances, ``>= 0``.

    Explained in chapter 7, section "Binomial checkpointing".
    """
    steps = _check_count("steps", steps, 0)
    snapshots = _check_count("snapshots", snapshots, 1)
    r = _repetitions(steps, snapshots)
    return r * steps - math.comb(snapshots + r, snapshots + 1)


def _split(n: int, s: int) -> int:
    # The first checkpoint of an optimal schedule: advance m steps and store x_m. The cost
    # m + cost(n - m, s - 1) + cost(m, s) is convex in m, and grows from m to m + 1 by
    # 1 + r(m + 1, s) - r(n - m, s - 1); the smallest m where that is >= 0 is optimal.
    lo, hi = 1, n - 1
    while lo < hi:
        m = (lo + hi) // 2
        if 1 + _repetitions(m + 1, s) - _repetitions(n - m, s - 1) >= 0:
            hi = m
        else:
            lo = m + 1
    return lo


def _schedule(a: int, n: int, s: int, out: list) -> None:
    # Reverse steps a, ..., a + n - 1. On entry x_a is stored and is the current state, and s
    # snapshots (x_a's included) may be used; the stored x_a is left in place for the caller.
    # The recursion "right part with s - 1 snapshots, then left part with s" is run with an
    # explicit stack of pending work, not Python recursion: its depth grows with s (to 1000 and more).
    pending = [(a, n, s)]  # (a, n, s): a sub-schedule to write; a tuple of strings: an action
    while pending:
        item = pending.pop()
        if isinstance(item[0], str):
            out.append(item)
            continue
        a, n, s = item
        if n == 0:
            continue
        if n == 1:
            out.append(("reverse", a))
            continue
        if s >= n - 1:  # enough room: store every state but the last, n - 1 advances
            for k in range(1, n):
                out.append(("advance", a + k - 1, a + k))
                if k < n - 1:
                    out.append(("store", a + k))
            out.append(("reverse", a + n - 1))
            for k in range(n - 2, -1, -1):
                out.append(("restore", a + k))
                out.append(("reverse", a + k))
                if k > 0:
                    out.append(("free", a + k))
            continue
        if s == 1:  # one snapshot, x_a: go forward from it again for every step
            for i, k in enumerate(range(n - 1, -1, -1)):
                if i:
                    out.append(("restore", a))
                if k:
                    out.append(("advance", a, a + k))
                out.append(("reverse", a + k))
            continue
        m = _split(n, s)
        out.append(("advance", a, a + m))
        out.append(("store", a + m))
        # in the order they run: the right part with one snapshot fewer, free x_m, back to x_a, the left part
        pending += [(a, m, s), ("restore", a), ("free", a + m), (a + m, n - m, s - 1)]


def revolve_schedule(steps: int, snapshots: int) -> list[tuple]:
    """The binomial checkpointing schedule for ``steps`` steps and ``snapshots`` stored states, as actions.

    The actions, on state indices only (``x_k`` is the state after ``k``
    steps):

    - ``("store", k)``: keep the current state ``x_k`` as a snapshot;
    - ``("advance", i, j)``: from the current state ``x_i``, apply the step
      ``j - i`` times, without recording, to reach ``x_j``;
    - ``("reverse", k)``: apply the step to the current state ``x_k`` while
      recording its tape, and back-propagate through it: the adjoint of
      ``x_{k+1}`` becomes that of ``x_k``;
    - ``("restore", k)``: make the snapshot ``x_k`` the current state;
    - ``("free", k)``: drop the snapshot ``x_k``.

    The schedule starts with ``("store", 0)`` (``x_0`` is one of the
    snapshots), never holds more than ``snapshots`` snapshots, reverses the
    steps ``l - 1, ..., 0`` in that order, and its advances add up to
    :func:`revolve_cost` ``(steps, snapshots)``. It is built recursively:
    advance to a well-chosen ``x_m`` and store it, reverse the steps after
    ``m`` with one snapshot fewer, then the steps before ``m`` with all of
    them, with an explicit stack rather than Python recursion (thousands of
    snapshots are fine).

    Returns
    -------
    list of tuple
        the actions, in order; for ``steps = 0`` only ``[("store", 0)]``.

    Explained in chapter 7, section "The revolve schedule".
    """
    steps = _check_count("steps", steps, 0)
    snapshots = _check_count("snapshots", snapshots, 1)
    out = [("store", 0)]
    _schedule(0, steps, snapshots, out)
    return out


class _TensorsRead(TorchFunctionMode):
    """Record the tensors that require grad which a call reads but did not make: its parameters."""

    def __init__(self, state):
        super().__init__()
        self.state = state
        self.found = {}  # id -> tensor, in the order first read
        self.made = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for a in tree_leaves((args, kwargs)):
            if isinstance(a, torch.Tensor) and a.requires_grad and a is not self.state and id(a) not in self.made:
                self.found.setdefault(id(a), a)
        out = func(*args, **kwargs)
        self.made.update(id(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def _hidden_tensors(y: torch.Tensor, x_in: torch.Tensor, params: list) -> list:
    # the leaves requiring grad that a taped output depends on, other than its input and the parameters (and
    # what the parameters were computed from): a walk over the tape, a few nodes for a step, no extra call
    stops = {id(p.grad_fn) for p in params if p.grad_fn is not None}
    known = {id(p) for p in params}
    known.add(id(x_in))
    hidden, seen, stack = [], set(), [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or id(node) in stops:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if variable is not None and id(variable) not in known:
            hidden.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return hidden


def _check_reads(reader, params: list, when: str) -> None:
    # a tensor requiring grad that the step read and that is not a parameter would get no gradient: say so
    known = {id(p) for p in params}
    missing = reader if isinstance(reader, list) else [t for key, t in reader.found.items() if key not in known]
    if missing:
        shapes = ", ".join(str(tuple(t.shape)) for t in missing)
        raise ValueError(
            f"step read tensors that require grad but are not in params (shapes {shapes}), {when}: their gradients "
            "would silently be missing. Pass every tensor the step uses, on any call, as params=[...] (or leave "
            "params out when the step reads the same tensors on every call), or detach those that need no gradient"
        )


def _in_place_error(what: str) -> ValueError:
    return ValueError(
        f"{what} modified its input state in place: checkpoint_scan calls step again on stored states, which must "
        "stay intact; return a new tensor (write x = x + ... rather than x += ..., x.add(...) rather than x.add_(...))"
    )


def _rng_devices(x: torch.Tensor) -> list:
    # the generators whose state a step on x may draw from: the CPU's always, and x's CUDA device's
    return [x.device] if x.device.type == "cuda" else []


def _get_rng(devices: list) -> tuple:
    return (torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in devices))


def _set_rng(states: tuple, devices: list) -> None:
    torch.set_rng_state(states[0])
    for d, state in zip(devices, states[1:]):
        torch.cuda.set_rng_state(state, d)


def _same_rng(a: tuple, b: tuple) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b))


class _Revolve:
    """Runs a revolve schedule: the snapshots, the current state, the pending tape, the counts."""

    def __init__(self, step, steps, snapshots, params, first, stats, rng):
        self.step = step
        self.steps = steps
        self.actions = revolve_schedule(steps, snapshots)
        self.position = 0
        self.params = params
        self.first = first  # (x_0, step(x_0)): the first call, made already (with its tape when l = 1)
        self.stats = stats
        # (devices, state before the first call) when the step draws random numbers, else None: then every
        # snapshot keeps the generators' state with it, and a restore sets it back, so that the calls made
        # again draw the same numbers as the first time (as torch.utils.checkpoint's preserve_rng_state does)
        self.rng = rng
        self.snaps = {}
        self.current = None
        self.tape = None  # (x_k with requires_grad, step(x_k)): the step that is reversed next
        self.calls = 1  # the first call, made by checkpoint_scan before the schedule runs

    def _call(self, x, taped, index=None):
        if self.first is not None:  # the first call of the schedule was made by checkpoint_scan
            x_in, y = self.first
            self.first = None
            return (x_in, y) if taped else y.detach()
        self.calls += 1
        if taped:
            x_in = x.detach().requires_grad_(True)
            with torch.enable_grad():
                try:
                    y = _check_step_output(self.step(x_in), x_in, "step")
                except RuntimeError as error:
                    if "in-place operation" in str(error):
                        raise _in_place_error("step") from error
                    raise
            # every step is taped exactly once: the leaves of its tape show the tensors it read that require
            # grad and are missing from params, including those read on some calls only
            if y.requires_grad:
                _check_reads(_hidden_tensors(y, x_in, self.params), self.params, f"on the call from state x_{index}")
            return x_in, y
        version = x._version
        with torch.no_grad():
            y = self.step(x)
        if x._version != version:
            raise _in_place_error("step")
        return _check_step_output(y, x, "step")

    def _execute(self, action):
        # one action that is not a reverse step
        kind = action[0]
        if kind == "store":
            if self.rng is not None:  # the generators' state at x_k: before the first call, or now
                rng = self.rng[1] if self.first is not None else _get_rng(self.rng[0])
            self.snaps[action[1]] = (self.current, rng if self.rng is not None else None)
            self.stats["peak_snapshots"] = max(self.stats.get("peak_snapshots", 0), len(self.snaps))
        elif kind == "restore":
            self.current, rng = self.snaps[action[1]]
            if rng is not None:
                _set_rng(rng, self.rng[0])
        elif kind == "free":
            del self.snaps[action[1]]
        else:  # advance
            for _ in range(action[2] - action[1]):
                self.current = self._call(self.current, taped=False)

    def forward(self, x0):
        """The forward pass: the schedule up to the first reverse step, whose tape is kept; returns x_l."""
        self.x0 = x0.detach()
        self.current = self.x0
        for self.position, action in enumerate(self.actions):
            if action[0] == "reverse":
                self.tape = self._call(self.current, taped=True, index=action[1])
                self.current = None
                return self.tape[1].detach()
            self._execute(action)
        raise AssertionError("a revolve schedule with steps >= 1 has a reverse action")

    def tapes(self):
        """The backward pass's steps: the pending tape, then one recorded tape per reverse action."""
        tape, self.tape = self.tape, None
        yield tape
        del tape
        for action in self.actions[self.position + 1:]:
            if action[0] == "reverse":
                yield self._call(self.current, taped=True, index=action[1])
            else:
                self._execute(action)
        self.snaps.clear()
        self.current = None

    def backward(self, grad_output):
        outside = _get_rng(self.rng[0]) if self.rng is not None else None  # the caller's generators, put back after
        try:
            if self.tape is None:  # a second backward pass (retain_graph=True, gradcheck): start again from x_0
                if self.rng is not None:
                    _set_rng(self.rng[1], self.rng[0])
                self.forward(self.x0)
            return self._backward(grad_output)
        finally:
            if outside is not None:
                _set_rng(outside, self.rng[0])

    def _backward(self, grad_output):
        needed = [p for p in self.params if p.requires_grad]
        grads = {id(p): None for p in needed}
        g = grad_output
        for x_in, y in self.tapes():
            if not y.requires_grad:  # a step that depends on neither the state nor the parameters
                parts = (None,) * (1 + len(needed))
            else:
                with torch.enable_grad():
                    parts = torch.autograd.grad(y, (x_in, *needed), g, allow_unused=True)
            g = torch.zeros_like(x_in) if parts[0] is None else parts[0]
            for p, gp in zip(needed, parts[1:]):
                if gp is not None:
                    grads[id(p)] = gp if grads[id(p)] is None else grads[id(p)] + gp
            del x_in, y, parts  # this step's tape is no longer needed
        return g, [grads.get(id(p)) for p in self.params]


class _CheckpointScan(torch.autograd.Function):
    """x_l from x_0 with the revolve schedule; the backward pass runs the rest of the schedule."""

    @staticmethod
    def forward(ctx, runner, x0, *params):
        ctx.runner = runner
        out = _check_finite(runner.forward(x0), runner.steps, "checkpoint_scan")
        runner.stats["forward_calls"] = runner.calls
        return out

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # autograd runs a backward pass with grad mode on only for create_graph=True
            raise RuntimeError(
                "checkpoint_scan's backward pass is first-order only: it cannot build the graph of the gradient "
                "(create_graph=True, double backward, Hessian-vector products); differentiate the plain loop, "
                "or torch.utils.checkpoint.checkpoint(..., use_reentrant=False), for second derivatives"
            )
        runner = ctx.runner
        before = runner.calls
        g, param_grads = runner.backward(grad_output)
        runner.stats["backward_calls"] = runner.calls - before
        return (None, g, *param_grads)


def checkpoint_scan(
    step: Callable,
    x0: torch.Tensor,
    steps: int,
    snapshots: int,
    params: Sequence[torch.Tensor] | None = None,
    stats: dict | None = None,
    preserve_rng_state: bool = True,
) -> torch.Tensor:
    """``x_l`` for ``x_{k+1} = step(x_k)``, differentiable, storing at most ``snapshots`` states (binomial checkpointing).

    The forward pass runs the :func:`revolve_schedule` up to its first
    reverse action: it moves from ``x_0`` to ``x_{l-1}`` without recording
    any tape, keeping the snapshots the schedule asks for, then applies the
    last step with its tape recorded and returns ``x_l``. The backward pass
    (an ``autograd.Function``, so ``loss.backward()`` and
    ``torch.autograd.grad`` both work) runs the rest of the schedule: it
    restores snapshots, advances again to the states it needs, and
    back-propagates through one recorded step at a time, from the last to
    the first. The gradients are those of the plain loop, to rounding.

    Cost: with a backward pass, ``step`` is called ``revolve_cost(l, s) + l``
    times (``l`` in the forward pass), the least possible with ``s`` stored
    states; without one (no input requires grad, or under
    ``torch.no_grad()``), ``l`` times and nothing is stored. Memory: between
    the two passes, at most ``s`` states (``x_0`` counted, which the caller
    holds anyway) and the tape of the last step, as
    ``torch.utils.checkpoint.checkpoint_sequential`` keeps its last segment's
    tape; during the backward pass, at most ``s`` states, the working state
    and the tape of one step. A second backward pass through the same output
    (``retain_graph=True``, ``torch.autograd.gradcheck``) runs the whole
    schedule again from ``x_0``. The backward pass is first-order only: with
    ``create_graph=True`` (double backward) it raises a ``RuntimeError``, and
    ``torch.func`` transforms do not apply (the ``autograd.Function`` has no
    ``setup_context``).

    The parameters. As ``torch.utils.checkpoint`` does, the step is re-run in
    the backward pass and its vector-Jacobian products are taken with respect
    to the state and to the parameters it uses. Those are ``params`` when
    given (a tensor listed twice counts once); otherwise the parameters of
    ``step`` if it is an ``nn.Module``, together with every tensor requiring
    grad that ``step`` reads without computing it (the tensors it closes
    over), recorded by a ``TorchFunctionMode`` during its first call (which
    the schedule needs anyway: no extra call). They become inputs of the
    ``autograd.Function``, so gradients reach them and, through them,
    whatever they were computed from. A tensor requiring grad that the step
    reads and that is not a parameter (missing from ``params``, or read on
    later calls only, such as ``Ws[k]`` for a counter ``k``) raises a
    ``ValueError`` rather than silently getting no gradient: the same
    ``TorchFunctionMode`` watches the first call, and the tape of every
    taped call (each step is taped once) is searched for leaves that are
    neither the state nor parameters.

    Random steps. The step is called again in the backward pass, on states
    restored from snapshots, and must compute the same numbers as the first
    time. With ``preserve_rng_state`` (the default, as in
    ``torch.utils.checkpoint``), a step that draws from the global random
    number generators (dropout, ``torch.randn``: the CPU's and, for a state
    on a CUDA device, that device's) has them saved with each snapshot and
    restored with it, so the calls made again draw the same numbers and the
    gradients are those of the plain loop with the same seed; the
    generators are left after the backward pass as they were before it.
    Whether the step draws is seen at its first call (the generators' state
    changed), and only then are states saved: a deterministic step pays
    nothing. A step that draws only on later calls, or from its own
    ``torch.Generator``, is not covered.

    Parameters
    ----------
    step:
        ``step(x) -> x``, a callable (or ``nn.Module``) that keeps the
        state's shape, dtype and device. It is called again during the
        backward pass on stored states, so it must not modify its input in
        place (a ``ValueError``; in the differentiable case the caller's
        ``x0`` is left intact).
    x0:
        the initial state, a floating-point tensor of any shape.
    steps:
        ``l >= 0`` (for ``l = 0``, ``x0`` itself is returned).
    snapshots:
        ``s >= 1``, the most states stored at once (``x_0`` included).
    params:
        optional, a sequence (list or tuple) of the tensors ``step`` reads
        and that need gradients, on any of its calls.
    stats:
        optional dict, filled with ``"forward_calls"``,
        ``"backward_calls"`` (calls of ``step`` in each pass, once it has
        run), ``"peak_snapshots"`` (most states stored at once),
        ``"schedule_cost"`` (``revolve_cost(l, s)``), ``"params"`` (how
        many parameter tensors were found) and ``"rng_saved"`` (whether the
        generators' states are kept with the snapshots).
    preserve_rng_state:
        ``True`` (the default): keep the random generators' state with each
        snapshot when the step draws random numbers; ``False``: never (for
        a step known to be deterministic).

    Returns
    -------
    torch.Tensor
        ``x_l``, of ``x0``'s shape.

    Explained in chapter 7, section "Binomial checkpointing".
    """
    if not callable(step):
        raise TypeError(f"step must be a callable step(x) -> x (a function or an nn.Module), got {type(step).__name__}")
    x0 = _check_state(x0, "x0")
    steps = _check_count("steps", steps, 0)
    snapshots = _check_count("snapshots", snapshots, 1)
    explicit = params is not None
    if explicit:
        if isinstance(params, (torch.Tensor, Mapping, str)) or not hasattr(params, "__iter__"):
            raise TypeError(
                "params must be a sequence (list or tuple) of tensors, e.g. list(module.parameters()) or "
                f"list(params_dict.values()), got {type(params).__name__}"
            )
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        params = list({id(p): p for p in params}.values())  # a tensor listed twice would get its gradient twice
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict (or None), got {type(stats).__name__}")
    if not isinstance(preserve_rng_state, bool):
        raise TypeError(f"preserve_rng_state must be True or False, got {preserve_rng_state!r}")
    stats = {} if stats is None else stats
    stats.update(schedule_cost=revolve_cost(steps, snapshots), peak_snapshots=0, backward_calls=0, rng_saved=False)
    if steps == 0:
        stats.update(forward_calls=0, params=0)
        return x0

    grad_mode = torch.is_grad_enabled()
    # With grad mode on, the first call reads a leaf that requires grad: an in-place step fails there, as in
    # the plain loop, before it can touch the caller's x0; its tape is kept only when l = 1 (the last step's).
    x_in = x0.detach().requires_grad_(True) if grad_mode else x0.detach()
    devices = _rng_devices(x0)
    rng_before = _get_rng(devices) if preserve_rng_state and grad_mode else None
    version = x_in._version
    # for l > 1 the first call's tape is thrown away at once: an inner pair of hooks hides it from an outer
    # torch.autograd.graph.saved_tensors_hooks (which counts what the forward pass keeps); the pack hook
    # detaches, so that no saved output refers back to its own graph (a cycle only the garbage collector frees)
    hide = contextlib.nullcontext()
    if steps > 1:
        hide = torch.autograd.graph.saved_tensors_hooks(torch.Tensor.detach, lambda v: v)
    with torch.set_grad_enabled(grad_mode), hide, _TensorsRead(x_in) as reader:
        try:
            y = step(x_in)
        except RuntimeError as error:
            if grad_mode and "in-place operation" in str(error):
                raise _in_place_error("step") from error
            raise
    if x_in._version != version:
        raise _in_place_error("step")
    y = _check_step_output(y, x_in, "step")
    if not explicit:  # the parameters: the module's, and the tensors requiring grad the first call read
        found = {id(p): p for p in step.parameters() if p.requires_grad} if isinstance(step, torch.nn.Module) else {}
        for key, tensor in reader.found.items():
            found.setdefault(key, tensor)
        params = list(found.values())
    elif grad_mode:
        _check_reads(reader, params, "on its first call")
    stats["params"] = len(params)

    if not grad_mode or not (x0.requires_grad or any(p.requires_grad for p in params)):
        x = y.detach()  # nothing to differentiate: the plain loop, l calls, nothing stored
        with torch.no_grad():
            for _ in range(steps - 1):
                version = x._version
                y = step(x)
                if x._version != version:
                    raise _in_place_error("step")
                x = _check_step_output(y, x, "step")
        stats["forward_calls"] = steps
        return _check_finite(x, steps, "checkpoint_scan")
    if steps > 1:
        y = y.detach()  # the first call's tape is the last step's only when l = 1
        x_in = x_in.detach()
    rng = None
    if rng_before is not None and not _same_rng(rng_before, _get_rng(devices)):
        rng = (devices, rng_before)  # the step drew random numbers: the snapshots keep the generators' state
        stats["rng_saved"] = True
    runner = _Revolve(step, steps, snapshots, params, (x_in, y), stats, rng)
    del y
    return _CheckpointScan.apply(runner, x0, *params)
