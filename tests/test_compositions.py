"""Jacobian chains (ad_lib.compositions) against the notes' formulas, brute force, a published number,
PyTorch's own counter of floating-point operations and torch.func's Jacobians."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from ad_lib.compositions import (chain_cost, check_widths, forward_order, jacobian_chain, layer_jacobians,
                                 optimal_order, order_text, reverse_order)

F64 = torch.float64
widths_lists = st.lists(st.integers(1, 40), min_size=2, max_size=8)


def all_bracketings(high, low):
    """Every bracketing of A_high ... A_low (a Catalan number of them)."""
    if high == low:
        yield high
        return
    for m in range(high - 1, low - 1, -1):  # (A_high .. A_{m+1}) (A_m .. A_low)
        for left in all_bracketings(high, m + 1):
            for right in all_bracketings(m, low):
                yield (left, right)


def random_chain(widths, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(widths[k], widths[k - 1], dtype=F64, generator=generator).to(device)
            for k in range(1, len(widths))]


@settings(max_examples=60, deadline=None)
@given(widths_lists)
def test_the_two_modes_cost_what_the_notes_say(widths):
    t = len(widths) - 1
    assert chain_cost(widths, "forward") == widths[0] * sum(widths[k] * widths[k + 1] for k in range(1, t))
    assert chain_cost(widths, "reverse") == widths[t] * sum(widths[k] * widths[k + 1] for k in range(0, t - 1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=2, max_size=7))
def test_the_dynamic_program_finds_the_brute_force_minimum(widths):
    t = len(widths) - 1
    cost, order = optimal_order(widths)
    brute = min(chain_cost(widths, b) for b in all_bracketings(t, 1))
    assert cost == brute == chain_cost(widths, order)
    assert cost <= min(chain_cost(widths, "forward"), chain_cost(widths, "reverse"))


def test_the_textbook_matrix_chain():
    # Cormen, Leiserson, Rivest and Stein's example: M1..M6 of sizes 30x35, 35x15, 15x5, 5x10, 10x20, 20x25
    # costs 15125 at best, as ((M1 (M2 M3)) ((M4 M5) M6)). Our A_k = M_(7-k), so the widths are reversed.
    p = [30, 35, 15, 5, 10, 20, 25]
    cost, order = optimal_order(p[::-1])
    assert cost == 15125
    assert order_text(order) == "(A6 (A5 A4)) ((A3 A2) A1)"


def test_one_jacobian_costs_nothing_and_two_have_one_order():
    assert optimal_order([3, 4]) == (0, 1)
    assert chain_cost([3, 4], "forward") == chain_cost([3, 4], "reverse") == 0
    assert optimal_order([2, 3, 4]) == (24, (2, 1)) and chain_cost([2, 3, 4], "forward") == 24


def test_the_named_orders():
    assert forward_order(3) == (3, (2, 1)) and reverse_order(3) == ((3, 2), 1)
    assert forward_order(1) == reverse_order(1) == 1
    assert order_text(forward_order(4)) == "A4 (A3 (A2 A1))"
    assert order_text(reverse_order(4)) == "((A4 A3) A2) A1"


@pytest.mark.parametrize("widths", [[4, 50, 3, 60, 2], [10, 10, 10, 10], [1, 7, 7, 1], [64, 8, 64, 8, 64]])
def test_the_counted_cost_is_what_pytorch_counts(widths):
    """PyTorch's FlopCounterMode counts 2 n p q floating-point operations for an (n, p) @ (p, q) product."""
    chain = random_chain(widths)
    for order in ("forward", "reverse", optimal_order(widths)[1]):
        with FlopCounterMode(display=False) as counter:
            jacobian_chain(chain, order)
        assert counter.get_total_flops() == 2 * chain_cost(widths, order)


def test_every_order_gives_the_same_jacobian_as_torch_func(device):
    torch.manual_seed(0)
    widths = [5, 9, 2, 8, 3]
    weights = [torch.randn(widths[k], widths[k - 1], dtype=F64, device=device) for k in range(1, len(widths))]
    layers = [lambda x, w=w: torch.tanh(w @ x) for w in weights]
    x0 = torch.randn(widths[0], dtype=F64, device=device)

    def f(x):
        for layer in layers:
            x = layer(x)
        return x

    expected = torch.func.jacfwd(f)(x0)
    chain = layer_jacobians(layers, x0)
    assert [tuple(a.shape) for a in chain] == [(widths[k], widths[k - 1]) for k in range(1, len(widths))]
    for order in all_bracketings(4, 1):
        got = jacobian_chain(chain, order)
        assert got.device == expected.device
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_batched_jacobians_broadcast():
    chain = [torch.randn(6, 3, 2, dtype=F64), torch.randn(6, 4, 3, dtype=F64)]
    torch.testing.assert_close(jacobian_chain(chain, "forward"), torch.bmm(chain[1], chain[0]))


@pytest.mark.parametrize("widths, message", [
    ([3], "at least two"), ([3, 0, 2], r"widths\[1\] must be a positive integer"),
    ([3, 2.5], r"widths\[1\]"), ([True, 2], r"widths\[0\]"), ([-1, 2], r"widths\[0\]")])
def test_bad_widths_are_named(widths, message):
    with pytest.raises(ValueError, match=message):
        check_widths(widths)
    with pytest.raises(ValueError, match=message):
        optimal_order(widths)


def test_bad_orders_and_chains_are_named():
    with pytest.raises(TypeError, match="widths must be a list"):
        chain_cost("345")
    with pytest.raises(ValueError, match="order must be 'forward', 'reverse'"):
        chain_cost([2, 3, 4], "backward")
    with pytest.raises(ValueError, match=r"order must bracket the indices 3, ..., 1"):
        chain_cost([2, 3, 4, 5], ((1, 2), 3))
    with pytest.raises(TypeError, match="a bracketing is an int"):
        chain_cost([2, 3, 4], (2, 1, 0))
    with pytest.raises(ValueError, match=r"A_2 has 5 columns but A_1 has 3 rows"):
        jacobian_chain([torch.zeros(3, 2), torch.zeros(4, 5)])
    with pytest.raises(TypeError, match=r"jacobians\[0\] \(A_1\)"):
        jacobian_chain([torch.zeros(3)])
    with pytest.raises(TypeError, match="non-empty list"):
        jacobian_chain([])
    with pytest.raises(ValueError, match="t must be a positive integer"):
        forward_order(0)
    with pytest.raises(ValueError, match="must map a vector to a vector"):
        layer_jacobians([lambda x: x.sum()], torch.zeros(3))


def test_an_hourglass_is_cheapest_in_neither_pure_mode():
    widths = [64, 8, 64, 8, 64]
    cost, order = optimal_order(widths)
    assert cost < min(chain_cost(widths, "forward"), chain_cost(widths, "reverse")) / 2
    assert order not in (forward_order(4), reverse_order(4))
    assert cost == min(chain_cost(widths, o) for o in all_bracketings(4, 1))  # and it is the cheapest of all 5


def test_ties_go_to_reverse_mode():
    # every order of a chain of equal widths costs the same: the program keeps reverse mode's
    assert optimal_order([2, 2, 2, 2]) == (16, reverse_order(3))
    assert optimal_order([3] * 7)[1] == reverse_order(6)


def test_long_chains_need_no_recursion():
    widths = [2, 3] * 1000  # 1999 links: deeper than Python's recursion limit
    t = len(widths) - 1
    for mode, order in (("forward", forward_order(t)), ("reverse", reverse_order(t))):
        assert chain_cost(widths, mode) == chain_cost(widths, order)  # the closed form against the bracketing's sum
    chain = [torch.full((widths[k], widths[k - 1]), 0.5, dtype=F64) for k in range(1, 60)]
    torch.testing.assert_close(jacobian_chain(chain, reverse_order(59)), jacobian_chain(chain, "forward"))
    assert order_text(reverse_order(3)) == "(A3 A2) A1"


def test_more_bad_inputs_are_named():
    with pytest.raises(TypeError, match="order: a bracketing is an int"):
        chain_cost([2, 3, 4], (2, 1.0))
    with pytest.raises(TypeError, match="order: a bracketing is an int"):
        chain_cost([2, 3, 4], [2, 1])
    with pytest.raises(ValueError, match=r"jacobians\[1\] \(A_2\) is torch.float64 .* share a dtype"):
        jacobian_chain([torch.zeros(3, 2), torch.zeros(4, 3, dtype=F64)])
    with pytest.raises(ValueError, match="batch"):
        jacobian_chain([torch.zeros(2, 3, 2), torch.zeros(5, 4, 3)])
    with pytest.raises(TypeError, match="layers must be a list"):
        layer_jacobians(lambda x: x, torch.zeros(2))
    with pytest.raises(ValueError, match="at least one function"):
        layer_jacobians([], torch.zeros(2))
    with pytest.raises(TypeError, match="x must be a tensor"):
        layer_jacobians([lambda x: x], [1.0, 2.0])
    with pytest.raises(TypeError, match=r"layers\[0\] must return a tensor"):
        layer_jacobians([lambda x: [x]], torch.zeros(2))
    with pytest.raises(ValueError, match="order must bracket the indices 3, ..., 1"):
        order_text((3, (2, 2)))
