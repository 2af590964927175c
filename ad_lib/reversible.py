"""Reversible integration: the leapfrog scheme, and back-propagation that stores no trajectory (chapter 7).

The state is split in two, ``x = (r, s)``, and the field has the structure
``r' = F(t, s)``, ``s' = G(t, r)``: each half moves with the other half only.
The leapfrog step of size ``tau`` from time ``t`` updates one half, then the
other with the half just updated::

    r_{k+1} = r_k + tau F(t_k, s_k)
    s_{k+1} = s_k + tau G(t_k + tau/2, r_{k+1})

and each line can be solved for the old half, last line first::

    s_k = s_{k+1} - tau G(t_k + tau/2, r_{k+1})
    r_k = r_{k+1} - tau F(t_k, s_k)

so the step has an exact inverse that evaluates the same two fields at the
same points (chapter 7, section "Reversible leapfrog").

Back-propagation through ``steps`` steps normally stores every state it
visited. :func:`reversible_leapfrog` stores only the last one: its backward
pass walks the trajectory backward with the inverse step, and the two field
evaluations that reconstruct a state are the very ones whose vector-Jacobian
products the chain rule needs. Memory does not grow with ``steps``; time is
about that of the forward pass plus one VJP of each field per step.

In floating point the inverse is exact only up to rounding:
``(s + tau G) - tau G`` is ``s`` up to half a unit in the last place of
``s + tau G``, and these errors add up, and can be amplified, over the steps.
:func:`reconstruction_error` measures how far the walk back lands from ``x0``.

The fields are called ``F(t, s)`` and ``G(t, r)`` with ``t`` a 0-dimensional
tensor of the state's dtype and device, like the right-hand sides of
``torchdiffeq`` and :mod:`ad_lib.adjoint` (``func(t, y)``). ``r`` and ``s`` may
have different shapes; ``F`` returns ``r``'s shape and ``G`` ``s``'s.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch

__all__ = ["leapfrog_step", "leapfrog_inverse", "leapfrog", "reversible_leapfrog", "ReversibleLeapfrog",
           "reconstruction_error", "saved_tensor_bytes"]


# ---------------------------------------------------------------------------
# Checks of the inputs
# ---------------------------------------------------------------------------


def _check_field(field, name: str):
    if not callable(field):
        raise TypeError(f"{name} must be a callable {name}(t, state) returning a tensor, got {type(field).__name__}")


def _check_state(r, s, r_name: str = "r", s_name: str = "s"):
    for name, x in ((r_name, r), (s_name, s)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor (float32 or float64), got dtype {x.dtype}")
        if x.numel() == 0:
            raise ValueError(f"{name} must hold at least one number, got shape {tuple(x.shape)}")
    if r.dtype != s.dtype or r.device != s.device:
        raise ValueError(f"{r_name} and {s_name} must share a dtype and a device, got {r.dtype} on {r.device} "
                         f"and {s.dtype} on {s.device}")


def _check_real(value, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number (a Python float), got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive (the step size), got {value!r}")
    return float(value)


def _check_steps(steps) -> int:
    # the library's convention: a value of the wrong type is a TypeError, a value out of range a ValueError
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be a non-negative integer (the number of leapfrog steps), got "
                        f"{type(steps).__name__} {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be a non-negative integer (the number of leapfrog steps), got {steps!r}")
    return int(steps)


def _evaluate(field, name: str, t: float, x: torch.Tensor, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """``field(t, x)``, checked to be a tensor of ``like``'s shape, dtype and device."""
    out = field(torch.full((), t, dtype=x.dtype, device=x.device), x)  # a fill, no copy from the host
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}(t, {'s' if like_name == 'r' else 'r'}) must return a tensor, got {type(out).__name__}")
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"{name} must return a tensor of {like_name}'s shape {tuple(like.shape)}, dtype {like.dtype} and "
                         f"device {like.device} (the step must keep the state's shape), got shape {tuple(out.shape)}, "
                         f"dtype {out.dtype} on {out.device}")
    return out


def _check_finite(r, s, steps, what="the leapfrog integration"):
    if not (torch.isfinite(r).all() and torch.isfinite(s).all()):
        raise FloatingPointError(f"{what} produced a non-finite state within {steps} steps: the step size tau is "
                                 f"probably too large for this field (leapfrog is stable only for small enough tau)")


# ---------------------------------------------------------------------------
# One step and its inverse
# ---------------------------------------------------------------------------


def _step(F, G, r, s, tau, t):
    r = r + tau * _evaluate(F, "F", t, s, r, "r")
    s = s + tau * _evaluate(G, "G", t + tau / 2, r, s, "s")
    return r, s


def _inverse(F, G, r, s, tau, t):
    s = s - tau * _evaluate(G, "G", t + tau / 2, r, s, "s")
    r = r - tau * _evaluate(F, "F", t, s, r, "r")
    return r, s


def leapfrog_step(F: Callable, G: Callable, r: torch.Tensor, s: torch.Tensor, tau: float, t: float = 0.0):
    """One leapfrog step of size ``tau`` from time ``t``: ``(r_k, s_k) -> (r_{k+1}, s_{k+1})``.

    ``r_{k+1} = r_k + tau F(t, s_k)`` and then ``s_{k+1} = s_k + tau G(t + tau/2, r_{k+1})``,
    chapter 7, section "Reversible leapfrog". ``r`` and ``s`` are tensors of any shapes
    (one dtype and device); ``F(t, s)`` returns ``r``'s shape and ``G(t, r)`` ``s``'s.
    Differentiable through ``torch.autograd``. Returns the pair ``(r_{k+1}, s_{k+1})``.
    """
    _check_field(F, "F"), _check_field(G, "G"), _check_state(r, s)
    return _step(F, G, r, s, _check_real(tau, "tau", positive=True), _check_real(t, "t"))


def leapfrog_inverse(F: Callable, G: Callable, r: torch.Tensor, s: torch.Tensor, tau: float, t: float = 0.0):
    """The inverse of :func:`leapfrog_step`: ``(r_{k+1}, s_{k+1}) -> (r_k, s_k)``.

    ``s_k = s_{k+1} - tau G(t + tau/2, r_{k+1})`` and then ``r_k = r_{k+1} - tau F(t, s_k)``,
    where ``t`` is the time the step started from (the ``t`` given to :func:`leapfrog_step`),
    chapter 7, section "Reversible leapfrog". In exact arithmetic
    ``leapfrog_inverse(F, G, *leapfrog_step(F, G, r, s, tau, t), tau, t)`` is ``(r, s)``; in
    floating point, up to rounding. Shapes as in :func:`leapfrog_step`.
    """
    _check_field(F, "F"), _check_field(G, "G"), _check_state(r, s)
    return _inverse(F, G, r, s, _check_real(tau, "tau", positive=True), _check_real(t, "t"))


# ---------------------------------------------------------------------------
# Many steps: stored back-propagation, and reversible back-propagation
# ---------------------------------------------------------------------------


def _check_integration(F, G, r0, s0, tau, steps, t0):
    _check_field(F, "F"), _check_field(G, "G"), _check_state(r0, s0, "r0", "s0")
    return _check_real(tau, "tau", positive=True), _check_steps(steps), _check_real(t0, "t0")


def leapfrog(F: Callable, G: Callable, r0: torch.Tensor, s0: torch.Tensor, tau: float, steps: int, t0: float = 0.0):
    """``steps`` leapfrog steps of size ``tau`` from ``(r0, s0)`` at time ``t0``; returns ``(r, s)`` at ``t0 + steps tau``.

    Step ``k`` starts at time ``t_k = t0 + k tau`` (chapter 7, section "Reversible leapfrog").
    This is the plain loop: ``torch.autograd`` records every step, so its backward pass
    holds on to every state visited, memory growing in proportion to ``steps``. It is the
    reference that :func:`reversible_leapfrog` is checked against. Shapes as in
    :func:`leapfrog_step`; ``steps = 0`` returns the inputs.
    """
    tau, steps, t0 = _check_integration(F, G, r0, s0, tau, steps, t0)
    r, s = r0, s0
    for k in range(steps):
        r, s = _step(F, G, r, s, tau, t0 + k * tau)
    _check_finite(r, s, steps)
    return r, s


def _vjp(field, name, t, x, like, like_name, params, cotangent):
    """``field(t, x)`` and the vector-Jacobian products of ``cotangent`` with it, in ``x`` and in ``params``."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = _evaluate(field, name, t, x, like, like_name)
        if not value.requires_grad:  # the field depends neither on x nor on any parameter
            return value, torch.zeros_like(x), [None] * len(params)
        grads = torch.autograd.grad(value, (x, *params), cotangent, allow_unused=True)
    grad_x = torch.zeros_like(x) if grads[0] is None else grads[0]
    return value.detach(), grad_x, list(grads[1:])


class ReversibleLeapfrog(torch.autograd.Function):
    """The autograd.Function behind :func:`reversible_leapfrog` (call that instead: it checks the inputs).

    ``forward`` runs the steps without recording them and saves only the final state;
    ``backward`` walks back with the inverse step, and at each step uses the two field
    evaluations of the inverse for the chain rule through that step (chapter 7, section
    "Reversible leapfrog"):

    - ``s_{k+1} = s_k + tau G(r_{k+1})`` sends the adjoint ``a_s`` of ``s_{k+1}`` to ``s_k``
      unchanged and ``tau [dG/dr]^T a_s`` to ``r_{k+1}``, whose adjoint becomes
      ``b_r = a_r + tau [dG/dr]^T a_s``;
    - ``r_{k+1} = r_k + tau F(s_k)`` sends ``b_r`` to ``r_k`` and ``tau [dF/ds]^T b_r`` to ``s_k``;
    - the parameters receive ``tau [dG/dtheta]^T a_s + tau [dF/dtheta]^T b_r``, summed over the steps.
    """

    @staticmethod
    def forward(ctx, F, G, tau, steps, t0, r0, s0, *params):
        """``(r_steps, s_steps)`` by ``steps`` leapfrog steps, unrecorded; saves only the final state."""
        r, s = r0, s0
        for k in range(steps):
            r, s = _step(F, G, r, s, tau, t0 + k * tau)
        if steps == 0:
            r, s = r0.clone(), s0.clone()
        ctx.fields, ctx.tau, ctx.steps, ctx.t0 = (F, G), tau, steps, t0
        ctx.save_for_backward(r, s, *params)  # the final state; params only for autograd's in-place checks
        return r, s

    @staticmethod
    def backward(ctx, a_r, a_s):
        """The adjoints of ``r0``, ``s0`` and ``params``, by walking back with the inverse step."""
        if torch.is_grad_enabled():  # autograd runs a backward pass with grad mode on only for create_graph=True
            raise RuntimeError("reversible_leapfrog's backward pass is first-order only: it cannot build the graph "
                               "of the gradient (create_graph=True); differentiate leapfrog(...) for second derivatives")
        r, s, *params = ctx.saved_tensors
        F, G = ctx.fields
        tau, t0 = ctx.tau, ctx.t0
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[7:]) if need]
        inputs = [params[i] for i in wanted]
        totals = [torch.zeros_like(p) for p in inputs]
        for k in reversed(range(ctx.steps)):
            t = t0 + k * tau
            g, g_r, g_params = _vjp(G, "G", t + tau / 2, r, s, "s", inputs, a_s)
            s = s - tau * g  # s_k, reconstructed
            a_r = a_r + tau * g_r  # b_r, the adjoint of r_{k+1} as an input of the G half-step
            f, f_s, f_params = _vjp(F, "F", t, s, r, "r", inputs, a_r)
            r = r - tau * f  # r_k, reconstructed
            a_s = a_s + tau * f_s
            for total, from_g, from_f in zip(totals, g_params, f_params):
                if from_g is not None:
                    total.add_(from_g, alpha=tau)
                if from_f is not None:
                    total.add_(from_f, alpha=tau)
        grad_params = [None] * len(params)
        for i, total in zip(wanted, totals):
            grad_params[i] = total
        return (None, None, None, None, None, a_r if ctx.needs_input_grad[5] else None,
                a_s if ctx.needs_input_grad[6] else None, *grad_params)


def _module_parameters(*fields) -> list:
    found, seen = [], set()
    for field in fields:
        if isinstance(field, torch.nn.Module):
            for p in field.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
    return found


def _check_params(params, F, G) -> list:
    if params is None:
        return _module_parameters(F, G)
    if isinstance(params, torch.Tensor) or not isinstance(params, Sequence):
        raise TypeError(f"params must be a list or tuple of tensors (the parameters F and G use), "
                        f"got {type(params).__name__}")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
    unique = {id(p): p for p in params}  # a tensor listed twice would get its gradient twice
    return list(unique.values())


def _hidden_parameters(value: torch.Tensor, params: list) -> list:
    """The tensors requiring grad that ``value`` depends on, other than ``params``: leaves of its graph."""
    stops = {id(p.grad_fn) for p in params if p.grad_fn is not None}
    leaves = {id(p) for p in params}
    hidden, seen, stack = [], set(), [value.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or id(node) in stops:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) not in leaves:
            hidden.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return hidden


def reversible_leapfrog(F: Callable, G: Callable, r0: torch.Tensor, s0: torch.Tensor, tau: float, steps: int,
                        t0: float = 0.0, params: Sequence[torch.Tensor] | None = None):
    """:func:`leapfrog`'s result, with a backward pass that reconstructs the states instead of storing them.

    Returns ``(r, s)`` after ``steps`` steps of size ``tau`` from ``(r0, s0)`` at time ``t0``,
    the same numbers as :func:`leapfrog`. Back-propagation (``.backward()``,
    ``torch.autograd.grad``) gives the gradients in ``r0``, ``s0`` and ``params``, equal to
    stored back-propagation up to rounding, while keeping only the final state: memory is
    flat in ``steps``, and the backward pass costs about one more evaluation and one VJP of
    each field per step (chapter 7, section "Reversible leapfrog").

    ``params``: the tensors that ``F`` and ``G`` use and that should get gradients (tensors
    they close over). By default, the parameters of those of ``F`` and ``G`` that are
    ``torch.nn.Module`` instances. A field that depends on a tensor requiring grad that is not in
    ``params`` is an error (its gradient would silently be missing), detected by
    evaluating both fields once at the start, at ``t0`` (a tensor that a field uses only at
    later times is not seen there).

    First-order only, like the adjoint method of an ODE solver: the backward pass is not
    itself differentiable (``create_graph=True`` raises a ``RuntimeError``).

    Raises ``FloatingPointError`` if the integration produces a non-finite state.
    """
    tau, steps, t0 = _check_integration(F, G, r0, s0, tau, steps, t0)
    params = _check_params(params, F, G)
    if torch.is_grad_enabled():
        for name, field, x, like, like_name, t in (("F", F, s0, r0, "r", t0), ("G", G, r0, s0, "s", t0 + tau / 2)):
            # an inner pair of hooks hides this graph from an outer saved_tensor_bytes: it is thrown away at once
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda v: v, lambda v: v):
                value = _evaluate(field, name, t, x.detach(), like, like_name)
            hidden = _hidden_parameters(value, params) if value.requires_grad else []
            if hidden:
                shapes = ", ".join(str(tuple(h.shape)) for h in hidden)
                raise ValueError(f"{name} depends on tensors that require grad but are not in params (shapes {shapes}): "
                                 f"pass them as params=[...] so that they get their gradients")
    r, s = ReversibleLeapfrog.apply(F, G, tau, steps, t0, r0, s0, *params)
    _check_finite(r, s, steps)
    return r, s


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def reconstruction_error(F: Callable, G: Callable, r0: torch.Tensor, s0: torch.Tensor, tau: float, steps: int,
                         t0: float = 0.0) -> float:
    """How far ``steps`` inverse steps land from ``(r0, s0)`` after ``steps`` forward steps.

    Runs :func:`leapfrog` forward ``steps`` steps, then :func:`leapfrog_inverse` back the
    same ``steps`` steps, in the dtype of ``r0`` and ``s0``, and returns
    ``max(max|r0' - r0|, max|s0' - s0|)`` (a Python float; zero in exact arithmetic, a
    multiple of the rounding unit in floating point), chapter 7, section "Reversible leapfrog".
    """
    tau, steps, t0 = _check_integration(F, G, r0, s0, tau, steps, t0)
    with torch.no_grad():
        r, s = leapfrog(F, G, r0, s0, tau, steps, t0)
        for k in reversed(range(steps)):
            r, s = _inverse(F, G, r, s, tau, t0 + k * tau)
        _check_finite(r, s, steps, "the walk back")
        return max((r - r0).abs().max().item(), (s - s0).abs().max().item())


def saved_tensor_bytes(fn: Callable, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` and count the bytes autograd saves for its backward pass.

    Every tensor that an operation (or an ``autograd.Function``'s ``save_for_backward``)
    saves while ``fn`` runs is seen through ``torch.autograd.graph.saved_tensors_hooks``;
    the bytes of the distinct storages they use are added up (a weight saved by every step
    counts once). Returns ``(fn's result, bytes)``. Chapter 7, section "Reversible leapfrog",
    measures with it that reversible back-propagation keeps a memory flat in the number of steps.
    """
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[(tensor.device, storage.data_ptr())] = storage  # held, so its address is not reused
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn(*args, **kwargs)
    return out, sum(storage.nbytes() for storage in storages.values())
