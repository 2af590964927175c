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

    The widths ``[n_0, ..., n_t]`` of a chain of ``t >= 1`` Jacobians (or layers) are positive
    integers (chapter 5, section "The Jacobian of a composition"); chapter 6's perceptron takes them too.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a list of positive integers [n_0, ..., n_t], got {type(widths).__name__}")
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths must hold at least two widths [n_0, n_1] (one link of the chain), got {widths}")
    for k, n in enumerate(widths):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"widths[{k}] must be a positive integer, got {n!r}")
    return [int(n) for n in widths]


def _check_chain_length(t, name: str = "t") -> int:
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
        raise ValueError(f"{name} must be a positive integer (the number of Jacobians), got {t!r}")
    return int(t)


def forward_order(t: int) -> Bracketing:
    """Forward mode's bracketing of ``A_t ... A_1``: ``(t, (t-1, ( ... (2, 1))))``, from the right.

    Chapter 5, section "Two orders, two costs".
    """
    t = _check_chain_length(t)
    order = 1
    for k in range(2, t + 1):
        order = (k, order)
    return order


def reverse_order(t: int) -> Bracketing:
    """Reverse mode's bracketing of ``A_t ... A_1``: ``((((t, t-1), ...), 2), 1)``, from the left.

    Chapter 5, section "Two orders, two costs".
    """
    t = _check_chain_length(t)
    order = t
    for k in range(t - 1, 0, -1):
        order = (order, k)
    return order


def _fold(order, leaf, pair, name: str = "order"):
    """Evaluate a bracketing bottom-up without recursion (a chain may have thousands of links).

    ``leaf(k)`` gives the value of ``A_k``, ``pair(left, right)`` the value of a product.
    """
    results, stack = [], [(order, False)]
    while stack:
        node, children_done = stack.pop()
        is_index = isinstance(node, numbers.Integral) and not isinstance(node, bool)
        if is_index:
            results.append(leaf(int(node)))
        elif not isinstance(node, tuple) or len(node) != 2:
            raise TypeError(f"{name}: a bracketing is an int k (for A_k) or a pair (left, right), got {node!r}")
        elif children_done:
            right = results.pop()
            results.append(pair(results.pop(), right))
        else:
            stack += [(node, True), (node[1], False), (node[0], False)]
    return results[0]


def _leaves(order, name: str = "order") -> list:
    """The indices of a bracketing's leaves, from left to right."""
    return _fold(order, lambda k: [k], lambda left, right: left + right, name)


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
                         f"its leaves are {leaves if len(leaves) < 20 else str(leaves[:20])[:-1] + ', ...]'}")
    return order


def _cost(order, widths) -> int:
    """The multiply-adds of the product that ``order`` brackets: the sum of ``n p q`` over its products."""
    def leaf(k):
        return 0, widths[k], widths[k - 1]  # (cost, rows, columns) of A_k

    def pair(left, right):
        return left[0] + right[0] + left[1] * left[2] * right[2], left[1], right[2]

    return _fold(order, leaf, pair)[0]


def chain_cost(widths, mode="reverse") -> int:
    """The multiply-adds of ``A_t ... A_1`` computed in the order ``mode``, for ``widths = [n_0, ..., n_t]``.

    ``mode`` is ``"forward"`` (from the right: ``n_0 sum_{k=1}^{t-1} n_k
    n_{k+1}``), ``"reverse"`` (from the left: ``n_t sum_{k=0}^{t-2} n_k
    n_{k+1}``), or a bracketing (see the module's docstring), whose cost is
    the sum of its products' ``n p q``. Chapter 5, section "Two orders, two costs".
    """
    widths = check_widths(widths)
    t = len(widths) - 1
    if mode == "forward":  # the closed forms, without building a bracketing t deep
        return widths[0] * sum(widths[k] * widths[k + 1] for k in range(1, t))
    if mode == "reverse":
        return widths[t] * sum(widths[k] * widths[k + 1] for k in range(0, t - 1))
    return _cost(_resolve(mode, t), widths)


def optimal_order(widths) -> tuple:
    """``(cost, bracketing)``: the cheapest order of ``A_t ... A_1`` for ``widths = [n_0, ..., n_t]``.

    The matrix-chain dynamic program: the best cost ``c(i, j)`` of the product
    ``A_j ... A_i`` is 0 when ``i = j`` and otherwise the minimum over the last
    split ``i <= m < j`` of ``c(m+1, j) + c(i, m) + n_j n_m n_{i-1}``;
    ``O(t^3)`` time. Among splits of equal cost the first, from ``m = i``
    (reverse mode's) upwards, is kept: on a chain where every order costs
    the same, the result is reverse mode. Chapter 5,
    section "The best order: a matrix chain".
    """
    widths = check_widths(widths)
    t = len(widths) - 1
    best = {(i, i): (0, i) for i in range(1, t + 1)}
    for length in range(2, t + 1):
        for i in range(1, t - length + 2):
            j = i + length - 1
            candidates = []
            for m in range(i, j):  # the last product (A_j..A_{m+1}) (A_m..A_i); m = i is reverse mode's
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
    first = jacobians[0]
    for k in range(1, len(jacobians)):
        a, before = jacobians[k], jacobians[k - 1]
        if a.shape[-1] != before.shape[-2]:
            raise ValueError(f"A_{k + 1} has {a.shape[-1]} columns but A_{k} has {before.shape[-2]} rows: "
                             f"A_{k + 1} A_{k} is not defined (A_k must have shape (n_k, n_(k-1)))")
        if a.dtype != first.dtype or a.device != first.device:
            raise ValueError(f"jacobians[{k}] (A_{k + 1}) is {a.dtype} on {a.device} but A_1 is {first.dtype} on "
                             f"{first.device}: the Jacobians must share a dtype and a device")
    try:
        torch.broadcast_shapes(*(a.shape[:-2] for a in jacobians))
    except RuntimeError:
        raise ValueError("the Jacobians' leading (batch) shapes do not broadcast: "
                         f"{[tuple(a.shape[:-2]) for a in jacobians]}") from None
    order = _resolve(order, len(jacobians))
    return _fold(order, lambda k: jacobians[k - 1], torch.matmul)


def layer_jacobians(layers: Sequence, x: torch.Tensor) -> list:
    """``[A_1, ..., A_t]``: the Jacobian of each layer at the point the composition reaches it.

    ``layers = [f_1, ..., f_t]`` map vectors to vectors; ``x`` is the input
    ``x_0`` (a vector). ``A_k = d f_k (x_{k-1})`` has shape ``(n_k,
    n_{k-1})``, computed by ``torch.func.jacrev`` one layer at a time, so that
    the chain's product can then be formed in any order (chapter 5, section
    "The Jacobian of a composition").
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list [f_1, ..., f_t] of functions, got {type(layers).__name__}")
    if not layers:
        raise ValueError("layers must hold at least one function")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor (a vector), got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"x must be a vector (a 1-d tensor), got shape {tuple(x.shape)}")
    jacobians = []
    for k, layer in enumerate(layers, start=1):
        if not callable(layer):
            raise TypeError(f"layers[{k - 1}] must be a callable, got {type(layer).__name__}")
        out = layer(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layers[{k - 1}] must return a tensor, it returned {type(out).__name__}")
        a = torch.func.jacrev(layer)(x)
        if a.dim() != 2:
            raise ValueError(f"layers[{k - 1}] must map a vector to a vector; its Jacobian has shape {tuple(a.shape)}")
        # row-major, as a matrix is expected to be: jacrev returns the transposed layout (strides (1, n)),
        # and a product of two such matrices can take a slow path of the BLAS (MKL on an AMD EPYC: 7 ms
        # instead of 0.45 ms for (512, 512) @ (512, 8)), which timings of the orders would measure instead
        # of their work
        jacobians.append(a.contiguous())
        x = out
    return jacobians


def order_text(order) -> str:
    """A bracketing written as a product, ``(A3 A2) A1`` for ``((3, 2), 1)``.

    ``order`` must bracket ``A_t ... A_1`` for some ``t`` (its leaves are
    ``t, ..., 1`` in that order). Chapter 5, section "The best order: a matrix chain".
    """
    leaves = _leaves(order)
    _resolve(order, len(leaves))
    text = _fold(order, lambda k: (f"A{k}", True), lambda left, right: (
        f"{left[0] if left[1] else '(' + left[0] + ')'} {right[0] if right[1] else '(' + right[0] + ')'}", False))
    return text[0]
