"""Recurrent nets and checkpointing (ad_lib.checkpointing) against torch.autograd, a brute-force optimum and counts."""

import collections
import functools
import math
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib.checkpointing import (
    bptt,
    checkpoint_scan,
    gradient_descent_perceptron,
    residual_perceptron,
    revolve_cost,
    revolve_schedule,
)
from ad_lib.runtime import TensorMemory

F64 = torch.float64


def weights(n, q, device, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    W1 = (torch.randn(q, n, dtype=F64, generator=g) / math.sqrt(n)).to(device).requires_grad_(requires_grad)
    W2 = (torch.randn(q, n, dtype=F64, generator=g) / math.sqrt(q)).to(device).requires_grad_(requires_grad)
    x0 = torch.randn(n, dtype=F64, generator=g).to(device).requires_grad_(requires_grad)
    return W1, W2, x0


def plain_loop(step, x, steps):
    for _ in range(steps):
        x = step(x)
    return x


# ------------------------------------------------------------------ recurrent nets and BPTT


def test_bptt_by_hand_matches_torch_autograd_with_a_loss_that_depends_on_theta(device):
    W1, W2, x0 = weights(5, 7, device)
    target = torch.linspace(-1, 1, 5, dtype=F64, device=device)
    h = lambda x, th: residual_perceptron(x, th[0], th[1])  # noqa: E731
    loss = lambda x, th: ((x - target) ** 2).sum() + 0.1 * (th[0] ** 2).sum() + (th[1].sum()) ** 2  # noqa: E731
    value, (g1, g2), gx = bptt(h, x0, (W1, W2), 12, loss)

    reference = loss(plain_loop(lambda x: h(x, (W1, W2)), x0, 12), (W1, W2))
    r1, r2, rx = torch.autograd.grad(reference, (W1, W2, x0))
    torch.testing.assert_close(value, reference.detach(), rtol=1e-13, atol=1e-13)
    for mine, theirs in ((g1, r1), (g2, r2), (gx, rx)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_bptt_with_zero_steps_is_the_loss_gradient_and_unused_parameters_get_zeros(device):
    W1, W2, x0 = weights(3, 4, device)
    value, (g1, g2), gx = bptt(lambda x, th: residual_perceptron(x, th[0], th[1]), x0, (W1, W2), 0,
                               lambda x, th: (x**2).sum() + (th[0] ** 2).sum())
    torch.testing.assert_close(gx, 2 * x0.detach())
    torch.testing.assert_close(g1, 2 * W1.detach())
    assert torch.equal(g2, torch.zeros_like(W2))
    torch.testing.assert_close(value, (x0**2).sum().detach() + (W1**2).sum().detach())


def test_residual_perceptron_is_x_plus_w2t_rho_w1x_batched(device):
    W1, W2, _ = weights(4, 6, device, requires_grad=False)
    x = torch.randn(3, 4, dtype=F64, device=device)
    out = residual_perceptron(x, W1, W2, torch.sin)
    for i in range(3):
        torch.testing.assert_close(out[i], x[i] + W2.T @ torch.sin(W1 @ x[i]), rtol=1e-14, atol=1e-14)


def test_gradient_descent_perceptron_is_a_gradient_step_on_the_separable_energy(device):
    W1, _, x = weights(4, 6, device, requires_grad=False)
    b = torch.linspace(-1, 1, 6, dtype=F64, device=device)
    energy = lambda v: torch.log(torch.cosh(v @ W1.T - b)).sum()  # noqa: E731  psi(u) = log cosh(u - b)
    tau = 0.2
    step = gradient_descent_perceptron(x, W1, tau, lambda u: torch.tanh(u - b))
    torch.testing.assert_close(step, x - tau * torch.func.grad(energy)(x), rtol=1e-14, atol=1e-14)
    # iterated: gradient descent, the energy decreases to its minimum, where the gradient vanishes
    v = x
    energies = []
    for _ in range(400):
        v = gradient_descent_perceptron(v, W1, tau, lambda u: torch.tanh(u - b))
        energies.append(energy(v).item())
    assert all(e2 <= e1 + 1e-15 for e1, e2 in zip(energies, energies[1:]))
    assert torch.func.grad(energy)(v).norm() < 1e-8


# ------------------------------------------------------------------ revolve: the formula and its optimum


@functools.lru_cache(maxsize=None)
def brute_force_cost(steps, snapshots):
    """The least number of advances, over every recursive schedule (Griewank's dynamic program).

    With x_0 stored: either restart from it for each step (one snapshot), or advance m steps, store x_m,
    reverse the m..l part with one snapshot fewer, then the 0..m part with all of them; try every m.
    """
    if steps <= 1:
        return 0
    if snapshots == 1:
        return steps * (steps - 1) // 2
    return min(m + brute_force_cost(steps - m, snapshots - 1) + brute_force_cost(m, snapshots) for m in range(1, steps))


def test_revolve_cost_known_values():
    assert revolve_cost(100, 5) == 316
    assert revolve_cost(0, 3) == 0 and revolve_cost(1, 1) == 0
    for steps in range(1, 40):
        assert revolve_cost(steps, 1) == steps * (steps - 1) // 2
        for snapshots in range(max(1, steps - 1), steps + 3):
            assert revolve_cost(steps, snapshots) == steps - 1


def test_revolve_cost_equals_the_brute_force_optimum():
    for snapshots in range(1, 7):
        for steps in range(0, 70):
            assert revolve_cost(steps, snapshots) == brute_force_cost(steps, snapshots), (steps, snapshots)


def simulate(schedule, steps, snapshots):
    """Play a schedule on indices: every action legal, at most `snapshots` stored; returns (advances, reversed)."""
    stored, current, advances, reversed_steps, peak = set(), 0, 0, [], 0
    for action in schedule:
        kind, k = action[0], action[1]
        if kind == "store":
            assert current == k and len(stored) < snapshots
            stored.add(k)
            peak = max(peak, len(stored))
        elif kind == "restore":
            assert k in stored
            current = k
        elif kind == "free":
            stored.remove(k)
        elif kind == "advance":
            assert current == k and action[2] > k
            advances += action[2] - k
            current = action[2]
        elif kind == "reverse":
            assert current == k
            reversed_steps.append(k)
            current = None  # the next action must restore or be the end
        else:
            raise AssertionError(action)
    assert peak <= snapshots
    return advances, reversed_steps


@settings(max_examples=150, deadline=None)
@given(steps=st.integers(0, 400), snapshots=st.integers(1, 40))
def test_revolve_schedule_is_legal_reverses_every_step_in_order_and_costs_the_formula(steps, snapshots):
    advances, reversed_steps = simulate(revolve_schedule(steps, snapshots), steps, snapshots)
    assert reversed_steps == list(range(steps - 1, -1, -1))
    assert advances == revolve_cost(steps, snapshots)


# ------------------------------------------------------------------ checkpoint_scan


def counted(fn):
    def step(x):
        step.calls += 1
        return fn(x)

    step.calls = 0
    return step


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 60), snapshots=st.integers(1, 12))
def test_checkpoint_scan_calls_step_revolve_cost_plus_l_times_and_keeps_the_gradients(steps, snapshots):
    W1, W2, x0 = weights(3, 4, "cpu")
    step = counted(lambda x: residual_perceptron(x, W1, W2))
    stats = {}
    out = checkpoint_scan(step, x0, steps, snapshots, stats=stats)
    assert step.calls == steps  # the forward pass: l calls, like the plain loop
    grads = torch.autograd.grad((out**2).sum(), (x0, W1, W2))
    assert step.calls == revolve_cost(steps, snapshots) + steps
    assert stats["backward_calls"] == revolve_cost(steps, snapshots) and stats["forward_calls"] == steps
    assert stats["peak_snapshots"] <= snapshots
    reference = plain_loop(lambda x: residual_perceptron(x, W1, W2), x0, steps)
    torch.testing.assert_close(out, reference, rtol=1e-14, atol=1e-14)
    for mine, theirs in zip(grads, torch.autograd.grad((reference**2).sum(), (x0, W1, W2))):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps, snapshots", [(1, 1), (7, 1), (30, 3), (100, 5), (50, 60)])
def test_checkpoint_scan_gradients_for_x0_and_closed_over_params_equal_plain_autograd(device, steps, snapshots):
    W1, W2, x0 = weights(6, 9, device, seed=steps)

    def make_step():
        W2_scaled = 0.5 * W2  # a closed-over tensor that is not a leaf: its gradient goes on to W2
        return lambda x: residual_perceptron(x, W1, W2_scaled, torch.tanh)

    loss = lambda x: (x.sin() * torch.arange(6, device=device)).sum()  # noqa: E731
    stats = {}
    mine = torch.autograd.grad(loss(checkpoint_scan(make_step(), x0, steps, snapshots, stats=stats)), (x0, W1, W2))
    theirs = torch.autograd.grad(loss(plain_loop(make_step(), x0, steps)), (x0, W1, W2))
    assert stats["params"] == 2  # W1 and W2_scaled, found during the first call
    for a, b in zip(mine, theirs):
        assert a.device == x0.device
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class ResidualCell(torch.nn.Module):
    def __init__(self, n, q):
        super().__init__()
        self.inner = torch.nn.Linear(n, q, dtype=F64)
        self.outer = torch.nn.Linear(q, n, bias=False, dtype=F64)
        self.unused = torch.nn.Parameter(torch.zeros(2, dtype=F64))

    def forward(self, x):
        return x + 0.5 * self.outer(torch.tanh(self.inner(x)))


def test_checkpoint_scan_fills_the_grads_of_an_nn_module_as_plain_backward_does(device):
    torch.manual_seed(0)
    cell = ResidualCell(5, 8).to(device)
    x0 = torch.randn(4, 5, dtype=F64, device=device)  # a batch of 4 states, x0 needs no gradient
    checkpoint_scan(cell, x0, 40, 4).pow(2).sum().backward()
    mine = {name: p.grad.clone() for name, p in cell.named_parameters() if p.grad is not None}
    cell.zero_grad(set_to_none=True)
    plain_loop(cell, x0, 40).pow(2).sum().backward()
    theirs = {name: p.grad for name, p in cell.named_parameters() if p.grad is not None}
    assert set(mine) == set(theirs) == {"inner.weight", "inner.bias", "outer.weight"}  # not "unused"
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-12, atol=1e-12)


def test_checkpoint_scan_with_explicit_params_and_gradcheck(device):
    W1, W2, x0 = weights(3, 4, device, seed=3)
    A = torch.randn(3, 3, dtype=F64, device=device) / 3

    def f(x, W1, W2):
        step = lambda v: residual_perceptron(v, W1, W2) + A @ v  # noqa: E731
        return checkpoint_scan(step, x, 9, 2, params=[W1, W2])

    assert torch.autograd.gradcheck(f, (x0, W1, W2))


def test_checkpoint_scan_stores_at_most_snapshots_states_while_plain_backprop_stores_all():
    W1, W2, x0 = weights(16, 16, "cpu", seed=1)
    steps, snapshots = 60, 4
    alive = weakref.WeakSet()
    most = [0]

    def step(x):  # counts the states made by earlier calls that are still alive
        most[0] = max(most[0], len(alive))
        y = residual_perceptron(x, W1, W2)
        alive.add(y)
        return y

    out = checkpoint_scan(step, x0, steps, snapshots)
    out.sum().backward()
    # the snapshots (x_0 is not one of step's outputs), the working state and the pending tape's output
    assert most[0] <= snapshots + 1
    alive.clear()
    most[0] = 0
    reference = plain_loop(step, x0, steps)
    reference.sum().backward()
    assert most[0] == steps - 1  # plain back-propagation keeps every state


def saved_by_forward(fn):
    # (number, bytes) of the tensors that autograd saves for the backward pass while fn() runs
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return len(saved), sum(saved), out


def test_saved_tensors_and_bytes_one_step_for_checkpoint_scan_against_l_steps_plain():
    W1, W2, x0 = weights(16, 32, "cpu", seed=2)
    step = lambda x: residual_perceptron(x, W1, W2)  # noqa: E731
    one_count, one_bytes, _ = saved_by_forward(lambda: step(x0))
    for steps in (10, 100):
        count, nbytes, out = saved_by_forward(lambda: checkpoint_scan(step, x0, steps, 5))
        plain_count, plain_bytes, _ = saved_by_forward(lambda: plain_loop(step, x0, steps))
        assert (count, nbytes) == (one_count, one_bytes)  # the tape of the last step only
        assert (plain_count, plain_bytes) == (steps * one_count, steps * one_bytes)
        # and alive after the forward pass: at most s - 1 new states (x_0 is the caller's) and that tape
        with TensorMemory() as memory:
            out = checkpoint_scan(step, x0, steps, 5)
        state = x0.numel() * x0.element_size()
        assert memory.current <= 4 * state + one_bytes + state
        out.sum().backward()


def test_checkpoint_scan_without_gradients_runs_the_plain_loop(device):
    W1, W2, x0 = weights(3, 4, device, requires_grad=False)
    step = counted(lambda x: residual_perceptron(x, W1, W2))
    stats = {}
    out = checkpoint_scan(step, x0, 25, 3, stats=stats)
    assert step.calls == 25 and not out.requires_grad and stats["peak_snapshots"] == 0
    torch.testing.assert_close(out, plain_loop(lambda x: residual_perceptron(x, W1, W2), x0, 25), rtol=0, atol=0)
    W1.requires_grad_(True)
    with torch.no_grad():
        assert not checkpoint_scan(step, x0, 5, 3).requires_grad


def test_checkpoint_scan_with_zero_steps_returns_x0():
    x0 = torch.randn(3, dtype=F64, requires_grad=True)
    assert checkpoint_scan(lambda x: 2 * x, x0, 0, 1) is x0


def test_checkpoint_scan_backward_twice_recomputes_from_x0():
    W1, W2, x0 = weights(3, 4, "cpu")
    step = counted(lambda x: residual_perceptron(x, W1, W2))
    out = checkpoint_scan(step, x0, 20, 3).sum()
    first = torch.autograd.grad(out, (x0, W1), retain_graph=True)
    calls = step.calls
    second = torch.autograd.grad(out, (x0, W1))
    assert step.calls - calls == revolve_cost(20, 3) + 20  # the whole schedule again, forward part included
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------ bad input


def test_bad_inputs_are_clear_errors():
    W1, W2, x0 = weights(3, 4, "cpu")
    step = lambda x: residual_perceptron(x, W1, W2)  # noqa: E731
    for steps in (-1,):
        with pytest.raises(ValueError, match="steps"):
            checkpoint_scan(step, x0, steps, 2)
    for steps in (2.5, True, "3"):
        with pytest.raises(TypeError, match="steps"):
            checkpoint_scan(step, x0, steps, 2)
    with pytest.raises(ValueError, match="snapshots"):
        checkpoint_scan(step, x0, 5, 0)
    with pytest.raises(TypeError, match="snapshots"):
        checkpoint_scan(step, x0, 5, 1.0)
    with pytest.raises(ValueError, match="step changed the state"):
        checkpoint_scan(lambda x: torch.cat([x, x]), x0, 5, 2)
    with pytest.raises(ValueError, match="step changed the state"):
        checkpoint_scan(lambda x: x.float(), x0, 5, 2)
    with pytest.raises(ValueError, match="step changed the state"):  # a later call, during the backward pass
        calls = counted(lambda x: step(x) if step_calls() < 6 else step(x)[:2])
        step_calls = lambda: calls.calls  # noqa: E731
        checkpoint_scan(calls, x0, 5, 2).sum().backward()
    with pytest.raises(TypeError, match="step must return a torch.Tensor"):
        checkpoint_scan(lambda x: x.tolist(), x0, 5, 2)
    with pytest.raises(TypeError, match="step must be a callable"):
        checkpoint_scan(3, x0, 5, 2)
    with pytest.raises(TypeError, match="x0"):
        checkpoint_scan(step, [1.0, 2.0, 3.0], 5, 2)
    with pytest.raises(TypeError, match="x0"):
        checkpoint_scan(step, torch.arange(3), 5, 2)
    with pytest.raises(TypeError, match=r"params\[1\]"):
        checkpoint_scan(step, x0, 5, 2, params=[W1, "W2"])
    with pytest.raises(ValueError, match="snapshots"):
        revolve_cost(10, 0)
    with pytest.raises(ValueError, match="steps"):
        revolve_cost(-1, 3)
    with pytest.raises(TypeError, match="steps"):
        revolve_schedule(3.0, 3)
    with pytest.raises(TypeError, match="theta"):
        bptt(lambda x, th: x, x0, W1, 3, lambda x, th: x.sum())
    with pytest.raises(ValueError, match="loss must return a real scalar"):
        bptt(lambda x, th: x, x0, (W1,), 3, lambda x, th: x)
    with pytest.raises(ValueError, match="h changed the state"):
        bptt(lambda x, th: x[:2], x0, (W1,), 3, lambda x, th: x.sum())
    with pytest.raises(ValueError, match="W1 and W2"):
        residual_perceptron(x0, W1, W2.T)
    with pytest.raises(ValueError, match="x must have shape"):
        residual_perceptron(torch.zeros(5, dtype=F64), W1, W2)
    with pytest.raises(ValueError, match="tau"):
        gradient_descent_perceptron(x0, W1, -0.1, torch.tanh)


def test_a_diverging_recurrence_is_reported_not_returned():
    W1, W2, x0 = weights(3, 4, "cpu")
    explode = lambda x: 1e30 * x * x + 1  # noqa: E731
    for requires_grad in (True, False):
        with pytest.raises(FloatingPointError, match="after 12 steps"):
            checkpoint_scan(explode, x0.detach().requires_grad_(requires_grad), 12, 3)
    with pytest.raises(FloatingPointError, match="bptt"):
        bptt(lambda x, th: th[0] * explode(x), x0, (W1[0, 0],), 12, lambda x, th: x.sum())


# ------------------------------------------------------------------ the optimum, by an exhaustive search


def exhaustive_least_advances(steps, snapshots):
    """The least advances over *all* schedules, by a 0-1 breadth-first search; assumes nothing about their shape.

    A state of the search is (stored indices, current index or None, next step to reverse). The moves: store the
    current state (free, if a slot is left), restore or free a snapshot (free), advance one step (cost 1), and
    reverse step k when the current state is x_k (free; the current state is then lost). x_0 must be stored to be
    found again, so it is one of the snapshots, as in revolve_cost's convention.
    """
    if steps == 0:
        return 0
    start = (frozenset(), 0, steps - 1)
    dist, queue = {start: 0}, collections.deque([(0, start)])
    while queue:
        d, state = queue.popleft()
        if dist[state] < d:
            continue
        stored, current, k = state
        if k < 0:
            return d
        moves = []
        if current is not None:
            if current == k:  # reverse step k; snapshots above k can never serve again
                moves.append((0, (frozenset(i for i in stored if i < k), None, k - 1)))
            if current < k:
                moves.append((1, (stored, current + 1, k)))
            if current not in stored and len(stored) < snapshots:
                moves.append((0, (stored | {current}, current, k)))
        for i in stored:
            moves.append((0, (stored, i, k)))
            moves.append((0, (stored - {i}, current, k)))
        for cost, new in moves:
            if d + cost < dist.get(new, math.inf):
                dist[new] = d + cost
                (queue.appendleft if cost == 0 else queue.append)((d + cost, new))
    raise AssertionError("no schedule found")


def test_revolve_cost_is_the_least_over_all_schedules_by_exhaustive_search():
    # independent of the "first split" structure that brute_force_cost and the implementation share
    for snapshots, longest in ((1, 10), (2, 12), (3, 12), (4, 9)):
        for steps in range(0, longest + 1):
            assert revolve_cost(steps, snapshots) == exhaustive_least_advances(steps, snapshots), (steps, snapshots)


def test_revolve_cost_for_zero_steps_is_zero_and_for_one_or_more_with_enough_snapshots_l_minus_one():
    assert all(revolve_cost(0, s) == 0 for s in range(1, 6))  # not l - 1 = -1
    assert all(revolve_cost(l, s) == l - 1 for l in range(1, 30) for s in range(max(1, l - 1), l + 3))


def test_revolve_schedule_with_thousands_of_snapshots_builds_without_recursion():
    schedule = revolve_schedule(5000, 2000)
    advances, reversed_steps = simulate(schedule, 5000, 2000)
    assert advances == revolve_cost(5000, 2000) and reversed_steps == list(range(4999, -1, -1))
    advances, _ = simulate(revolve_schedule(20000, 3000), 20000, 3000)
    assert advances == revolve_cost(20000, 3000)


def test_checkpoint_scan_with_more_than_a_thousand_snapshots():
    W1, W2, x0 = weights(2, 2, "cpu", seed=5)
    step = lambda x: x + 0.01 * torch.tanh(x @ W1.T) @ W2  # noqa: E731
    mine = torch.autograd.grad(checkpoint_scan(step, x0, 1500, 1200).sum(), (x0, W1))
    theirs = torch.autograd.grad(plain_loop(step, x0, 1500).sum(), (x0, W1))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ what the step may and may not do


def test_a_parameter_listed_twice_gets_its_gradient_once(device):
    W1, W2, x0 = weights(3, 4, device, seed=6)
    step = lambda x: residual_perceptron(x, W1, W2)  # noqa: E731
    mine = torch.autograd.grad(checkpoint_scan(step, x0, 7, 2, params=[W1, W2, W1]).sum(), (x0, W1, W2))
    theirs = torch.autograd.grad(plain_loop(step, x0, 7).sum(), (x0, W1, W2))
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps, snapshots", [(1, 1), (12, 1), (25, 3), (25, 30)])
def test_a_dropout_step_draws_the_same_numbers_again_and_gets_the_gradients_of_the_plain_loop(device, steps, snapshots):
    W1, W2, x0 = weights(6, 8, device, seed=7)
    drop = torch.nn.Dropout(0.5)
    step = lambda x: drop(residual_perceptron(x, W1, W2))  # noqa: E731
    torch.manual_seed(11)
    stats = {}
    out = checkpoint_scan(step, x0, steps, snapshots, stats=stats)
    mine = torch.autograd.grad((out**2).sum(), (x0, W1, W2))
    after_mine = torch.get_rng_state()
    torch.manual_seed(11)
    reference = plain_loop(step, x0, steps)
    theirs = torch.autograd.grad((reference**2).sum(), (x0, W1, W2))
    assert stats["rng_saved"]
    torch.testing.assert_close(out, reference, rtol=1e-14, atol=1e-14)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(after_mine, torch.get_rng_state())  # the backward pass leaves the generator as it found it


def test_without_preserve_rng_state_a_dropout_step_is_recomputed_with_other_numbers():
    W1, W2, x0 = weights(6, 8, "cpu", seed=7)
    drop = torch.nn.Dropout(0.5)
    step = lambda x: drop(residual_perceptron(x, W1, W2))  # noqa: E731
    torch.manual_seed(11)
    mine = torch.autograd.grad(checkpoint_scan(step, x0, 25, 3, preserve_rng_state=False).sum(), W1)[0]
    torch.manual_seed(11)
    theirs = torch.autograd.grad(plain_loop(step, x0, 25).sum(), W1)[0]
    assert (mine - theirs).abs().max() > 1e-3  # why the default saves the generators' state


def test_a_deterministic_step_saves_no_generator_state():
    W1, W2, x0 = weights(3, 4, "cpu")
    stats = {}
    checkpoint_scan(lambda x: residual_perceptron(x, W1, W2), x0, 10, 3, stats=stats).sum().backward()
    assert not stats["rng_saved"]


def test_a_tensor_missing_from_params_is_an_error_not_a_silently_missing_gradient():
    W1, W2, x0 = weights(3, 4, "cpu")
    with pytest.raises(ValueError, match=r"not in params \(shapes \(4, 3\)\)"):  # W2, read on the first call
        checkpoint_scan(lambda x: residual_perceptron(x, W1, W2), x0, 6, 2, params=[W1])
    with pytest.raises(ValueError, match="params"):  # x0 itself, read by the step (input injection)
        checkpoint_scan(lambda x: residual_perceptron(x, W1, W2) + x0, x0, 6, 2, params=[W1, W2])


def test_a_tensor_read_only_on_later_calls_is_an_error_in_the_backward_pass():
    gen = torch.Generator().manual_seed(8)
    Ws = [torch.randn(3, 3, dtype=F64, generator=gen).requires_grad_() for _ in range(4)]
    x0 = torch.randn(3, dtype=F64, generator=gen)
    calls = [0]

    def step(x):  # a different matrix on each call: the first call sees Ws[0] only
        W = Ws[calls[0] % 4]
        calls[0] += 1
        return torch.tanh(W @ x)

    with pytest.raises(ValueError, match="not in params"):  # seen on the taped calls, one per step
        checkpoint_scan(step, x0, 4, 2).sum().backward()
    assert all(W.grad is None for W in Ws)
    calls[0] = 0
    shared = torch.ones((), dtype=F64, requires_grad=True)

    def step_reading_more_later(x):  # the forward pass's calls read only W, the recomputed ones shared too
        calls[0] += 1
        return torch.tanh(Ws[0] @ x) * (shared if calls[0] > 4 else 1.0)

    out = checkpoint_scan(step_reading_more_later, x0, 4, 2)
    with pytest.raises(ValueError, match="not in params"):  # raised in the backward pass, with its type
        out.sum().backward()


def test_double_backward_is_a_clear_error():
    W1, W2, x0 = weights(3, 4, "cpu")
    out = checkpoint_scan(lambda x: residual_perceptron(x, W1, W2), x0, 5, 2)
    with pytest.raises(RuntimeError, match="first-order only"):
        torch.autograd.grad((out**2).sum(), x0, create_graph=True)


def test_an_in_place_step_is_an_error_and_leaves_the_callers_x0_intact():
    x = torch.ones(3, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="step modified its input state in place"):
        checkpoint_scan(lambda v: v.mul_(2), x, 4, 2)
    assert torch.equal(x.detach(), torch.ones(3, dtype=F64))
    W = torch.ones(3, dtype=F64, requires_grad=True)
    y = torch.ones(3, dtype=F64)  # x0 needs no gradient, W does
    with pytest.raises(ValueError, match="step modified its input state in place"):
        checkpoint_scan(lambda v: v.add_(W), y, 4, 2)
    assert torch.equal(y, torch.ones(3, dtype=F64))
    calls = counted(lambda v: v + W if calls.calls < 3 else v.mul_(2))  # in place on a later call only
    with pytest.raises(ValueError, match="step modified its input state in place"):
        checkpoint_scan(calls, y, 6, 2)


def test_params_given_as_a_dict_is_a_type_error():
    W1, W2, x0 = weights(3, 4, "cpu")
    with pytest.raises(TypeError, match="params must be a sequence"):
        checkpoint_scan(lambda x: residual_perceptron(x, W1, W2), x0, 5, 2, params={"W1": W1, "W2": W2})
    with pytest.raises(TypeError, match="preserve_rng_state"):
        checkpoint_scan(lambda x: residual_perceptron(x, W1, W2), x0, 5, 2, preserve_rng_state=None)
