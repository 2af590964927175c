"""Reversible leapfrog (ad_lib.reversible) against a closed form, stored back-propagation through
torch.autograd, torch.autograd.gradcheck, an independent count of the bytes saved for backward, and
the rounding model of floating point."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ad_lib.reversible import (ReversibleLeapfrog, leapfrog, leapfrog_inverse, leapfrog_step, reconstruction_error,
                               reversible_leapfrog, saved_tensor_bytes)

F64 = torch.float64


def weights(n, m, device, dtype=F64, seed=0, requires_grad=True):
    generator = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(n, m, dtype=F64, generator=generator) / math.sqrt(m)).to(device, dtype)
    w2 = (torch.randn(m, n, dtype=F64, generator=generator) / math.sqrt(n)).to(device, dtype)
    return w1.requires_grad_(requires_grad), w2.requires_grad_(requires_grad)


def state(n, m, device, dtype=F64, seed=1, batch=()):
    generator = torch.Generator().manual_seed(seed)
    r = torch.randn(*batch, n, dtype=F64, generator=generator).to(device, dtype).requires_grad_(True)
    s = torch.randn(*batch, m, dtype=F64, generator=generator).to(device, dtype).requires_grad_(True)
    return r, s


def fields(w1, w2, bias=None):
    """A nonlinear, time-dependent field: r' = tanh(W1 s) + sin(t) b, s' = -tanh(W2 r)."""
    def F(t, s):
        out = torch.tanh(s @ w1.T)
        return out if bias is None else out + torch.sin(t) * bias

    def G(t, r):
        return -torch.tanh(r @ w2.T) * torch.cos(t)

    return F, G


class Field(torch.nn.Module):
    """A field as an nn.Module: forward(t, x) = tanh(Linear(x)) * (1 + t)."""

    def __init__(self, n_in, n_out, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(n_in, n_out, dtype=F64)

    def forward(self, t, x):
        return torch.tanh(self.linear(x)) * (1 + t)


def loss(r, s):
    return (r**2).sum() + (torch.sin(s) * torch.arange(1, s.shape[-1] + 1, dtype=s.dtype, device=s.device)).sum()


# ------------------------------------------------------------------ the step and its inverse


def test_leapfrog_on_the_harmonic_oscillator_is_a_power_of_the_closed_form_matrix(device):
    # F(s) = s, G(r) = -r: one step is the linear map [[1, tau], [-tau, 1 - tau^2]] (determinant 1)
    tau, steps = 0.1, 37
    step_matrix = torch.tensor([[1.0, tau], [-tau, 1 - tau**2]], dtype=F64, device=device)
    assert torch.linalg.det(step_matrix).item() == pytest.approx(1.0, abs=1e-15)
    r0, s0 = torch.tensor([0.3], dtype=F64, device=device), torch.tensor([-1.2], dtype=F64, device=device)
    r, s = leapfrog(lambda t, s: s, lambda t, r: -r, r0, s0, tau, steps)
    expected = torch.linalg.matrix_power(step_matrix, steps) @ torch.cat([r0, s0])
    torch.testing.assert_close(torch.cat([r, s]), expected, rtol=1e-13, atol=1e-13)
    # and it follows the exact solution r(t) = 0.3 cos t - 1.2 sin t (to first order in tau: symplectic Euler)
    exact = torch.tensor([0.3 * math.cos(steps * tau) - 1.2 * math.sin(steps * tau)], dtype=F64)
    assert abs(r.item() - exact.item()) < 0.05


def test_one_step_follows_the_two_half_updates_of_the_notes(device):
    w1, w2 = weights(3, 2, device, requires_grad=False)
    F, G = fields(w1, w2)
    r, s = state(3, 2, device)
    tau, t = 0.05, 0.7
    r1, s1 = leapfrog_step(F, G, r, s, tau, t)
    r1_by_hand = r + tau * F(torch.tensor(t, dtype=F64), s)
    s1_by_hand = s + tau * G(torch.tensor(t + tau / 2, dtype=F64), r1_by_hand)
    torch.testing.assert_close(r1, r1_by_hand, rtol=0, atol=0)
    torch.testing.assert_close(s1, s1_by_hand, rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(tau=st.floats(1e-3, 0.5), t=st.floats(-5, 5), seed=st.integers(0, 10_000))
def test_the_inverse_undoes_a_step_up_to_rounding(tau, t, seed):
    w1, w2 = weights(4, 3, "cpu", seed=seed, requires_grad=False)
    F, G = fields(w1, w2, bias=torch.ones(4, dtype=F64))
    r, s = state(4, 3, "cpu", seed=seed + 1)
    r, s = r.detach(), s.detach()
    back_r, back_s = leapfrog_inverse(F, G, *leapfrog_step(F, G, r, s, tau, t), tau, t)
    torch.testing.assert_close(back_r, r, rtol=0, atol=1e-14)
    torch.testing.assert_close(back_s, s, rtol=0, atol=1e-14)


def test_the_fields_are_called_at_the_times_of_the_scheme():
    calls = []
    F = lambda t, s: (calls.append(("F", t.item())), s)[1]  # noqa: E731
    G = lambda t, r: (calls.append(("G", t.item())), -r)[1]  # noqa: E731
    r0, s0 = torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64)
    leapfrog(F, G, r0, s0, 0.25, 3, t0=1.0)
    assert calls == [("F", 1.0), ("G", 1.125), ("F", 1.25), ("G", 1.375), ("F", 1.5), ("G", 1.625)]


def test_r_and_s_may_have_different_shapes_and_a_batch_dimension(device):
    w1, w2 = weights(5, 2, device)
    F, G = fields(w1, w2)
    r0, s0 = state(5, 2, device, batch=(3,))
    r, s = reversible_leapfrog(F, G, r0, s0, 0.1, 6, params=[w1, w2])
    assert r.shape == (3, 5) and s.shape == (3, 2)
    reference = leapfrog(F, G, r0, s0, 0.1, 6)
    torch.testing.assert_close((r, s), reference, rtol=0, atol=0)  # the same numbers as the plain loop


# ------------------------------------------------------------------ gradients: reversible against stored


@pytest.mark.parametrize("steps", [1, 5, 60])
def test_gradients_equal_stored_back_propagation_in_float64(device, steps):
    w1, w2 = weights(4, 3, device)
    bias = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(5)).to(device).requires_grad_(True)
    F, G = fields(w1, w2, bias)
    r0, s0 = state(4, 3, device, batch=(2,))
    inputs = (r0, s0, w1, w2, bias)
    stored = torch.autograd.grad(loss(*leapfrog(F, G, r0, s0, 0.1, steps, t0=0.3)), inputs)
    reversible = torch.autograd.grad(loss(*reversible_leapfrog(F, G, r0, s0, 0.1, steps, t0=0.3,
                                                               params=[w1, w2, bias])), inputs)
    for mine, theirs in zip(reversible, stored):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_nn_module_fields_get_their_parameters_gradients_by_default(device):
    F, G = Field(3, 4, seed=0).to(device), Field(4, 3, seed=1).to(device)
    r0, s0 = state(4, 3, device)
    parameters = [*F.parameters(), *G.parameters()]
    stored = torch.autograd.grad(loss(*leapfrog(F, G, r0, s0, 0.2, 20)), [r0, s0, *parameters])
    reversible = torch.autograd.grad(loss(*reversible_leapfrog(F, G, r0, s0, 0.2, 20)), [r0, s0, *parameters])
    for mine, theirs in zip(reversible, stored):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)
    # .backward() fills .grad as usual
    loss(*reversible_leapfrog(F, G, r0.detach(), s0.detach(), 0.2, 20)).backward()
    torch.testing.assert_close(F.linear.weight.grad, stored[2], rtol=1e-10, atol=1e-10)


def test_a_closed_over_tensor_that_is_not_a_leaf_gets_its_gradient_through_params():
    v = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    w1, w2 = weights(3, 3, "cpu")
    r0, s0 = state(3, 3, "cpu")

    def gradients(reversible):
        bias = 2 * v  # built from v: the fields close over a non-leaf tensor
        F, G = fields(w1, w2, bias)
        r, s = (reversible_leapfrog(F, G, r0, s0, 0.1, 15, params=[w1, w2, bias]) if reversible
                else leapfrog(F, G, r0, s0, 0.1, 15))
        return torch.autograd.grad(loss(r, s), (v, w1))

    stored, reversible = gradients(False), gradients(True)
    for mine, theirs in zip(reversible, stored):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_a_parameter_listed_twice_gets_its_gradient_once():
    w1, w2 = weights(3, 2, "cpu")
    F, G = fields(w1, w2)
    r0, s0 = state(3, 2, "cpu")
    stored = torch.autograd.grad(loss(*leapfrog(F, G, r0, s0, 0.1, 5)), (w1, w2))
    twice = torch.autograd.grad(loss(*reversible_leapfrog(F, G, r0, s0, 0.1, 5, params=[w1, w2, w1])), (w1, w2))
    torch.testing.assert_close(twice, stored, rtol=1e-10, atol=1e-10)


def test_gradcheck_in_float64(device):
    w1, w2 = weights(3, 2, device)
    r0, s0 = state(3, 2, device)

    def integrate(r0, s0, w1, w2):
        F, G = fields(w1, w2)
        return reversible_leapfrog(F, G, r0, s0, 0.3, 4, t0=0.1, params=[w1, w2])

    assert torch.autograd.gradcheck(integrate, (r0, s0, w1, w2), eps=1e-6, atol=1e-8)


def test_inputs_that_need_no_gradient_get_none():
    w1, w2 = weights(3, 2, "cpu")
    F, G = fields(w1, w2)
    r0, s0 = state(3, 2, "cpu")
    r, s = reversible_leapfrog(F, G, r0.detach(), s0, 0.1, 5, params=[w1, w2])
    grads = torch.autograd.grad(loss(r, s), (s0, w2))
    stored = torch.autograd.grad(loss(*leapfrog(F, G, r0.detach(), s0, 0.1, 5)), (s0, w2))
    torch.testing.assert_close(grads, stored, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        r, s = reversible_leapfrog(F, G, r0, s0, 0.1, 5, params=[w1, w2])
    assert not r.requires_grad and not s.requires_grad


def test_zero_steps_is_the_identity_with_identity_gradients():
    w1, w2 = weights(3, 2, "cpu")
    F, G = fields(w1, w2)
    r0, s0 = state(3, 2, "cpu")
    r, s = reversible_leapfrog(F, G, r0, s0, 0.1, 0, params=[w1, w2])
    torch.testing.assert_close((r, s), (r0, s0), rtol=0, atol=0)
    g_r, g_s = torch.autograd.grad(r.sum() + 2 * s.sum(), (r0, s0))
    torch.testing.assert_close(g_r, torch.ones_like(r0))
    torch.testing.assert_close(g_s, 2 * torch.ones_like(s0))


def test_the_backward_pass_evaluates_each_field_once_a_step():
    counts = {"F": 0, "G": 0}
    w1, w2 = weights(3, 2, "cpu")

    def F(t, s):
        counts["F"] += 1
        return torch.tanh(s @ w1.T)

    def G(t, r):
        counts["G"] += 1
        return -torch.tanh(r @ w2.T)

    r0, s0 = state(3, 2, "cpu")
    r, s = reversible_leapfrog(F, G, r0, s0, 0.1, 25, params=[w1, w2])
    after_forward = dict(counts)
    assert after_forward == {"F": 25 + 1, "G": 25 + 1}  # the steps, and one check of the parameters
    loss(r, s).backward()
    assert counts == {"F": 2 * 25 + 1, "G": 2 * 25 + 1}  # one evaluation (with its VJP) a step, backward


# ------------------------------------------------------------------ memory


def bytes_saved_for_backward(fn):
    """An independent count: the bytes of the distinct storages that autograd saves while fn runs."""
    seen = {}

    def pack(tensor):
        seen[tensor.untyped_storage().data_ptr()] = (tensor.untyped_storage().nbytes(), tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, sum(nbytes for nbytes, _ in seen.values())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_memory_is_flat_in_the_number_of_steps_and_linear_when_stored(device, dtype):
    w1, w2 = weights(16, 16, device, dtype=dtype)
    F, G = fields(w1, w2)
    r0, s0 = state(16, 16, device, dtype=dtype, batch=(8,))
    state_bytes = r0.numel() * r0.element_size() + s0.numel() * s0.element_size()
    weight_bytes = w1.numel() * w1.element_size() + w2.numel() * w2.element_size()
    reversible, stored = {}, {}
    for steps in (1, 10, 100):
        _, reversible[steps] = bytes_saved_for_backward(
            lambda: reversible_leapfrog(F, G, r0, s0, 0.1, steps, params=[w1, w2]))
        _, stored[steps] = bytes_saved_for_backward(lambda: leapfrog(F, G, r0, s0, 0.1, steps))
    # the reversible Function saves the final state and the parameters, whatever the number of steps
    assert reversible[1] == reversible[10] == reversible[100] == state_bytes + weight_bytes
    # stored back-propagation keeps per step a few states' worth (inputs of the products, tanh outputs)
    per_step = (stored[100] - stored[10]) / 90
    assert per_step >= 2 * state_bytes
    assert stored[100] - stored[10] == pytest.approx(10 * (stored[10] - stored[1]), rel=0.02)
    # the module's own counter agrees with the independent one
    assert saved_tensor_bytes(leapfrog, F, G, r0, s0, 0.1, 10)[1] == stored[10]
    assert saved_tensor_bytes(reversible_leapfrog, F, G, r0, s0, 0.1, 10, params=[w1, w2])[1] == reversible[10]


# ------------------------------------------------------------------ the reconstruction error


def test_the_walk_back_is_exact_only_up_to_rounding_float32_against_float64(device):
    w1, w2 = weights(8, 8, device, requires_grad=False)
    r0, s0 = state(8, 8, device)
    errors = {}
    for dtype in (torch.float32, F64):
        F, G = fields(w1.to(dtype), w2.to(dtype))
        errors[dtype] = [reconstruction_error(F, G, r0.detach().to(dtype), s0.detach().to(dtype), 0.1, steps)
                         for steps in (10, 1000)]
    e32, e64 = errors[torch.float32], errors[F64]
    # both nonzero: (s + tau G) - tau G rounds; float64's error is float32's times about 2^-29
    assert all(e > 0 for e in e32 + e64)
    assert all(b < 1e-6 * a for a, b in zip(e32, e64))
    # the errors grow with the number of steps, and stay a modest multiple of the unit roundoff
    assert e32[1] > e32[0] and e64[1] > e64[0]
    for dtype, e in errors.items():
        unit = torch.finfo(dtype).eps
        assert e[1] < 1e5 * unit


def test_a_single_half_step_loses_the_last_bits_of_s():
    # s = 0.1 in float32, moved by tau G = 3 and back: the sum is rounded to 3's ulp (2.4e-7)
    s = torch.tensor(0.1, dtype=torch.float32)
    push = torch.tensor(3.0, dtype=torch.float32)
    back = (s + push) - push
    assert back != s and abs((back - s).item()) <= torch.finfo(torch.float32).eps * 4 / 2
    # in float64 the same numbers go back to within 3's ulp in float64
    back64 = (s.double() + 3.0) - 3.0
    assert abs(back64 - s.double()).item() <= torch.finfo(F64).eps * 4 / 2


def test_in_float32_the_reconstruction_costs_gradient_accuracy_but_only_rounding():
    # the float64 gradient is the truth; stored float32 back-propagation is off by a few unit roundoffs,
    # reversible float32 by more (the reconstructed states carry the walk-back error), still small
    grads = {}
    for dtype in (torch.float32, F64):
        w1, w2 = weights(6, 6, "cpu", dtype=dtype)
        F, G = fields(w1, w2)
        r0, s0 = state(6, 6, "cpu", dtype=dtype)
        inputs = (r0, s0, w1, w2)
        grads[dtype, "stored"] = torch.autograd.grad(loss(*leapfrog(F, G, r0, s0, 0.1, 200)), inputs)
        grads[dtype, "reversible"] = torch.autograd.grad(
            loss(*reversible_leapfrog(F, G, r0, s0, 0.1, 200, params=[w1, w2])), inputs)
    truth = grads[F64, "stored"]

    def relative_error(kind):
        return max(((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(grads[torch.float32, kind], truth))

    assert relative_error("stored") < 1e-5
    assert relative_error("reversible") < 1e-4
    for a, b in zip(grads[F64, "reversible"], truth):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ bad input


def test_bad_inputs_are_errors_that_say_what_is_expected():
    w1, w2 = weights(3, 2, "cpu", requires_grad=False)
    F, G = fields(w1, w2)
    r0, s0 = state(3, 2, "cpu")
    with pytest.raises(TypeError, match="F must be a callable"):
        reversible_leapfrog("F", G, r0, s0, 0.1, 3)
    with pytest.raises(TypeError, match="G must be a callable"):
        leapfrog_step(F, None, r0, s0, 0.1)
    with pytest.raises(TypeError, match="r0 must be a torch.Tensor"):
        leapfrog(F, G, [1.0, 2.0, 3.0], s0, 0.1, 3)
    with pytest.raises(TypeError, match="s0 must be a floating-point tensor"):
        reversible_leapfrog(F, G, r0, torch.ones(2, dtype=torch.int64), 0.1, 3)
    with pytest.raises(ValueError, match="r0 and s0 must share a dtype"):
        reversible_leapfrog(F, G, r0, s0.float(), 0.1, 3)
    with pytest.raises(ValueError, match="r must hold at least one number"):
        leapfrog_inverse(F, G, torch.ones(0, dtype=F64), s0, 0.1)
    for tau in (0.0, -0.1):
        with pytest.raises(ValueError, match="tau must be positive"):
            reversible_leapfrog(F, G, r0, s0, tau, 3)
    for tau in (float("nan"), True, "0.1"):
        with pytest.raises(TypeError, match="tau must be a finite real number"):
            leapfrog(F, G, r0, s0, tau, 3)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        reversible_leapfrog(F, G, r0, s0, 0.1, -1)
    for steps in (2.5, True, "3"):  # the wrong type: a TypeError, as in ad_lib.checkpointing
        with pytest.raises(TypeError, match="steps must be a non-negative integer"):
            reversible_leapfrog(F, G, r0, s0, 0.1, steps)
    with pytest.raises(TypeError, match="t0 must be a finite real number"):
        leapfrog(F, G, r0, s0, 0.1, 3, t0=float("inf"))
    with pytest.raises(ValueError, match="F must return a tensor of r's shape"):
        reversible_leapfrog(lambda t, s: torch.cat([s, s]), G, r0, s0, 0.1, 3)  # changes the state's shape
    with pytest.raises(ValueError, match="G must return a tensor of s's shape"):
        leapfrog(F, lambda t, r: r, r0, s0, 0.1, 3)
    with pytest.raises(TypeError, match="must return a tensor"):
        leapfrog_step(lambda t, s: 1.0, G, r0, s0, 0.1)
    with pytest.raises(TypeError, match="params must be a list or tuple of tensors"):
        reversible_leapfrog(F, G, r0, s0, 0.1, 3, params=w1)
    with pytest.raises(TypeError, match=r"params\[1\] must be a torch.Tensor"):
        reversible_leapfrog(F, G, r0, s0, 0.1, 3, params=[w1, 2.0])


def test_a_parameter_missing_from_params_is_an_error_not_a_silently_missing_gradient():
    w1, w2 = weights(3, 2, "cpu")
    F, G = fields(w1, w2)
    r0, s0 = state(3, 2, "cpu")
    with pytest.raises(ValueError, match=r"G depends on tensors that require grad but are not in params \(shapes \(2, 3\)\)"):
        reversible_leapfrog(F, G, r0, s0, 0.1, 3, params=[w1])
    with pytest.raises(ValueError, match="F depends on tensors"):
        reversible_leapfrog(F, G, r0, s0, 0.1, 3)  # plain closures: nothing found by default


def test_a_diverging_integration_is_reported_not_returned_as_inf():
    r0, s0 = torch.ones(2, dtype=F64), torch.ones(2, dtype=F64)
    # r' = s, s' = r grows like exp(t): 2000 steps of tau = 1 overflow float64
    with pytest.raises(FloatingPointError, match="non-finite state within 2000 steps"):
        reversible_leapfrog(lambda t, s: s, lambda t, r: r, r0, s0, 1.0, 2000)
    with pytest.raises(FloatingPointError, match="non-finite"):
        reconstruction_error(lambda t, s: s, lambda t, r: r, r0, s0, 1.0, 2000)


def test_the_function_is_an_autograd_function():
    assert issubclass(ReversibleLeapfrog, torch.autograd.Function)


def test_the_backward_pass_is_first_order_only_and_says_so():
    w1, w2 = weights(3, 2, "cpu")
    F, G = fields(w1, w2)
    r0, s0 = state(3, 2, "cpu")
    r, s = reversible_leapfrog(F, G, r0, s0, 0.1, 4, params=[w1, w2])
    with pytest.raises(RuntimeError, match="first-order only"):
        torch.autograd.grad(loss(r, s), r0, create_graph=True)
