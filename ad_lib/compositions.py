"""Feed-forward compositions and the cost of Jacobian products (chapter 5).

The Jacobian of ``f = f_t o ... o f_1`` is the product ``A_t ... A_1`` of the
layers' Jacobians, ``A_k`` of shape ``(n_k, n_{k-1})`` for the widths
``[n_0, ..., n_t]`` (chapter 5, section "The Jacobian of a composition").
Forward mode multiplies it from the right, reverse mode from the left; any
other bracketing is as exact and may be much cheaper: finding the cheapest is
the matrix-chain problem, solved by dynamic programming (chapter 5, section
"The best order: a matrix chain").

A *bracketing* of the product is a nested pair: a leaf is the index ``k`` of
``A_k`` (1 to t) and a pair ``(left, right)`` is the product ``left @ right``.
For ``t = 3``, forward mode is ``(3, (2, 1))`` and reverse mode ``((3, 2), 1)``.
Costs are counted in multiply-adds: ``A @ B`` with ``A`` of shape ``(n, p)``
and ``B`` of shape ``(p, q)`` costs ``n p q``.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch

__all__ = ["check_widths", "forward_order", "reverse_order", "chain_cost", "optimal_order", "jacobian_chain",
           "layer_jacobians", "order_text"]

Bracketing = Union[int, tuple]


def check_widths(widths) -> list:
    """``widths`` as a list of Python ints, or a ``ValueError``/``TypeError`` that says what is wrong.

    The widths ``[n_0, ..., n_t]`` of a chain of ``t >= 1`` Jacobians are positive integers.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a list of positive integers [n_0, ..., n_t], got {type(widths).__name__}")
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths must hold at least two widths [n_0, n_1] (one Jacobian), got {widths}")
    for k, n in enumerate(widths):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"widths[{k}] must be a positive integer, got {n!r}")
    return [int(n) for n in widths]


def _check_chain_length(t, name: str = "t") -> int:
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
        raise ValueError(f"{name} must be a positive integer (the number of Jacobians), got {t!r}")
    return int(t)


def forward_order(t: int) -> Bracketing:
    """Forward mode's bracketing of ``A_t ... A_1``: ``(t, (t-1, ( ... (2, 1))))``, from the right."""
    t = _check_chain_length(t)
    order = 1
    for k in range(2, t + 1):
        order = (k, order)
    return order


def reverse_order(t: int) -> Bracketing:
    """Reverse mode's bracketing of ``A_t ... A_1``: ``((((t, t-1), ...), 2), 1)``, from the left."""
    t = _check_chain_length(t)
    order = t
    for k in range(t - 1, 0, -1):
        order = (order, k)
    return order


def _leaves(order) -> list:
    if isinstance(order, bool):
        raise TypeError(f"a bracketing's leaves are ints, got {order!r}")
    if isinstance(order, numbers.Integral):
        return [int(order)]
    if isinstance(order, tuple) and len(order) == 2:
        return _leaves(order[0]) + _leaves(order[1])
    raise TypeError(f"a bracketing is an int k (for A_k) or a pair (left, right), got {order!r}")


def _resolve(order, t: int) -> Bracketing:
    """A mode name or a bracketing, checked to be a bracketing of exactly ``A_t ... A_1`` in that order."""
    if isinstance(order, str):
        if order == "forward":
            return forward_order(t)
        if order == "reverse":
            return reverse_order(t)
        raise ValueError(f"order must be 'forward', 'reverse' or a bracketing (nested pairs of indices), got {order!r}")
    leaves = _leaves(order)
    if leaves != list(range(t, 0, -1)):
        raise ValueError(f"order must bracket the indices {t}, ..., 1 in that order (A_t ... A_1), "
                         f"its leaves are {leaves}")
    return order


def _cost(order, widths) -> tuple:
    """(multiply-adds, rows, columns) of the product that ``order`` brackets."""
    if isinstance(order, numbers.Integral):
        return 0, widths[order], widths[order - 1]
    left_cost, n, p = _cost(order[0], widths)
    right_cost, _, q = _cost(order[1], widths)
    return left_cost + right_cost + n * p * q, n, q


def chain_cost(widths, mode="reverse") -> int:
    """The multiply-adds of ``A_t ... A_1`` computed in the order ``mode``, for ``widths = [n_0, ..., n_t]``.

    ``mode`` is ``"forward"`` (from the right: ``n_0 sum_{k=1}^{t-1} n_k
    n_{k+1}``), ``"reverse"`` (from the left: ``n_t sum_{k=0}^{t-2} n_k
    n_{k+1}``), or a bracketing (see the module's docstring), whose cost is
    the sum of its products' ``n p q``. Chapter 5, section "Two orders, two costs".
    """
    widths = check_widths(widths)
    return _cost(_resolve(mode, len(widths) - 1), widths)[0]


def optimal_order(widths) -> tuple:
    """``(cost, bracketing)``: the cheapest order of ``A_t ... A_1`` for ``widths = [n_0, ..., n_t]``.

    The matrix-chain dynamic program: the best cost ``c(i, j)`` of the product
    ``A_j ... A_i`` is 0 when ``i = j`` and otherwise the minimum over the last
    split ``i <= m < j`` of ``c(m+1, j) + c(i, m) + n_j n_m n_{i-1}``;
    ``O(t^3)`` time. Ties go to the split nearest reverse mode's. Chapter 5,
    section "The best order: a matrix chain".
    """
    widths = check_widths(widths)
    t = len(widths) - 1
    best = {(i, i): (0, i) for i in range(1, t + 1)}
    for length in range(2, t + 1):
        for i in range(1, t - length + 2):
            j = i + length - 1
            candidates = []
            for m in range(j - 1, i - 1, -1):  # the last product (A_j..A_{m+1}) (A_m..A_i)
                left, right = best[(m + 1, j)], best[(i, m)]
                candidates.append((left[0] + right[0] + widths[j] * widths[m] * widths[i - 1], (left[1], right[1])))
            best[(i, j)] = min(candidates, key=lambda c: c[0])
    return best[(1, t)]


def jacobian_chain(jacobians: Sequence[torch.Tensor], order="reverse") -> torch.Tensor:
    """The product ``A_t ... A_1`` of ``jacobians = [A_1, ..., A_t]``, multiplied in ``order``.

    ``A_k`` has shape ``(..., n_k, n_{k-1})`` (leading batch axes broadcast as
    in ``torch.matmul``); ``order`` is ``"forward"``, ``"reverse"`` or a
    bracketing such as :func:`optimal_order` returns. Every order gives the
    same matrix up to rounding; only the work differs. Chapter 5, section
    "The best order: a matrix chain".
    """
    if isinstance(jacobians, torch.Tensor) or not isinstance(jacobians, Sequence) or not jacobians:
        raise TypeError("jacobians must be a non-empty list [A_1, ..., A_t] of matrices")
    for k, a in enumerate(jacobians, start=1):
        if not isinstance(a, torch.Tensor) or a.dim() < 2:
            raise TypeError(f"jacobians[{k - 1}] (A_{k}) must be a tensor with at least 2 dimensions, got "
                            f"{type(a).__name__ if not isinstance(a, torch.Tensor) else tuple(a.shape)}")
    for k in range(1, len(jacobians)):
        if jacobians[k].shape[-1] != jacobians[k - 1].shape[-2]:
            raise ValueError(f"A_{k + 1} has {jacobians[k].shape[-1]} columns but A_{k} has {jacobians[k - 1].shape[-2]} rows: "
                             f"A_{k + 1} A_{k} is not defined (A_k must have shape (n_k, n_(k-1)))")
    order = _resolve(order, len(jacobians))

    def product(node):
        if isinstance(node, numbers.Integral):
            return jacobians[node - 1]
        return product(node[0]) @ product(node[1])

    return product(order)


def layer_jacobians(layers: Sequence, x: torch.Tensor) -> list:
    """``[A_1, ..., A_t]``: the Jacobian of each layer at the point the composition reaches it.

    ``layers = [f_1, ..., f_t]`` map vectors to vectors; ``x`` is the input
    ``x_0`` (a vector). ``A_k = d f_k (x_{k-1})`` has shape ``(n_k,
    n_{k-1})``, computed by ``torch.func.jacrev`` one layer at a time, so that
    the chain's product can then be formed in any order (chapter 5, section
    "The Jacobian of a composition").
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise ValueError(f"x must be a vector (a 1-d tensor), got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    jacobians = []
    for k, layer in enumerate(layers, start=1):
        if not callable(layer):
            raise TypeError(f"layers[{k - 1}] must be a callable, got {type(layer).__name__}")
        a = torch.func.jacrev(layer)(x)
        if a.dim() != 2:
            raise ValueError(f"layers[{k - 1}] must map a vector to a vector; its Jacobian has shape {tuple(a.shape)}")
        jacobians.append(a)
        x = layer(x)
    return jacobians


def order_text(order) -> str:
    """A bracketing written as a product, ``(A3 A2) A1`` for ``((3, 2), 1)``."""
    def text(node, top):
        if isinstance(node, numbers.Integral):
            return f"A{node}"
        inner = f"{text(node[0], False)} {text(node[1], False)}"
        return inner if top else f"({inner})"

    _leaves(order)
    return text(order, True)
